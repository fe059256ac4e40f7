"""Bad input: every kind gets a clear, specific error (logged and counted), never a crash loop and
never a lost header, and every other exposure's header is untouched.

Three levels:

1. Pure (no sockets): keyword reduction, card formatting, configuration and scenario files, the
   cache's store and the cache server's handling of a listener's garbage.
2. One real LATISS deployment under supervisord (module fixture ``night``): a night of five
   exposures is played on its DDS domain at speed 20 with bad samples and bad camera events
   interleaved in bus time, while garbage multipart messages are sent to the cache ROUTER, the
   composer ROUTER and the publisher PULL socket. Every exposure's header is then checked against
   the simulator's plan (tests/oracle.py), except the keyword deliberately corrupted, which must be
   undefined with the reason in the ``<image>.prov.json`` side-car.
3. Annex faults on the same deployment (a second, later night): a disk that is full (the
   publisher's temporary file is a symlink to /dev/full: ENOSPC even for root) and a DAYOBS folder
   that cannot be created (a regular file in its place); the CSC stays ENABLED and warns, and the
   headers of exposures taken meanwhile are kept and written once the annex is usable again.

Tests that crash a process (the bad input is fatal today) run last, so that the rest of the module
sees the deployment undisturbed. Tests marked ``xfail(strict=True)`` assert the right behaviour of a
defect found here; the reason names the fix.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from header.astro import tai_iso
from header.cards import CardError, fits_type, format_card
from header.compose import CardTemplate, ExposureInputs, Templates, compose_header
from header.keywords import MAX_STRING, clean_scalar, reduce_keyword
from protocols import config as hs_config
from protocols.config import ConfigError, KeywordSource, load_instance, load_keyword_map, load_template
from protocols.envelope import Sender, decode
from tests.oracle import expected_value
from tools.sim.scenario import ScenarioError, load_scenario

HS_ENV = ("HS_DDS_DOMAIN", "HS_PORT_OFFSET", "HS_ANNEX", "HS_STATE_DIR")
LATISS_PROGRAMS = ("latiss-listener", "latiss-cache", "latiss-composer", "latiss-publisher", "latiss-csc")
NAN, INF = float("nan"), float("inf")


# ================================================================================================
# 1. Pure level
# ================================================================================================


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Configuration tests see the files alone (the deployment fixture exports HS_* overrides)."""
    for k in HS_ENV:
        monkeypatch.delenv(k, raising=False)


@pytest.fixture
def latiss(clean_env: None) -> tuple[Any, dict[str, KeywordSource]]:
    cfg = load_instance("LATISS")
    return cfg, load_keyword_map(cfg).by_keyword()


def sample(component: str, topic: str, data: dict[str, Any], t: float = 1000.0, index: int = 0) -> dict[str, Any]:
    return {"component": component, "topic": topic, "salIndex": index, "sndStamp": t, "data": data}


def reduce(src: KeywordSource, data: dict[str, Any], *, at: float = 1000.5, t: float = 1000.0,
           sensors: list[str] | None = None, max_age: float | None = 5.0, smp: dict[str, Any] | None = None):
    smp = smp if smp is not None else sample(src.component, src.topic, data, t, src.index)
    return reduce_keyword(src, smp, at, sensors or ["R00_S00"], max_age)


@pytest.mark.parametrize(
    ("value", "reason"),
    [(NAN, "value is NaN"), (INF, "value is infinite"), (-INF, "value is infinite")],
    ids=["nan", "plus_inf", "minus_inf"],
)
def test_reduce_non_finite_number(latiss, value: float, reason: str) -> None:
    _, km = latiss
    r = reduce(km["HUMIDITY"], {"relativeHumidityItem": value})
    assert not r.defined and r.value is None
    assert r.reason == reason
    assert r.provenance() == {"topic": "ESS.relativeHumidity:301", "time": 1000.0, "undefined": reason}


def test_reduce_string_where_number_expected(latiss) -> None:
    _, km = latiss
    r = reduce(km["HUMIDITY"], {"relativeHumidityItem": "wet"})
    assert not r.defined
    assert "expected a number" in r.reason and "str" in r.reason


def test_reduce_non_ascii_string(latiss) -> None:
    _, km = latiss
    r = reduce(km["OBJECT"], {"targetName": "Étoile polaire"})
    assert r.reason == "string holds non-ASCII or control characters"


def test_reduce_control_character(latiss) -> None:
    _, km = latiss
    r = reduce(km["OBJECT"], {"targetName": "HD 164461\x07\n"})
    assert r.reason == "string holds non-ASCII or control characters"


def test_reduce_oversize_string(latiss) -> None:
    _, km = latiss
    assert MAX_STRING == 544
    r = reduce(km["SCHNOTE"], {"note": "x" * 600})
    assert r.reason == "string of 600 characters is longer than 544"
    assert reduce(km["SCHNOTE"], {"note": "x" * 544}).value == "x" * 544  # the limit itself is fine


def test_reduce_missing_field(latiss) -> None:
    _, km = latiss
    r = reduce(km["WINDSPD"], {"direction": 12.0})
    assert r.reason == "sample of ESS.airFlow has no field speed"


def test_reduce_enum_value_without_name(latiss) -> None:
    _, km = latiss
    src = km["VIGNETTE"]
    r = reduce_keyword(src, sample(src.component, src.topic, {"vignetted": 7}), 1000.5, ["R00_S00"], None, window=[])
    assert r.reason == "enum value 7 has no name"
    r = reduce_keyword(src, sample(src.component, src.topic, {"vignetted": 2}), 1000.5, ["R00_S00"], None, window=[])
    assert r.value == "PARTIALLY"


def test_reduce_keyed_array_key_missing(latiss) -> None:
    _, km = latiss
    r = reduce(km["GROUPID"], {"additionalKeys": "imageType:reason", "additionalValues": "OBJECT:science"})
    assert r.reason == "key groupId not in additionalKeys"


def test_reduce_keyed_array_values_shorter_than_keys(latiss) -> None:
    _, km = latiss
    r = reduce(km["PROGRAM"], {"additionalKeys": "groupId:imageType:program", "additionalValues": "g1:OBJECT"})
    assert r.reason == "additionalValues has no entry for program"
    assert reduce(km["IMGTYPE"], {"additionalKeys": "groupId:imageType:program",
                                  "additionalValues": "g1:OBJECT"}).value == "OBJECT"


def test_reduce_indexed_array_element_out_of_range(latiss) -> None:
    _, km = latiss
    r = reduce(km["AIRTEMP"], {"temperatureItem": []})
    assert r.reason == "temperatureItem has no element 0"


def test_reduce_indexed_array_element_nan(latiss) -> None:
    """ESS arrays carry NaN in unused channels: the used one being NaN too is undefined, not 'nan'."""
    _, km = latiss
    r = reduce(km["AIRTEMP"], {"temperatureItem": [NAN] * 16})
    assert r.reason == "value is NaN"


def test_reduce_per_sensor_array_shorter_than_sensor_list(latiss) -> None:
    _, km = latiss
    sensors = ["R22_S00", "R22_S01", "R22_S02"]
    r = reduce(km["CCDTEMP"], {"temp": [-95.1, -95.2], "location": ":".join(sensors)}, sensors=sensors)
    assert r.per_sensor == {"R22_S00": -95.1, "R22_S01": -95.2}
    assert any("R22_S02" in w for w in r.warnings), r.warnings


def test_reduce_per_sensor_bad_element_is_a_warning(latiss) -> None:
    _, km = latiss
    sensors = ["R22_S00", "R22_S01"]
    r = reduce(km["CCDTEMP"], {"temp": [-95.1, NAN], "location": ":".join(sensors)}, sensors=sensors)
    assert r.per_sensor == {"R22_S00": -95.1}
    assert r.warnings == ["R22_S01: value is NaN"]


def test_reduce_stale_sample(latiss) -> None:
    _, km = latiss
    r = reduce(km["HUMIDITY"], {"relativeHumidityItem": 40.0}, at=1012.0, t=1000.0, max_age=5.0)
    assert r.reason == "stale: sample is 12.0 s old (max 5 s)"
    assert r.sample_time == 1000.0


def test_reduce_sample_without_sndstamp(latiss) -> None:
    _, km = latiss
    smp = sample("ESS", "relativeHumidity", {"relativeHumidityItem": 40.0}, index=301)
    smp["sndStamp"] = None
    r = reduce(km["HUMIDITY"], {}, smp=smp, max_age=5.0)
    assert not r.defined
    assert "sndStamp" in r.reason


