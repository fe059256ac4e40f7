"""The composition's memoized pieces (header.memo.BoundedMemo) are keyed by values, never by id():
equal configurations loaded twice share them, a changed one never reads a stale piece, two
instances' nights composed in one process stay apart; and a sensor's header is served from its
own HDU (its position), whatever its EXTNAME says."""

from __future__ import annotations

import json
from typing import Any

import pytest

from header.compose import ComposedHeader, ExposureInputs, Templates, compose_header
from header.memo import BoundedMemo
from procs.composer import collection_points, collection_request
from protocols.config import CardTemplate, load_instance, load_keyword_map, load_template, replace
from tools.bench.stages import play


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HS_TSTAND", "HS_ANNEX", "HS_STATE_DIR", "HS_DDS_DOMAIN", "HS_PORT_OFFSET"):
        monkeypatch.delenv(var, raising=False)


def test_bounded_memo_keeps_the_newest_entries_up_to_its_size() -> None:
    memo: BoundedMemo[int] = BoundedMemo(3)
    for i in range(5):
        assert memo.put(("k", i), i) == i
    assert len(memo) == 3 and memo.get(("k", 1)) is None and memo.get(("k", 4)) == 4
    assert list(memo) == [("k", 2), ("k", 3), ("k", 4)]
    with pytest.raises(ValueError):
        BoundedMemo(0)


def first_exposure(instrument: str) -> tuple[Any, ExposureInputs, float]:
    """The configuration and inputs of a bench night's first header, as the composer has them."""
    for bench, stage, name, ev, tai in play(instrument, 1):
        if stage == "end":
            points = collection_points(ev)
            reply = json.loads(json.dumps(bench.store.collect(collection_request(bench.cfg, bench.kmap, points))))
            return bench, ExposureInputs(name, ev, points, reply["snapshots"], reply["windows"]), tai + 0.01
    raise AssertionError("no exposure")


def fresh_templates(cfg: Any) -> Templates:
    return Templates(*(load_template(cfg, k) for k in ("primary", "sensor", "segment")))


def payload(h: ComposedHeader) -> bytes:
    return h.payload_json()


def test_equal_configurations_loaded_again_compose_the_same_bytes() -> None:
    bench, inputs, now = first_exposure("LSSTCam")
    first = compose_header(bench.cfg, bench.kmap, bench.templates, inputs, now)
    cfg = load_instance("LSSTCam")
    again = compose_header(cfg, load_keyword_map(cfg), fresh_templates(cfg), inputs, now)
    assert payload(again) == payload(first)


def test_a_changed_template_entry_is_never_served_from_the_memo() -> None:
    bench, inputs, now = first_exposure("LSSTCam")
    compose_header(bench.cfg, bench.kmap, bench.templates, inputs, now)  # the memos hold the first version
    changed = fresh_templates(bench.cfg)
    for kind in ("sensor", "segment"):
        entries = getattr(changed, kind)
        i = next(i for i, t in enumerate(entries) if t.key == "CCDSLOT")
        entries[i] = replace(entries[i], comment=f"changed in the {kind} template")
    h = compose_header(bench.cfg, bench.kmap, changed, inputs, now)
    sensor = [c for c in h.hdus[1] if c.startswith("CCDSLOT")]
    assert sensor and "changed in the sensor template" in sensor[0]
    segment = h.context.sensor_header(h.hdu_names[1])["segments"][0]["cards"]
    assert any(c.startswith("CCDSLOT") and "changed in the segment template" in c for c in segment)


def test_two_instances_nights_in_one_process_do_not_share_telemetry() -> None:
    """LATISS's and ComCam's bench nights stamp their weather samples alike with other values: each
    header has its own night's values whichever was composed first."""
    composed = {}
    for order in (("LATISS", "ComCam"), ("ComCam", "LATISS")):
        for instrument in order:
            bench, inputs, now = first_exposure(instrument)
            composed.setdefault(instrument, set()).add(payload(compose_header(bench.cfg, bench.kmap, bench.templates, inputs, now)))
    assert all(len(v) == 1 for v in composed.values())


def test_a_sensor_header_is_its_own_hdu_whatever_its_extname() -> None:
    """A sensor template naming the HDU by raft (EXTNAME = RAFTBAY, shared by the raft's sensors):
    each sensor's header still carries that sensor's own cards."""
    bench, inputs, now = first_exposure("LSSTCam")
    templates = fresh_templates(bench.cfg)
    templates.sensor = [
        CardTemplate(key="EXTNAME", computed="raftbay", comment="raft of the sensor") if t.key == "EXTNAME" else t
        for t in templates.sensor
    ]
    h = compose_header(bench.cfg, bench.kmap, templates, inputs, now)
    assert h.context is not None
    for location in ("R22_S11", "R22_S12", "R01_S00"):
        served = h.context.sensor_header(location)
        cards = {c[:8].strip(): c for c in served["cards"]}
        assert "'R22" in cards["EXTNAME"] or "'R01" in cards["EXTNAME"]
        assert f"'{location.split('_')[1]}" in cards["CCDSLOT"], (location, cards["CCDSLOT"])
        own = h.hdus[h.hdu_names.index(location)]
        assert [c for c in own if c.startswith("CCDSLOT")] == [cards["CCDSLOT"]]
