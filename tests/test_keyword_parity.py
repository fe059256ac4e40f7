"""Keywords the previous Header Service's templates wrote (lsst-dm/HeaderService 3.5.8, etc/<camera>/):
BUNIT, ROTCOORD and OBSERVER in the primary, TSTAND only where a test stand is configured, INHERIT
on every segment HDU, CCDTEMP on every sensor HDU (LSSTCam's from MTCamera.focal_plane_Ccd), each with
its provenance, and every header still fitsverify-clean."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from header.compose import ComposedHeader, ExposureInputs, compose_header
from header.keywords import ccd_of, reduce_keyword
from header.yamlheader import Card, cards_to_records
from procs.composer import collection_points, collection_request
from protocols.config import ConfigError, KeywordSource, load_instance, load_keyword_map
from tools.bench.scenarios import bench_scenario
from tools.bench.stages import composed_headers, play
from tools.demo import fitsverify
from tools.sim.night import Night, ccd_locations, focal_plane

CAMERAS = ("LATISS", "ComCam", "LSSTCam")
STRUCTURAL_EXTENSION = ["XTENSION", "BITPIX", "NAXIS", "PCOUNT", "GCOUNT"]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HS_TSTAND", "HS_ANNEX", "HS_STATE_DIR", "HS_DDS_DOMAIN", "HS_PORT_OFFSET"):
        monkeypatch.delenv(var, raising=False)


def records(cards: list[str]) -> dict[str, Card]:
    return {c.keyword: c for c in cards_to_records(cards)}


def first_header(instrument: str) -> ComposedHeader:
    return next(iter(composed_headers(instrument, 1)))


def same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("instrument", CAMERAS)
def test_primary_carries_bunit_rotcoord_observer_and_no_tstand_at_the_summit(instrument: str, tmp_path: Path) -> None:
    h = first_header(instrument)
    primary = records(h.hdus[0])
    assert same(primary["BUNIT"].value, "adu")
    assert same(primary["ROTCOORD"].value, "sky")
    assert same(primary["OBSERVER"].value, "LSST")
    assert "TSTAND" not in primary
    keys = [c.keyword for c in cards_to_records(h.hdus[0])]
    # where the previous templates had them: OBSERVER with the site block, ROTCOORD after ROTPA
    assert keys.index("ROTCOORD") == keys.index("ROTPA") + 1
    assert keys.index("BUNIT") == keys.index("IMGTYPE") + 1
    assert keys.index("OBSERVER") == keys.index("OBSERVAT") + 1
    # none of them on the sensor HDUs
    for cards in h.hdus[1:]:
        assert not {"BUNIT", "ROTCOORD", "OBSERVER", "TSTAND"} & set(records(cards))
    prov = h.provenance["template_cards"]["primary"]
    assert prov["BUNIT"] == prov["ROTCOORD"] == prov["OBSERVER"] == "static (template)"
    assert prov["TSTAND"] == "computed tstand (instance tstand not set: left out)"
    path = tmp_path / "h.fits"
    path.write_bytes(h.file_bytes())
    errors, warnings, out = fitsverify(path)
    assert (errors, warnings) == (0, 0), out[-3000:]


@pytest.mark.parametrize("instrument", ["LATISS", "LSSTCam"])
def test_tstand_written_where_a_test_stand_is_configured(instrument: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HS_TSTAND", "BOT")
    h = first_header(instrument)
    primary = records(h.hdus[0])
    assert same(primary["TSTAND"].value, "BOT")
    keys = [c.keyword for c in cards_to_records(h.hdus[0])]
    assert keys.index("TSTAND") == keys.index("MAXINDEX") + 1
    assert h.provenance["template_cards"]["primary"]["TSTAND"] == "computed tstand (instance tstand = 'BOT')"
    path = tmp_path / "h.fits"
    path.write_bytes(h.file_bytes())
    assert fitsverify(path)[:2] == (0, 0)


def test_tstand_from_the_instance_file(tmp_path: Path) -> None:
    src = load_instance("LATISS").folder
    for f in src.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    (tmp_path / "instance.yaml").write_text((src / "instance.yaml").read_text() + "tstand: AuxTel-test\n")
    assert load_instance(tmp_path / "instance.yaml").tstand == "AuxTel-test"
    assert load_instance("LATISS").tstand is None


@pytest.mark.parametrize("bad", ["Caf\u00e9", "x" * 69, "tab\there"])
def test_bad_tstand_is_a_configuration_error_naming_the_field(bad: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HS_TSTAND", bad)
    with pytest.raises(ConfigError, match="tstand"):
        load_instance("LATISS")


def test_empty_hs_tstand_means_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HS_TSTAND", "")
    assert load_instance("ComCam").tstand is None
    assert "TSTAND" not in records(first_header("ComCam").hdus[0])


@pytest.mark.parametrize("instrument", ["LATISS", "ComCam"])
def test_inherit_on_every_segment_hdu_right_after_the_structural_cards(instrument: str) -> None:
    h = first_header(instrument)
    segments = [cards for name, cards in zip(h.hdu_names, h.hdus) if "/" in name]
    assert len(segments) == 16 * (1 if instrument == "LATISS" else 9)
    for cards in segments:
        recs = cards_to_records(cards)
        assert [c.keyword for c in recs[:6]] == [*STRUCTURAL_EXTENSION, "INHERIT"]
        assert same(recs[5].value, True)
    sensors = [cards for name, cards in zip(h.hdu_names[1:], h.hdus[1:]) if "/" not in name]
    assert sensors and all("INHERIT" not in records(c) for c in sensors)
    assert "INHERIT" not in records(h.hdus[0])
    assert h.provenance["template_cards"]["segment"]["INHERIT"] == "static (template)"


def test_inherit_on_lsstcam_segment_headers_served_on_request(tmp_path: Path) -> None:
    h = first_header("LSSTCam")
    assert h.context is not None
    served = h.context.sensor_header("R22_S11")
    assert len(served["segments"]) == 16
    for seg in served["segments"]:
        recs = cards_to_records(seg["cards"])
        assert [c.keyword for c in recs[:6]] == [*STRUCTURAL_EXTENSION, "INHERIT"] and recs[5].value is True
    assert "INHERIT" not in records(served["cards"])


def _start_sample(instrument: str, topic: str) -> dict[str, Any]:
    """The simulator's last sample of the camera's ``topic`` at the first exposure's startIntegration."""
    emissions = list(Night(bench_scenario(instrument, 1)).emissions())
    start = next(e for e in emissions if e.topic == "startIntegration").tai
    return [e for e in emissions if e.topic == topic and e.tai <= start][-1].fields