def test_store_rejects_sample_without_sndstamp() -> None:
    from procs.cache import Store

    store = Store(100, 3600.0)
    for bad in (None, NAN, 0.0, -5.0, INF):
        with pytest.raises(ValueError, match="sample has no usable private_sndStamp"):
            store.add(b"sal.ESS.airFlow", airflow_record(301, bad, 3.0))
    assert all(not h.times for h in store.histories.values())


def test_clean_scalar_unsupported_type() -> None:
    assert clean_scalar({"a": 1}) == (None, "unsupported value type dict")
    assert clean_scalar(None) == (None, "no value")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("HUMIDITY", NAN, "nan is not a FITS value"),
        ("HUMIDITY", -INF, "-inf is not a FITS value"),
        ("OBJECT", "Étoile", "string 'Étoile' holds non-printable or non-ASCII characters"),
        ("BAD=KEY", 1, "keyword 'BAD=KEY' is not valid"),
        ("KEYÉ", 1, "keyword 'KEYÉ' is not valid"),
        ("OBJECT", [1, 2], "unsupported card value type list"),
    ],
    ids=["nan", "minus_inf", "non_ascii_value", "key_with_equals", "non_ascii_key", "list_value"],
)
def test_format_card_refuses(key: str, value: Any, message: str) -> None:
    with pytest.raises(CardError) as exc:
        format_card(key, value)
    assert str(exc.value) == message


# -- configuration files ---------------------------------------------------------------------------