@pytest.mark.parametrize("instrument", CAMERAS)
def test_ccdtemp_on_every_sensor_hdu_from_focal_plane_ccd(instrument: str) -> None:
    h = first_header(instrument)
    fields = _start_sample(instrument, "focal_plane_Ccd")
    locations = fields["location"].split(":")
    temps = fields["temp"] if isinstance(fields["temp"], list) else [fields["temp"]]
    sensors = [(name, cards) for name, cards in zip(h.hdu_names[1:], h.hdus[1:]) if "/" not in name]
    assert [n for n, _ in sensors] == [s.location for s in focal_plane(instrument)]
    for name, cards in sensors:
        i = locations.index(name) if name in locations else locations.index(ccd_of(name) or name)
        got = records(cards)["CCDTEMP"].value
        assert same(got, temps[i]), (name, got, temps[i])
    prov = h.provenance["keywords"]["CCDTEMP"]
    assert prov["topic"] == f"{ {'LATISS': 'ATCamera', 'ComCam': 'CCCamera', 'LSSTCam': 'MTCamera'}[instrument]}.focal_plane_Ccd:0"
    assert "undefined" not in prov


def test_lsstcam_wavefront_halves_share_their_ccd_temperature() -> None:
    ccds = ccd_locations("LSSTCam")
    assert len(ccds) == 201 and "R00_SW" in ccds and "R00_SW0" not in ccds
    h = first_header("LSSTCam")
    temp = {n: records(c)["CCDTEMP"].value for n, c in zip(h.hdu_names[1:], h.hdus[1:])}
    assert len(temp) == 205
    for raft in ("R00", "R04", "R40", "R44"):
        assert temp[f"{raft}_SW0"] == temp[f"{raft}_SW1"]
        assert temp[f"{raft}_SG0"] != temp[f"{raft}_SW0"]