@pytest.fixture
def site(tmp_path: Path, clean_env: None, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of templates/LATISS that the loaders read (TEMPLATES pointed at the copy)."""
    shutil.copytree(hs_config.TEMPLATES / "LATISS", tmp_path / "LATISS")
    monkeypatch.setattr(hs_config, "TEMPLATES", tmp_path)
    return tmp_path / "LATISS"


def _edit_yaml(path: Path, change) -> None:  # noqa: ANN001
    data = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump(change(data), sort_keys=False))


def _config_error(fn) -> str:  # noqa: ANN001
    with pytest.raises(ConfigError) as exc:
        fn()
    return str(exc.value)


def test_instance_wrong_field_name(site: Path) -> None:
    _edit_yaml(site / "instance.yaml", lambda d: {**d, "port_bas": 5550})
    assert _config_error(lambda: load_instance(site / "instance.yaml")) == (
        f"{site / 'instance.yaml'}: port_bas: Extra inputs are not permitted")


def test_instance_wrong_type(site: Path) -> None:
    _edit_yaml(site / "instance.yaml", lambda d: {**d, "end_deadline": "soon"})
    msg = _config_error(lambda: load_instance(site / "instance.yaml"))
    assert msg.startswith(f"{site / 'instance.yaml'}: end_deadline: Input should be a valid number")


@pytest.mark.parametrize(("port", "bound"), [(80, "greater than or equal to 1024"), (70000, "less than or equal to 65000")])
def test_instance_bad_port(site: Path, port: int, bound: str) -> None:
    _edit_yaml(site / "instance.yaml", lambda d: {**d, "port_base": port})
    assert _config_error(lambda: load_instance(site / "instance.yaml")) == (
        f"{site / 'instance.yaml'}: port_base: Input should be {bound}")


def test_instance_missing_file(site: Path) -> None:
    missing = site / "nothere.yaml"
    assert _config_error(lambda: load_instance(missing)) == f"cannot read {missing}: No such file or directory"


def test_instance_not_yaml(site: Path) -> None:
    (site / "instance.yaml").write_text("instrument: [LATISS\n")
    msg = _config_error(lambda: load_instance(site / "instance.yaml"))
    assert msg.startswith(f"{site / 'instance.yaml'}: not valid YAML")


def test_instance_not_a_mapping(site: Path) -> None:
    (site / "instance.yaml").write_text("- LATISS\n- ComCam\n")
    assert _config_error(lambda: load_instance(site / "instance.yaml")) == (
        f"{site / 'instance.yaml'}: expected a mapping of settings")


def test_instance_bad_domain_from_environment(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HS_DDS_DOMAIN", "999")
    assert _config_error(lambda: load_instance("LATISS")) == (
        f"{site / 'instance.yaml'}: dds_domain: Input should be less than or equal to 232")


def test_instance_non_numeric_environment_override(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HS_PORT_OFFSET", "twenty")
    msg = _config_error(lambda: load_instance("LATISS"))
    assert "HS_PORT_OFFSET" in msg and "twenty" in msg


def _add_keyword(site: Path, line: str) -> None:
    with open(site / "keywords.yaml", "a") as fh:
        fh.write(line + "\n")


def _keyword_count(site: Path) -> int:
    return len(yaml.safe_load((site / "keywords.yaml").read_text()))


def test_keywords_unknown_topic(site: Path) -> None:
    n = _keyword_count(site)
    _add_keyword(site, "- {keyword: FOO, component: ATPtg, topic: noSuchTopic, field: ra}")
    msg = _config_error(lambda: load_keyword_map(load_instance("LATISS")))
    assert msg.startswith(f"{site / 'keywords.yaml'}: keywords.{n}: ")
    assert "FOO: SAL topic ATPtg.noSuchTopic is not defined in sal_topics.yaml" in msg


def test_keywords_unknown_field(site: Path) -> None:
    n = _keyword_count(site)
    _add_keyword(site, "- {keyword: FOO, component: ATPtg, topic: currentTarget, field: colour}")
    msg = _config_error(lambda: load_keyword_map(load_instance("LATISS")))
    assert msg.startswith(f"{site / 'keywords.yaml'}: keywords.{n}: ")
    assert msg.endswith("FOO: ATPtg.currentTarget has no field 'colour'")


def test_keywords_indexed_array_without_element(site: Path) -> None:
    n = _keyword_count(site)
    _add_keyword(site, "- {keyword: FOO, component: ESS, index: 301, topic: temperature, field: temperatureItem, "
                       "kind: indexed_array}")
    msg = _config_error(lambda: load_keyword_map(load_instance("LATISS")))
    assert msg.startswith(f"{site / 'keywords.yaml'}: keywords.{n}: ")
    assert msg.endswith("FOO: kind indexed_array needs 'element'")


def test_keywords_indexed_array_element_outside(site: Path) -> None:
    _add_keyword(site, "- {keyword: FOO, component: ESS, index: 301, topic: temperature, field: temperatureItem, "
                       "kind: indexed_array, element: 16}")
    msg = _config_error(lambda: load_keyword_map(load_instance("LATISS")))
    assert msg.endswith("FOO: element 16 is outside temperatureItem[16]")


def test_keywords_duplicate_keyword(site: Path) -> None:
    _add_keyword(site, "- {keyword: RA, component: ATPtg, topic: currentTarget, field: ra}")
    msg = _config_error(lambda: load_keyword_map(load_instance("LATISS")))
    assert msg == f"{site / 'keywords.yaml'}: keywords: Value error, keyword RA is mapped twice"


def test_keywords_bad_collection_point(site: Path) -> None:
    n = _keyword_count(site)
    _add_keyword(site, "- {keyword: FOO, component: ATPtg, topic: currentTarget, field: ra, when: later}")
    msg = _config_error(lambda: load_keyword_map(load_instance("LATISS")))
    assert msg == f"{site / 'keywords.yaml'}: keywords.{n}.when: Input should be 'start', 'readout' or 'end'"


def test_template_value_and_computed(site: Path) -> None:
    n = len(yaml.safe_load((site / "primary.yaml").read_text()))
    with open(site / "primary.yaml", "a") as fh:
        fh.write("- {key: FOO, value: 1, computed: file_date}\n")
    msg = _config_error(lambda: load_template(load_instance("LATISS"), "primary"))
    assert msg == f"{site / 'primary.yaml'}: card {n}: Value error, FOO: give either 'value' or 'computed', not both"


def test_template_wrong_field_name(site: Path) -> None:
    n = len(yaml.safe_load((site / "primary.yaml").read_text()))
    with open(site / "primary.yaml", "a") as fh:
        fh.write("- {key: FOO, valeu: 1}\n")
    msg = _config_error(lambda: load_template(load_instance("LATISS"), "primary"))
    assert msg == f"{site / 'primary.yaml'}: card {n}: valeu: Extra inputs are not permitted"


def test_template_unreadable(site: Path) -> None:
    # root reads through chmod 000: a folder in place of the file is unreadable for everyone
    (site / "sensor.yaml").unlink()
    (site / "sensor.yaml").mkdir()
    msg = _config_error(lambda: load_template(load_instance("LATISS"), "sensor"))
    assert msg == f"cannot read {site / 'sensor.yaml'}: Is a directory"


def test_template_missing(site: Path) -> None:
    (site / "segment.yaml").unlink()
    msg = _config_error(lambda: load_template(load_instance("LATISS"), "segment"))
    assert msg == f"cannot read {site / 'segment.yaml'}: No such file or directory"


def test_template_bad_keyword(site: Path) -> None:
    n = len(yaml.safe_load((site / "primary.yaml").read_text()))
    with open(site / "primary.yaml", "a") as fh:
        fh.write("- {key: 'BAD=KEY', value: 1}\n")
    msg = _config_error(lambda: load_template(load_instance("LATISS"), "primary"))
    assert msg.startswith(f"{site / 'primary.yaml'}: card {n}: ") and "BAD=KEY" in msg


def _templates(cfg) -> Templates:  # noqa: ANN001
    return Templates(*(load_template(cfg, k) for k in ("primary", "sensor", "segment")))


def test_template_unknown_computed_value(latiss) -> None:
    cfg, _ = latiss
    kmap = load_keyword_map(cfg)
    t = _templates(cfg)
    bad = Templates(t.primary + [CardTemplate(key="FOO", computed="no_such_value")], t.sensor, t.segment)
    h = compose_header(cfg, kmap, bad, ExposureInputs("AT_O_20261124_000001", {}, {}, {}), 1.8e9)
    foo = [c for c in h.hdus[0] if c.startswith("FOO ")]
    assert foo and foo[0][10:30].strip() == ""  # undefined
    assert any("FOO" in e and "no_such_value" in e for e in h.provenance["card_errors"])


def test_template_non_ascii_static_value(latiss) -> None:
    cfg, _ = latiss
    kmap = load_keyword_map(cfg)
    t = _templates(cfg)
    bad = Templates(t.primary + [CardTemplate(key="FOO", value="Café")], t.sensor, t.segment)
    h = compose_header(cfg, kmap, bad, ExposureInputs("AT_O_20261124_000001", {}, {}, {}), 1.8e9)
    foo = [c for c in h.hdus[0] if c.startswith("FOO ")]
    assert len(foo) == 1 and foo[0][10:30].strip() == "" and "[undefined: string" in foo[0]
    assert h.provenance["card_errors"] == ["FOO: string 'Café' holds non-printable or non-ASCII characters"]
    assert all(c.isascii() and len(c) == 80 for hdu in h.hdus for c in hdu)


def test_keyword_map_is_read_next_to_the_instance_file(tmp_path: Path, clean_env: None) -> None:
    site = tmp_path / "site"
    shutil.copytree(hs_config.TEMPLATES / "LATISS", site)
    _add_keyword(site, "- {keyword: FOO, component: ATPtg, topic: noSuchTopic, field: ra}")
    cfg = load_instance(site / "instance.yaml")
    assert cfg.folder == site
    msg = _config_error(lambda: load_keyword_map(cfg))
    assert msg.startswith(f"{site / 'keywords.yaml'}: ")


# -- scenario files --------------------------------------------------------------------------------

EXPOSURE = {"start": "2026-11-25T03:04:06.457", "exptime": 10.0, "ra": 40.1, "dec": -40.0, "rotpa": 1.0,
            "filter": "SDSSr_65mm"}


def _scenario_error(tmp_path: Path, name: str, exposures: list[dict[str, Any]] | None = None, raw: str | None = None) -> str:
    p = tmp_path / name
    p.write_text(raw if raw is not None else yaml.safe_dump({"instrument": "LATISS", "exposures": exposures}))
    with pytest.raises(ScenarioError) as exc:
        load_scenario(p)
    return str(exc.value)


def test_scenario_wrong_field(tmp_path: Path) -> None:
    msg = _scenario_error(tmp_path, "typo.yaml", [{**EXPOSURE, "exptim": 3.0}])
    assert msg == "scenario typo.yaml: exposures.0.exptim: Extra inputs are not permitted"


def test_scenario_wrong_type(tmp_path: Path) -> None:
    msg = _scenario_error(tmp_path, "type.yaml", [{**EXPOSURE, "exptime": "long"}])
    assert msg.startswith("scenario type.yaml: exposures.0.exptime: Input should be a valid number")


def test_scenario_unknown_omit_topic(tmp_path: Path) -> None:
    msg = _scenario_error(tmp_path, "omit.yaml", [{**EXPOSURE, "omit": ["ATPtg.noSuchTopic"]}])
    assert msg.startswith("scenario omit.yaml: exposures.0.omit.0: SAL topic ATPtg.noSuchTopic is not defined")


def test_scenario_exposures_out_of_order(tmp_path: Path) -> None:
    msg = _scenario_error(tmp_path, "order.yaml", [{**EXPOSURE, "start": "2026-11-25T03:10:00"}, EXPOSURE])
    assert msg == ("scenario order.yaml: exposures.1.start: 2026-11-25T03:04:06.457 is not after exposure 0 "
                   "(2026-11-25T03:10:00.000); exposures must be in time order")


def test_scenario_change_of_wrong_type(tmp_path: Path) -> None:
    msg = _scenario_error(tmp_path, "chg.yaml", [{**EXPOSURE, "changes": {"ATDome.position.azimuthPosition": "north"}}])
    assert msg == "scenario chg.yaml: exposures.0.changes: ATDome.position.azimuthPosition: 'north' is not a valid double"


def test_scenario_bad_image_name(tmp_path: Path) -> None:
    msg = _scenario_error(tmp_path, "name.yaml", [{**EXPOSURE, "image_name": "../../etc/passwd"}])
    assert msg.startswith("scenario name.yaml: exposures.0.image_name: '../../etc/passwd' is not CAMCODE_CONTRLLR")


def test_scenario_not_yaml(tmp_path: Path) -> None:
    msg = _scenario_error(tmp_path, "broken.yaml", raw="instrument: [LATISS\n")
    assert msg.startswith("scenario broken.yaml: not valid YAML at line 2")


def test_scenario_nan_exptime(tmp_path: Path) -> None:
    msg = _scenario_error(tmp_path, "nan.yaml", [{**EXPOSURE, "exptime": NAN}])
    assert msg == "scenario nan.yaml: exposures.0.exptime: Input should be a finite number"


# -- the cache server fed garbage by a listener (in process; nothing outside can publish there) ----


@pytest.fixture
def cache_server(clean_env: None, tmp_path: Path):  # noqa: ANN201
    from procs.cache import CacheServer
    from tests.conftest import fresh_domain_and_offset

    _, offset = fresh_domain_and_offset()
    cfg = load_instance("LATISS").model_copy(update={"port_base": 5550 + offset + 10, "state_dir": tmp_path / "state",
                                                     "annex": tmp_path / "annex"})
    server = CacheServer(cfg)
    yield server
    for sock in (server.sub, server.router, getattr(server, "listener", None)):
        if sock is not None:
            sock.close(linger=0)


def airflow_record(index: int, stamp: float | None, speed: float) -> bytes:
    """An ESS.airFlow sample as the listener forwards it (a SAL record around its CDR bytes)."""
    from protocols import sal, salrecord

    s = sal.make_sample("ESS", "airFlow", index, private_sndStamp=1000.0 if stamp is None else stamp, speed=speed)
    return salrecord.encode(s.serialize(), index, stamp, 1000.0, None)


def test_cache_counts_listener_garbage(cache_server) -> None:
    snd = Sender("listener.LATISS@test:1:0")
    good = snd.frames("sal.ESS.airFlow", airflow_record(301, 1000.0, 3.0))
    cache_server.on_sample(good[:2])  # wrong frame count
    cache_server.on_sample([good[0], b"{not json", good[2]])
    cache_server.on_sample([good[0], good[1].replace(b'"v":1', b'"v":7'), good[2]])
    cache_server.on_sample([good[0], snd.frames("x", {})[1], b"\xff not a record"])
    cache_server.on_sample(snd.frames("sal.ESS.airFlow", {"component": "ESS", "topic": "airFlow", "data": {}}))  # JSON
    cache_server.on_sample(snd.frames("sal.ESS.noSuchTopic", airflow_record(301, 1001.0, 3.0)))
    cache_server.on_sample([b"\xff\xfe", snd.frames("x", {})[1], airflow_record(301, 1001.0, 3.0)])
    assert cache_server.counts["bad_messages"] == 7
    cache_server.on_sample(snd.frames("sal.ESS.airFlow", airflow_record(301, 1002.0, 4.0)))
    assert cache_server.counts["samples"] == 1
    snap = cache_server.store.as_of("ESS.airFlow:301", 2000.0)
    assert snap["data"]["speed"] == 4.0 and snap["sndStamp"] == 1002.0 and snap["salIndex"] == 301


def test_cache_counts_a_truncated_sample_as_missing(cache_server) -> None:
    """A record whose CDR bytes are cut short is stored (its header is fine) but reads as missing."""
    snd = Sender("listener.LATISS@test:1:0")
    cache_server.on_sample(snd.frames("sal.ESS.airFlow", airflow_record(301, 1000.0, 3.0)))
    cache_server.on_sample(snd.frames("sal.ESS.airFlow", airflow_record(301, 1001.0, 5.0)[:40]))
    assert cache_server.store.as_of("ESS.airFlow:301", 1000.5)["data"]["speed"] == 3.0
    assert cache_server.store.as_of("ESS.airFlow:301", 1001.5) is None
    assert [d["data"]["speed"] for d in cache_server.store.between("ESS.airFlow:301", 0, 2000)] == [3.0]


def test_cache_survives_listener_payload_that_is_not_an_object(cache_server) -> None:
    snd = Sender("listener.LATISS@test:1:0")
    cache_server.on_sample(snd.frames("sal.ESS.airFlow", [1, 2, 3]))
    assert cache_server.counts["bad_messages"] == 1


# -- a process refusing a bad configuration ----------------------------------------------------------


def test_bad_configuration_exits_with_the_reason(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "hs-cache"
    env = {k: v for k, v in os.environ.items() if k not in HS_ENV}
    env.update(HS_DDS_DOMAIN="999", HS_STATE_DIR=str(tmp_path / "state"), HS_ANNEX=str(tmp_path / "annex"))
    out = subprocess.run([str(exe), "--instance", "LATISS"], env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert "configuration error:" in out.stderr
    assert "templates/LATISS/instance.yaml: dds_domain: Input should be less than or equal to 232" in out.stderr
    assert "Traceback" not in out.stderr


def test_bad_configuration_is_not_a_crash_loop(tmp_path: Path) -> None:
    from tests.conftest import fresh_domain_and_offset
    from tools.runner import Deployment

    domain, offset = fresh_domain_and_offset()
    dep = Deployment(tmp_path / "run", tmp_path / "annex", domain, offset, extra_env={"HS_DDS_DOMAIN": "999"})
    dep.start()
    try:
        dep.supervisorctl("start", "latiss:latiss-cache", check=False)
        time.sleep(4.0)
        state = dep.status().get("latiss:latiss-cache")
        attempts = dep.log("latiss-cache").count("configuration error:")
    finally:
        dep.stop()
    assert attempts == 1, f"{attempts} start attempts in 4 s"
    assert state in ("EXITED", "FATAL"), state


# ================================================================================================
# 2. One LATISS deployment: a night with bad input
# ================================================================================================

SCENARIO = {
    "instrument": "LATISS",
    "exposures": [
        {"start": "2026-11-25T03:04:06.457", "exptime": 10.0, "ra": 40.1167, "dec": -40.0301, "rotpa": 183.74,
         "filter": "SDSSr_65mm", "imgtype": "OBJECT", "object": "HD 164461"},
        {"start": "2026-11-25T03:04:30.000", "exptime": 5.0, "ra": 20.5, "dec": -60.2, "rotpa": 12.0,
         "filter": "SDSSg_65mm", "imgtype": "OBJECT", "object": "NGC 6752"},
        {"start": "2026-11-25T03:04:50.000", "exptime": 4.0, "ra": 60.0, "dec": -20.0, "rotpa": 90.0,
         "filter": "SDSSr_65mm", "imgtype": "ENGTEST", "object": "HD 185975"},
        {"start": "2026-11-25T03:05:10.000", "exptime": 3.0, "ra": 62.0, "dec": -25.0, "rotpa": 45.0,
         "filter": "SDSSi_65mm", "imgtype": "OBJECT", "object": "47 Tuc field",
         "changes": {"ATDomeTrajectory.telescopeVignetted.vignetted": 7}},  # an enum value without a name
        {"start": "2026-11-25T03:05:40.000", "exptime": 5.0, "ra": 30.0, "dec": -45.0, "rotpa": 10.0,
         "filter": "SDSSr_65mm", "imgtype": "OBJECT", "object": "Fornax field"},
    ],
}
SND = "__snd__"  # fields key of an injected emission: its private_sndStamp, when not its bus (arrival) time
X_IMAGE = "AT_O_20261124_000091"  # events out of order (startReadout first), short additionalValues
Z_IMAGE = "AT_O_20261124_000092"  # endOfImageTelemetry only: never started
Y_IMAGE = "AT_O_20261124_000093"  # startReadout only: nothing else ever comes
NO_HDUS = "AT_O_20261124_000094"  # a header message with no HDU pushed to the publisher
SHORT_CARDS = "AT_O_20261124_000095"  # a header message whose cards are not 80-character images
TRAVERSAL = "../../../escaped_AT"  # an imageName that is a path
LONG_NOTE = "Scheduler note " + "x" * 585  # 600 characters
TARGET_NON_ASCII = "Étoile de Barnard"

# (exposure index, keyword) -> the reason the keyword must be undefined for
CORRUPTED = {
    (1, "HUMIDITY"): "value is NaN",
    (2, "WINDSPD"): "value is infinite",
    (2, "OBJECT"): "string holds non-ASCII or control characters",
    (3, "SCHNOTE"): "string of 600 characters is longer than 544",
    (3, "VIGNETTE"): "enum value 7 has no name",
}
SENSOR_KEYWORDS = {"CCDSLOT", "RAFTBAY", "CCD_MANU", "CCD_TYPE", "CCD_SERN", "LSST_NUM", "SEQCKSUM", "SEQNAME",
                   "REBNAME", "CONTNUM", "CCDTEMP", "OVERH", "OVERV", "PREH"}


def _latest(emissions, component: str, topic: str, before: float, index: int | None = None):  # noqa: ANN001, ANN202
    return [e for e in emissions if e.component == component and e.topic == topic and e.tai <= before
            and (index is None or e.sal_index == index)][-1]


def _camera(emissions, topic: str, image: str):  # noqa: ANN001, ANN202
    return next(e for e in emissions if e.topic == topic and e.fields.get("imageName") == image)


def plan_injections(emissions, images: list[str]):  # noqa: ANN001, ANN201
    """Bad samples and bad camera events, each an Emission at its bus (arrival) time.

    Returns (telemetry_and_events, camera_events): the first are what the bus carried for the
    oracle; camera events are judged by their own tests.
    """
    from tools.sim.night import Emission

    starts = [_camera(emissions, "startIntegration", im).tai for im in images]
    bus: list[Emission] = []
    # 1: NaN relative humidity just before exposure 1 starts; 2: +inf wind speed before exposure 2
    rh = _latest(emissions, "ESS", "relativeHumidity", starts[1], 301)
    bus.append(rh._replace(tai=starts[1] - 0.0005, fields={**rh.fields, "relativeHumidityItem": NAN}))
    af = _latest(emissions, "ESS", "airFlow", starts[2], 301)
    bus.append(af._replace(tai=starts[2] - 0.0005, fields={**af.fields, "speed": INF}))
    # 2: non-ASCII target name (same target otherwise); 3: a 600-character scheduler note
    ct = _latest(emissions, "ATPtg", "currentTarget", starts[2])
    bus.append(ct._replace(tai=starts[2] - 0.0004, fields={**ct.fields, "targetName": TARGET_NON_ASCII}))
    st = _latest(emissions, "Scheduler", "target", starts[3], 2)
    bus.append(st._replace(tai=starts[3] - 0.0005, fields={**st.fields, "note": LONG_NOTE}))

    cam: list[Emission] = []
    si0 = _camera(emissions, "startIntegration", images[0])
    sr0 = _camera(emissions, "startReadout", images[0])
    eot0 = _camera(emissions, "endOfImageTelemetry", images[0])

    def start_of(name: str, t: float, **extra: Any) -> dict[str, Any]:
        return {**si0.fields, "imageName": name, "imageNumber": int(name[-6:]) if name[-6:].isdigit() else 0,
                "timestampAcquisitionStart": t, **extra}

    # duplicate startIntegration for exposure 1 (a different exposure time: the first one wins)
    si1 = _camera(emissions, "startIntegration", images[1])
    cam.append(si1._replace(tai=si1.tai + 0.5, fields={**si1.fields, "exposureTime": 99.0}))
    # a startIntegration with an empty imageName
    cam.append(si0._replace(tai=starts[2] - 5.0, fields=start_of("", starts[2] - 5.0)))
    # startReadout of exposure 3 again, with a NaN private_sndStamp
    sr3 = _camera(emissions, "startReadout", images[3])
    cam.append(sr3._replace(tai=sr3.tai + 0.5, fields={**sr3.fields, SND: NAN}))
    # duplicate endOfImageTelemetry for exposure 4, after its header was written
    eot4 = _camera(emissions, "endOfImageTelemetry", images[4])
    cam.append(eot4._replace(tai=eot4.tai + 0.5, fields={**eot4.fields, "darkTime": 999.0}))
    # X: startReadout arrives first, startIntegration 4 s (bus) later, then endOfImageTelemetry
    tx = starts[0] + 14.0
    cam.append(sr0._replace(tai=tx + 2.0, fields={**sr0.fields, "imageName": X_IMAGE, "imageNumber": 91}))
    cam.append(si0._replace(tai=tx + 6.0, fields={**start_of(X_IMAGE, tx, exposureTime=2.0),
                                                   "additionalKeys": "groupId:imageType:testType:reason:program",
                                                   "additionalValues": "grp-X:OBJECT", SND: tx}))
    cam.append(eot0._replace(tai=tx + 7.0, fields={**eot0.fields, "imageName": X_IMAGE, "imageNumber": 91,
                                                   "timestampDateObs": tx, "timestampDateEnd": tx + 2.0,
                                                   SND: tx + 3.0}))
    # Y: a lone startReadout
    cam.append(sr0._replace(tai=starts[0] + 19.0, fields={**sr0.fields, "imageName": Y_IMAGE, "imageNumber": 93}))
    # Z: endOfImageTelemetry of an image never started
    tz = starts[2] + 10.0
    cam.append(eot0._replace(tai=tz, fields={**eot0.fields, "imageName": Z_IMAGE, "imageNumber": 92,
                                             "timestampDateObs": tz - 3.0, "timestampDateEnd": tz - 1.0}))
    # an imageName that is a path
    cam.append(eot0._replace(tai=tz + 5.0, fields={**eot0.fields, "imageName": TRAVERSAL,
                                                   "timestampDateObs": tz + 2.0, "timestampDateEnd": tz + 4.0}))
    return bus, cam


def _make_player(domain: int):  # noqa: ANN202
    from protocols.timescale import utc_from_tai
    from tools.sim.player import Player, build_sample

    class InjectingPlayer(Player):
        """hs-sim's player, plus emissions whose private_sndStamp differs from their bus time."""

        def write(self, e) -> None:  # noqa: ANN001
            fields = dict(e.fields)
            snd = fields.pop(SND, e.tai)
            w = self.writer(e.component, e.topic)
            key = (e.component, e.topic)
            self._seq[key] = self._seq.get(key, 0) + 1
            smp = build_sample(e.component, e.topic, e.sal_index, fields, private_sndStamp=snd,
                               private_seqNum=self._seq[key], private_identity=e.component,
                               private_origin=os.getpid())
            w.write(smp, timestamp=int(round(utc_from_tai(e.tai) * 1e9)))

    return InjectingPlayer(domain, log=open(os.devnull, "w"))  # noqa: SIM115


# -- ZeroMQ garbage ----------------------------------------------------------------------------------

GARBAGE_SENDER = Sender("tester.LATISS@bad-input:0:0")


def _good(topic: str, payload: Any) -> list[bytes]:
    return GARBAGE_SENDER.frames(topic, payload)


def _wrong_version(topic: str, payload: Any) -> list[bytes]:
    f = _good(topic, payload)
    env = json.loads(f[1])
    env["v"] = 2
    return [f[0], json.dumps(env).encode(), f[2]]


def router_garbage(kind: str) -> dict[str, list[bytes]]:
    """Garbage requests for a ROUTER (cache or composer), by case name."""
    status = _good("ctl.request.status", {"op": "status"})
    cases = {
        "wrong_frame_count": status[:2],
        "envelope_not_json": [status[0], b"{v: 1, seq", status[2]],
        "wrong_envelope_version": _wrong_version("ctl.request.status", {"op": "status"}),
        "payload_not_json": [status[0], status[1], b"\xff\xfe{op: status"],
        "unknown_op": _good("ctl.request.frobnicate", {"op": "frobnicate"}),
    }
    if kind == "cache":
        cases["payload_not_an_object"] = _good("ctl.request.status", ["op", "status"])
        cases["collect_with_bad_time"] = _good("ctl.request.collect", {"op": "collect", "points": {"start": "soon"},
                                                                        "topics": {"start": ["ESS.airFlow:301"]}})
        cases["range_without_key"] = _good("ctl.request.range", {"op": "range", "t0": 0, "t1": 1})
    else:
        cases["sensor_of_unknown_image"] = _good("ctl.request.sensor", {"op": "sensor", "imageName": "AT_O_19990101_000001",
                                                                        "sensor": "R00_S00"})
    return cases


CACHE_REPLIES = {
    "wrong_frame_count": "expected 3 frames (topic, envelope, payload), got 2",
    "envelope_not_json": "malformed envelope frame",
    "wrong_envelope_version": "unsupported envelope version 2 (this build speaks 1)",
    "payload_not_json": "payload of ctl.request.status is not JSON",
    "payload_not_an_object": "request payload is not an object",
    "unknown_op": "unknown op 'frobnicate'",
    "collect_with_bad_time": "bad request: could not convert string to float: 'soon'",
    "range_without_key": "bad request: 'key'",
}
COMPOSER_REPLIES = {
    "wrong_frame_count": "expected 3 frames (topic, envelope, payload), got 2",
    "envelope_not_json": "malformed envelope frame",
    "wrong_envelope_version": "unsupported envelope version 2 (this build speaks 1)",
    "payload_not_json": "payload of ctl.request.status is not JSON",
    "sensor_of_unknown_image": "AT_O_19990101_000001 is not among the last 20 headers composed",
}


def ask(endpoint: str, frames: list[bytes], timeout: float = 3.0) -> Any:
    """Send one request through a DEALER (REQ framing); the decoded reply payload, or None."""
    import zmq

    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    try:
        sock.send_multipart([b""] + frames)
        if not sock.poll(int(timeout * 1000)):
            return None
        reply = sock.recv_multipart()
        return decode(reply[1:] if reply and reply[0] == b"" else reply).payload
    finally:
        sock.close()


def push(endpoint: str, messages: list[list[bytes]]) -> None:
    import zmq

    sock = zmq.Context.instance().socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, 3000)
    sock.connect(endpoint)
    for m in messages:
        sock.send_multipart(m)
    sock.close()


def header_message(image: str, hdus: list[dict[str, Any]]) -> list[bytes]:
    return _good(f"hdr.LATISS.{image}", {"imageName": image, "instrument": "LATISS", "dayobs": "20261124",
                                          "version": 1, "complete": True, "reasons": [], "hdus": hdus,
                                          "provenance": {}})


PUBLISHER_GARBAGE = {
    "wrong_frame_count": ([b"hdr.LATISS.x"], "header message rejected: expected 3 frames (topic, envelope, payload), got 1"),
    "envelope_not_json": ([b"hdr.LATISS.x", b"\x00\x01", b"{}"], "header message rejected: malformed envelope frame"),
    "wrong_envelope_version": (_wrong_version("hdr.LATISS.x", {}), "header message rejected: unsupported envelope version 2"),
    "payload_not_json": ([b"hdr.LATISS.x", _good("x", {})[1], b"{'hdus': ["], "header message rejected: payload of hdr.LATISS.x is not JSON"),
    "payload_without_image_name": (_good("hdr.LATISS.x", {"version": 1, "hdus": []}), "header message rejected: 'imageName'"),
}


def inject_zmq(cfg, out: dict[str, Any]) -> None:  # noqa: ANN001
    """Runs in a thread while the night plays: garbage on every socket that takes requests."""
    ep = cfg.endpoints
    out["cache"] = {name: ask(ep.cache_router, f) for name, f in router_garbage("cache").items()}
    out["composer"] = {name: ask(ep.composer_router, f) for name, f in router_garbage("composer").items()}
    push(ep.publisher_pull, [m for m, _ in PUBLISHER_GARBAGE.values()]
         + [header_message(NO_HDUS, []), header_message(SHORT_CARDS, [{"name": "PRIMARY", "cards": ["SIMPLE = T", "END"]}])])