CCDTEMP = KeywordSource(keyword="CCDTEMP", component="MTCamera", topic="focal_plane_Ccd", field="temp", when="start",
                        kind="ccd_array")


def _sample(location: str, temps: list[float]) -> dict[str, Any]:
    data = {"location": location, "temp": temps + [0.0] * (201 - len(temps))}
    return {"data": data, "sndStamp": 1000.0}


def test_ccd_array_maps_halves_to_their_ccd_and_names_win() -> None:
    sensors = ["R00_SG0", "R00_SW0", "R00_SW1", "R22_S11"]
    r = reduce_keyword(CCDTEMP, _sample("R00_SG0:R00_SW:R22_S11", [-99.0, -98.0, -97.0]), 1000.5, sensors, 5.0)
    assert r.per_sensor == {"R00_SG0": -99.0, "R00_SW0": -98.0, "R00_SW1": -98.0, "R22_S11": -97.0}
    # a camera that lists the halves by name gives each its own value
    r = reduce_keyword(CCDTEMP, _sample("R00_SW1:R00_SW0", [-96.0, -95.0]), 1000.5, sensors, 5.0)
    assert r.per_sensor == {"R00_SW1": -96.0, "R00_SW0": -95.0}
    # a CCD the array does not list: no value for its sensors (the card says so), not a guess
    r = reduce_keyword(CCDTEMP, _sample("R22_S11", [-97.0]), 1000.5, sensors, 5.0)
    assert r.per_sensor == {"R22_S11": -97.0}
    assert ccd_of("R44_SW1") == "R44_SW" and ccd_of("R44_SG1") is None and ccd_of("SW0") is None


def test_ccd_array_bad_element_for_a_half_is_a_warning_not_a_value() -> None:
    r = reduce_keyword(CCDTEMP, _sample("R00_SW:R22_S11", [float("nan"), -97.0]), 1000.5, ["R00_SW0", "R00_SW1", "R22_S11"], 5.0)
    assert r.per_sensor == {"R22_S11": -97.0}
    assert len(r.warnings) == 2 and all("R00_SW" in w for w in r.warnings)


def test_ccdtemp_undefined_with_its_reason_when_focal_plane_ccd_is_missing() -> None:
    """No focal_plane_Ccd sample: CCDTEMP is written undefined on the sensor HDUs, with the reason."""
    cfg = load_instance("LSSTCam")
    kmap = load_keyword_map(cfg)
    for bench, stage, name, ev, tai in play("LSSTCam", 1):
        if stage != "end":
            continue
        points = collection_points(ev)
        reply = json.loads(json.dumps(bench.store.collect(collection_request(cfg, kmap, points))))
        for snaps in reply["snapshots"].values():
            snaps.pop("MTCamera.focal_plane_Ccd:0", None)
        h = compose_header(cfg, kmap, bench.templates, ExposureInputs(name, ev, points, reply["snapshots"], reply["windows"]), tai, 1)
        card = records(h.hdus[1])["CCDTEMP"]
        assert card.value is None and "undefined" in card.comment
        assert "undefined" in h.provenance["keywords"]["CCDTEMP"]
        break


def test_observer_operator_card_replaces_the_template_value_in_place() -> None:
    cfg = load_instance("LATISS")
    kmap = load_keyword_map(cfg)
    for bench, stage, name, ev, tai in play("LATISS", 1):
        if stage != "end":
            continue
        points = collection_points(ev)
        reply = json.loads(json.dumps(bench.store.collect(collection_request(cfg, kmap, points))))
        overrides = {"OBSERVER": {"value": "Jane Doe", "comment": "night lead"}}
        inputs = ExposureInputs(name, ev, points, reply["snapshots"], reply["windows"], [], overrides, 3)
        h = compose_header(cfg, kmap, bench.templates, inputs, tai, 1)
        recs = cards_to_records(h.hdus[0])
        observers = [c for c in recs if c.keyword == "OBSERVER"]
        assert observers == [Card("OBSERVER", "Jane Doe", "night lead")]
        keys = [c.keyword for c in recs]
        assert keys.index("OBSERVER") == keys.index("OBSERVAT") + 1
        assert h.provenance["template_cards"]["primary"]["OBSERVER"] == "operator card (overrides version 3)"
        assert h.provenance["overrides"] == {"version": 3, "cards": overrides}
        break