# -- the deployment --------------------------------------------------------------------------------


def wait_for(cond, timeout: float, step: float = 0.1) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return bool(cond())


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    from tests.conftest import fresh_domain_and_offset
    from tests.plain_dds import PlainReader
    from tools.runner import Deployment
    from tools.sim.night import Night
    from tools.sim.scenario import scenario_from_dict

    base = tmp_path_factory.mktemp("bad_input")
    scenario = scenario_from_dict(SCENARIO, "bad-input night")
    sim_night = Night(scenario)
    emissions = list(sim_night.emissions())
    images = [e.fields["imageName"] for e in emissions if e.topic == "startIntegration"]
    bus, cam = plan_injections(emissions, images)
    played = sorted(emissions + bus + cam, key=lambda e: e.tai)

    domain, offset = fresh_domain_and_offset()
    dep = Deployment(base / "run", base / "annex", domain, offset)
    saved_env = {k: os.environ.get(k) for k in (*HS_ENV, "CYCLONEDDS_URI")}
    dep.start()
    player = None
    try:
        dep.start_instance("LATISS")
        dep.wait_running("LATISS")
        dep.apply_env()
        cfg = load_instance("LATISS")
        pids = {p: dep.pid(f"latiss:{p}") for p in LATISS_PROGRAMS}
        reader = PlainReader(domain, "ATHeaderService", "logevent_largeFileObjectAvailable")
        player = _make_player(domain)
        player.prepare_topics(sim_night.topics() | {(e.component, e.topic) for e in bus + cam})
        player.wait_for_readers(5.0)
        zmq_out: dict[str, Any] = {}
        threads: list[threading.Thread] = []

        def on_exposure(e) -> None:  # noqa: ANN001
            if e.fields.get("imageName") == images[2]:
                th = threading.Thread(target=inject_zmq, args=(cfg, zmq_out), daemon=True)
                th.start()
                threads.append(th)

        player.play(played, 20.0, camera="ATCamera", on_exposure=on_exposure)
        expected = set(images) | {X_IMAGE}
        reader.wait(lambda got: {s["id"] for s in got} >= expected, timeout=60)
        for th in threads:
            th.join(timeout=30)
        time.sleep(0.5)
        reader.poll()
        yield {
            "dep": dep, "cfg": cfg, "pids": pids, "images": images, "reader": reader, "player": player,
            "emissions": sorted(emissions + bus, key=lambda e: e.tai), "zmq": zmq_out,
            "annex": base / "annex", "base": base,
        }
    finally:
        if player is not None:
            player.close()
        dep.stop()
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def announced(night: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["id"]: s for s in night["reader"].poll()}


def annex_path(night: dict[str, Any], image: str, suffix: str = ".fits") -> Path:
    ann = announced(night)[image]
    return (night["annex"] / ann["url"].split("/", 3)[3]).with_suffix(suffix)


def primary(night: dict[str, Any], image: str, hdu: int = 0):  # noqa: ANN201
    import fitsio

    return fitsio.read_header(str(annex_path(night, image)), hdu)


def prov(night: dict[str, Any], image: str) -> dict[str, Any]:
    return json.loads(annex_path(night, image, ".prov.json").read_text())


def composer_status(night: dict[str, Any]) -> dict[str, Any]:
    reply = ask(night["cfg"].endpoints.composer_router, _good("ctl.request.status", {"op": "status"}))
    assert reply is not None, "the composer did not answer its status request"
    return reply


def cache_status(night: dict[str, Any]) -> dict[str, Any]:
    from protocols.messages import CacheClient

    client = CacheClient(night["cfg"].endpoints.cache_router, Sender("tester.LATISS@bad-input:0:1"), timeout_s=3.0)
    try:
        return client.request({"op": "status"})
    finally:
        client.close()


def assert_same_value(key: str, got: Any, want: Any) -> None:
    if isinstance(want, bool):
        assert got == want, key
    elif isinstance(want, float):
        assert isinstance(got, float) and math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-9), f"{key}: {got!r} != {want!r}"
    elif isinstance(want, int):
        assert isinstance(got, int) and got == want, f"{key}: {got!r} != {want!r}"
    else:
        assert str(got).rstrip() == str(want).rstrip(), f"{key}: {got!r} != {want!r}"


def test_every_exposure_header_untouched_but_the_corrupted_keyword(night: dict[str, Any]) -> None:
    kmap = load_keyword_map(night["cfg"])
    ann = announced(night)
    checked = 0
    for i, image in enumerate(night["images"]):
        assert image in ann, f"{image} not announced"
        assert ann[image]["version"] == 1.0
        p, s = primary(night, image, 0), primary(night, image, 1)
        assert p["HDRSTAT"] == "COMPLETE", p.get("HDRNOTE")
        for src in kmap.keywords:
            if (i, src.keyword) in CORRUPTED:
                continue
            hdr = s if src.keyword in SENSOR_KEYWORDS else p
            want = expected_value(night, src, image)
            assert want is not None, f"simulator published nothing for {src.keyword}"
            assert src.keyword in hdr, f"{image}: {src.keyword} missing"
            assert_same_value(f"{image} {src.keyword}", hdr[src.keyword], want)
            checked += 1
        data = annex_path(night, image).read_bytes()
        assert hashlib.md5(data).hexdigest() == ann[image]["checkSum"]
    assert checked >= 5 * len(kmap.keywords) - len(CORRUPTED)


def _assert_undefined(night: dict[str, Any], index: int, keyword: str) -> None:
    image = night["images"][index]
    h = primary(night, image)
    blank = "" if fits_type(keyword) == "str" else None  # FITS string keywords are never written undefined
    assert keyword in h and h[keyword] == blank, f"{image} {keyword} = {h.get(keyword)!r}, expected undefined"
    reason = CORRUPTED[(index, keyword)]
    assert prov(night, image)["keywords"][keyword]["undefined"] == reason
    log = night["dep"].log("latiss-composer")
    assert f"{image}: {keyword} written undefined: {reason}" in log


@pytest.mark.parametrize(("index", "keyword"), [(1, "HUMIDITY"), (2, "WINDSPD")], ids=["nan", "inf"])
def test_non_finite_telemetry_is_undefined(night: dict[str, Any], index: int, keyword: str) -> None:
    _assert_undefined(night, index, keyword)


def test_non_ascii_event_string_is_undefined(night: dict[str, Any]) -> None:
    _assert_undefined(night, 2, "OBJECT")
    # the rest of the same sample (RA, DEC) is used as usual
    h = primary(night, night["images"][2])
    assert math.isclose(h["RA"], 60.0, abs_tol=1e-6) and math.isclose(h["DEC"], -20.0, abs_tol=1e-6)


def test_oversize_string_is_undefined(night: dict[str, Any]) -> None:
    _assert_undefined(night, 3, "SCHNOTE")


def test_enum_value_without_name_is_undefined(night: dict[str, Any]) -> None:
    _assert_undefined(night, 3, "VIGNETTE")
    assert primary(night, night["images"][3])["VIGN_MIN"] in ("NO", "PARTIALLY", "FULLY", "UNKNOWN")


def test_bad_values_are_counted(night: dict[str, Any]) -> None:
    counts = composer_status(night)["counts"]
    assert counts.get("bad_values", 0) >= 3  # OBJECT, SCHNOTE, VIGNETTE (more once NaN/inf are caught)


def test_second_start_integration_under_a_used_name_is_reported(night: dict[str, Any]) -> None:
    image = night["images"][1]
    assert primary(night, image)["EXPTIME"] == 5.0  # the first exposure keeps the name's header
    assert composer_status(night)["counts"].get("duplicate_image_names", 0) >= 1
    assert f"{image}: no header: imageName used again by a second exposure" in night["dep"].log("latiss-composer")


def test_duplicate_end_of_image_telemetry_after_done(night: dict[str, Any]) -> None:
    image = night["images"][4]
    versions = [s["version"] for s in night["reader"].poll() if s["id"] == image]
    assert versions == [1.0], versions
    assert primary(night, image)["DARKTIME"] != 999.0
    assert composer_status(night)["counts"].get("events_after_done", 0) >= 1


def test_event_after_done_is_logged(night: dict[str, Any]) -> None:
    image = night["images"][4]
    log = night["dep"].log("latiss-composer")
    assert any(image in line and "endOfImageTelemetry" in line and "after" in line for line in log.splitlines())


def test_empty_image_name_is_counted(night: dict[str, Any]) -> None:
    assert composer_status(night)["counts"].get("events_without_image", 0) >= 1
    assert "startIntegration without an imageName ignored" in night["dep"].log("latiss-composer")


def test_camera_event_with_nan_sndstamp(night: dict[str, Any]) -> None:
    image = night["images"][3]
    assert composer_status(night)["counts"].get("bad_events", 0) >= 1
    assert f"startReadout for {image} has no usable private_sndStamp: ignored" in night["dep"].log("latiss-composer")
    assert cache_status(night)["counts"].get("bad_messages", 0) >= 1
    assert "sample has no usable private_sndStamp: None" in night["dep"].log("latiss-cache")
    assert primary(night, image)["HDRSTAT"] == "COMPLETE"


def test_out_of_order_events(night: dict[str, Any]) -> None:
    h = primary(night, X_IMAGE)
    assert h["HDRSTAT"] == "COMPLETE"
    assert h["OBSID"] == X_IMAGE and h["EXPTIME"] == 2.0
    assert h["GROUPID"] == "grp-X" and h["IMGTYPE"] == "OBJECT"
    p = prov(night, X_IMAGE)
    for kw, key in (("TESTTYPE", "testType"), ("REASON", "reason"), ("PROGRAM", "program")):
        assert h[kw] is None
        assert p["keywords"][kw]["undefined"] == f"additionalValues has no entry for {key}"
    # the collection points are the events' own times, although startIntegration arrived 4 s (bus) late
    assert p["points"]["start"] < p["points"]["readout"] < p["points"]["end"]
    assert h["DATE-OBS"] == tai_iso(p["points"]["start"])


def test_end_of_image_telemetry_for_unknown_image(night: dict[str, Any]) -> None:
    assert Z_IMAGE not in announced(night)  # no header for an image that never existed
    assert f"{Z_IMAGE}: no header: endOfImageTelemetry for an image never started" in night["dep"].log("latiss-composer")
    assert composer_status(night)["counts"].get("set_aside", 0) >= 1


def test_lone_start_readout_is_written_incomplete(night: dict[str, Any]) -> None:
    assert wait_for(lambda: Y_IMAGE in announced(night), timeout=3.0), composer_status(night)["open"]
    h = primary(night, Y_IMAGE)
    assert h["HDRSTAT"] == "INCOMPLETE" and "startIntegration not received" in h["HDRNOTE"]


def test_image_name_that_is_a_path_is_rejected(night: dict[str, Any]) -> None:
    escaped = list(night["base"].rglob("escaped_AT*"))
    assert escaped == [], f"written outside the annex: {escaped}"
    assert TRAVERSAL not in announced(night)
    assert "../../../escaped_AT" in night["dep"].log("latiss-composer")
    assert composer_status(night)["counts"].get("bad_events", 0) >= 2  # this one and the NaN sndStamp


# -- garbage on the ZeroMQ sockets -----------------------------------------------------------------


def test_cache_router_garbage_gets_specific_errors(night: dict[str, Any]) -> None:
    replies = night["zmq"]["cache"]
    for case, text in CACHE_REPLIES.items():
        assert replies.get(case) is not None, f"{case}: no reply"
        assert text in replies[case].get("error", ""), f"{case}: {replies[case]}"
    assert cache_status(night)["counts"].get("bad_requests", 0) >= len(CACHE_REPLIES) - 1  # unknown_op: see below


def test_composer_router_garbage_gets_specific_errors(night: dict[str, Any]) -> None:
    replies = night["zmq"]["composer"]
    for case, text in COMPOSER_REPLIES.items():
        assert replies.get(case) is not None, f"{case}: no reply"
        assert text in replies[case].get("error", ""), f"{case}: {replies[case]}"
    assert composer_status(night)["counts"].get("bad_requests", 0) >= len(COMPOSER_REPLIES)
    # a sensor that the image does not have
    reply = ask(night["cfg"].endpoints.composer_router,
                _good("ctl.request.sensor", {"op": "sensor", "imageName": night["images"][0], "sensor": "R99_S99"}))
    assert "sensor R99_S99 is not in this image (the camera reported 1)" in reply["error"]


def test_composer_unknown_op_is_named(night: dict[str, Any]) -> None:
    assert night["zmq"]["composer"]["unknown_op"] == {"error": "unknown op 'frobnicate'"}


def test_cache_unknown_op_is_counted(night: dict[str, Any]) -> None:
    before = cache_status(night)["counts"].get("bad_requests", 0)
    assert ask(night["cfg"].endpoints.cache_router, _good("ctl.request.frobnicate", {"op": "frobnicate"})) == {
        "error": "unknown op 'frobnicate'"}
    assert cache_status(night)["counts"].get("bad_requests", 0) == before + 1


@pytest.mark.parametrize("program", ["latiss-cache", "latiss-composer"])
def test_rejected_requests_are_logged(night: dict[str, Any], program: str) -> None:
    log = night["dep"].log(program)
    assert "unsupported envelope version 2" in log
    assert "expected 3 frames" in log


def test_publisher_pull_garbage_is_logged(night: dict[str, Any]) -> None:
    log = night["dep"].log("latiss-publisher")
    for case, (_, text) in PUBLISHER_GARBAGE.items():
        assert text in log, f"{case}: {text!r} not in the publisher log"


@pytest.mark.parametrize("image", [NO_HDUS, SHORT_CARDS], ids=["no_hdus", "cards_not_80_characters"])
def test_publisher_rejects_a_header_that_is_not_fits(night: dict[str, Any], image: str) -> None:
    assert image not in announced(night)
    assert not (night["annex"] / "LATISS" / "20261124" / f"{image}.fits").exists()
    assert f"header message rejected: {image}" in night["dep"].log("latiss-publisher")


def test_publisher_counts_are_visible_in_tap(night: dict[str, Any]) -> None:
    import zmq

    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"ctl.status.publisher")
    sub.connect(night["cfg"].endpoints.publisher_pub)
    try:
        got = sub.poll(2500)
        assert got, "no ctl.status.publisher message in 2.5 s"
        msg = decode(sub.recv_multipart())
        assert msg.payload["counts"]["bad_messages"] >= len(PUBLISHER_GARBAGE)
    finally:
        sub.close(linger=0)


def test_processes_did_not_restart(night: dict[str, Any]) -> None:
    dep = night["dep"]
    status = dep.status()
    for p in LATISS_PROGRAMS:
        assert status[f"latiss:{p}"] == "RUNNING", status
        assert dep.pid(f"latiss:{p}") == night["pids"][p], f"{p} restarted"
    for p in LATISS_PROGRAMS:
        assert "Traceback" not in dep.log(p), dep.log(p)[-3000:]


# ================================================================================================
# 3. Annex faults: a full disk, then a DAYOBS folder that cannot be made, for one pending header
# ================================================================================================

FAULT_NIGHTS = [
    {"instrument": "LATISS", "exposures": [{"start": "2026-11-26T11:59:40.000", "exptime": 2.0, "ra": 40.0,
                                            "dec": -40.0, "rotpa": 0.0, "filter": "SDSSr_65mm"}]},  # DAYOBS 20261125
    {"instrument": "LATISS", "exposures": [{"start": "2026-11-26T12:00:30.000", "exptime": 2.0, "ra": 40.0,
                                            "dec": -40.0, "rotpa": 0.0, "filter": "SDSSr_65mm"}]},  # DAYOBS 20261126
]
PENDING_IMAGE = "AT_O_20261125_000001"
SKIPPED_IMAGE = "AT_O_20261126_000001"


def _play(night: dict[str, Any], scenario: dict[str, Any]) -> None:
    from tools.sim.night import Night
    from tools.sim.scenario import scenario_from_dict

    sim = Night(scenario_from_dict(scenario, "annex faults"))
    night["player"].prepare_topics(sim.topics())
    night["player"].play(list(sim.emissions()), 20.0, camera="ATCamera")


def test_annex_faults_keep_the_header_until_the_annex_is_usable(night: dict[str, Any]) -> None:
    """An unwritable annex costs no exposure: the CSC stays ENABLED (warning, not FAULT), an exposure
    taken meanwhile is composed and kept too, and both are written and announced once it is back."""
    import zmq

    from protocols.csc_state import CscStateFollower

    dep, annex = night["dep"], night["annex"] / "LATISS"
    day, day2 = annex / "20261125", annex / "20261126"
    log = lambda: dep.log("latiss-publisher")  # noqa: E731
    pub_pid = dep.pid("latiss:latiss-publisher")
    # 1. disk full: the publisher's temporary files are /dev/full (ENOSPC on write, also for root)
    for folder, image in ((day, PENDING_IMAGE), (day2, SKIPPED_IMAGE)):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f".{image}.fits.{pub_pid}.tmp").symlink_to("/dev/full")
    warnings = zmq.Context.instance().socket(zmq.SUB)
    warnings.setsockopt(zmq.SUBSCRIBE, b"ctl.warning.")
    warnings.setsockopt(zmq.SUBSCRIBE, b"ctl.skipped.")
    warnings.connect(night["cfg"].endpoints.publisher_pub)
    warnings.connect(night["cfg"].endpoints.composer_pub)
    follower = CscStateFollower(night["cfg"], role="tester")
    seen: list[tuple[str, dict[str, Any]]] = []

    def drain_warnings() -> list[tuple[str, dict[str, Any]]]:
        while warnings.poll(0):
            msg = decode(warnings.recv_multipart())
            seen.append((msg.topic, msg.payload))
        return seen

    try:
        time.sleep(0.3)
        _play(night, FAULT_NIGHTS[0])
        assert wait_for(lambda: f"cannot write {PENDING_IMAGE} (kept, retried every 5 s): [Errno 28] No space left on device"
                        in log(), 15.0), log()[-2000:]
        failed_at = time.monotonic()
        assert composer_status(night)["done"].get(PENDING_IMAGE) == [1, True]
        assert PENDING_IMAGE not in announced(night)
        # operators are warned; the CSC stays ENABLED, and an exposure taken meanwhile is composed and kept
        assert wait_for(lambda: any(t.startswith("ctl.warning.") and p["code"] == 1 and p["active"]
                                    for t, p in drain_warnings()), 15.0), seen
        assert follower.refresh(2.0) and follower.state == "ENABLED", follower.state
        _play(night, FAULT_NIGHTS[1])
        assert wait_for(lambda: composer_status(night)["done"].get(SKIPPED_IMAGE) == [1, True], 15.0)
        assert wait_for(lambda: f"cannot write {SKIPPED_IMAGE}" in log(), 15.0), log()[-2000:]
        assert follower.refresh(2.0) and follower.state == "ENABLED", follower.state
        assert not [p for t, p in drain_warnings() if t.startswith("ctl.skipped.")], "an exposure was skipped"
        # 2. the DAYOBS folder cannot be made: a regular file has its name (mkdir fails, also for root)
        mark = len(log())
        shutil.rmtree(day)
        day.write_text("not a folder\n")
        assert wait_for(lambda: f"still cannot write {PENDING_IMAGE}: [Errno 17] File exists" in log()[mark:], 15.0), \
            log()[-2000:]
        assert PENDING_IMAGE not in announced(night) and SKIPPED_IMAGE not in announced(night)
        # 3. the annex is usable again (after an outage of >= 11 s: two resends by the composer, two
        # retry cycles of the publisher): the kept headers are written and announced, once each
        time.sleep(max(0.0, failed_at + 11.5 - time.monotonic()))
        day.unlink()
        (day2 / f".{SKIPPED_IMAGE}.fits.{pub_pid}.tmp").unlink()
        assert wait_for(lambda: {PENDING_IMAGE, SKIPPED_IMAGE} <= set(announced(night)), 15.0), log()[-2000:]
        assert wait_for(lambda: any(t.startswith("ctl.warning.") and p["code"] == 1 and not p["active"]
                                    for t, p in drain_warnings()), 15.0), seen
        assert follower.refresh(2.0) and follower.state == "ENABLED", follower.state
    finally:
        warnings.close(linger=0)
        follower.close()
    for image, folder in ((PENDING_IMAGE, "20261125"), (SKIPPED_IMAGE, "20261126")):
        path = annex / folder / f"{image}.fits"
        ann = announced(night)[image]
        assert ann["url"].endswith(f"/LATISS/{folder}/{image}.fits")
        assert hashlib.md5(path.read_bytes()).hexdigest() == ann["checkSum"]
        h = primary(night, image)
        assert h["HDRSTAT"] == "COMPLETE" and h["OBSID"] == image and h["EXPTIME"] == 2.0
        # the side-car is written after the announcement: wait for it rather than race it
        assert wait_for(lambda image=image, folder=folder: (annex / folder / f"{image}.prov.json").exists(), 10.0)
        assert wait_for(lambda image=image: _readable_json(annex_path(night, image, ".prov.json")), 10.0)
        assert prov(night, image)["imageName"] == image
    time.sleep(0.5)
    versions = [(s["id"], s["version"]) for s in night["reader"].poll() if s["id"] in (PENDING_IMAGE, SKIPPED_IMAGE)]
    assert sorted(versions) == [(PENDING_IMAGE, 1.0), (SKIPPED_IMAGE, 1.0)]
    assert dep.pid("latiss:latiss-publisher") == pub_pid, "the publisher restarted"
    assert "Traceback" not in log()


def _readable_json(path: Path) -> bool:
    try:
        json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return True


def test_pending_header_is_retried_once_per_cycle(night: dict[str, Any]) -> None:
    """During an annex outage a kept header is tried once per 5-s cycle, however often it is resent."""
    lines = [ln for ln in night["dep"].log("latiss-publisher").splitlines()
             if PENDING_IMAGE in ln and "still cannot write" in ln]
    stamps = [ln[:19] for ln in lines]  # 'YYYY-MM-DD hh:mm:ss': one retry cycle lasts 5 s
    assert stamps, "the kept header was never retried"
    assert len(stamps) == len(set(stamps)), f"several retries of {PENDING_IMAGE} in one cycle: {stamps}\n" + "\n".join(lines)


# ================================================================================================
# Last: bad input that is fatal today (each test sees the restart of the process it killed)
# ================================================================================================


def _survives(night: dict[str, Any], program: str, send) -> Any:  # noqa: ANN001
    """Send bad input; the reply (or None); asserts the process kept its pid."""
    dep = night["dep"]
    dep.wait_running("LATISS", enable=False)
    before = dep.pid(f"latiss:{program}")
    reply = send()
    time.sleep(1.0)
    after = dep.pid(f"latiss:{program}")
    if after != before:
        dep.wait_running("LATISS", enable=False)
    assert after == before, f"{program} died and was restarted (pid {before} -> {after})"
    return reply


def test_composer_request_payload_not_an_object(night: dict[str, Any]) -> None:
    ep = night["cfg"].endpoints.composer_router
    reply = _survives(night, "latiss-composer", lambda: ask(ep, _good("ctl.request.status", ["op", "status"])))
    assert reply == {"error": "request payload is not an object"}


@pytest.mark.parametrize(
    ("request_", "error"),
    [
        ({"op": "status", "after": "listener"}, "bad request"),
        ({"op": "status", "after": {"sender": "x", "seq": 1e999}}, "bad request"),
        ({"op": "range", "after": {"sender": "nobody", "seq": 5}}, "bad request: 'key'"),
    ],
    ids=["after_not_an_object", "after_seq_infinite", "parked_range_without_key"],
)
def test_cache_request_with_malformed_after(night: dict[str, Any], request_: dict[str, Any], error: str) -> None:
    ep = night["cfg"].endpoints.cache_router
    reply = _survives(night, "latiss-cache", lambda: ask(ep, _good("ctl.request.x", request_), timeout=2.0))
    assert reply is not None and error in reply.get("error", ""), reply


def test_publisher_header_with_infinite_version(night: dict[str, Any]) -> None:
    ep = night["cfg"].endpoints.publisher_pull
    msg = _good("hdr.LATISS.AT_O_20261124_000096", {"imageName": "AT_O_20261124_000096", "version": INF,
                                                    "dayobs": "20261124", "hdus": []})
    _survives(night, "latiss-publisher", lambda: push(ep, [msg]))
    assert "header message rejected: cannot convert float infinity to integer" in night["dep"].log("latiss-publisher")
