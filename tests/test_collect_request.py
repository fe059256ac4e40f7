"""The composer's cache request and the cache's answer to it (in process, real records)."""

from __future__ import annotations

from dataclasses import replace

from protocols import sal, salrecord
from protocols.config import load_instance, load_keyword_map
from procs.cache import Store
from procs.composer import AUX_FIELDS, collection_request
from protocols.messages import CollectRequest, Window


def test_request_names_every_keyword_topic_with_its_fields() -> None:
    cfg = load_instance("LATISS")
    kmap = load_keyword_map(cfg)
    req = collection_request(cfg, kmap, {"start": 100.0, "readout": 130.0, "end": 133.0})
    asked = {k for keys in req.topics.values() for k in keys}
    for src in kmap.keywords:
        if src.component == cfg.camera and src.topic in ("startIntegration", "startReadout", "endReadout",
                                                          "imageReadoutParameters", "endOfImageTelemetry"):
            continue
        assert src.topic_key in asked, src.keyword
        assert src.field in req.fields[src.topic_key]
        assert set(AUX_FIELDS) <= set(req.fields[src.topic_key])


def test_requests_do_not_share_state() -> None:
    cfg = load_instance("LATISS")
    kmap = load_keyword_map(cfg)
    points = {"start": 100.0, "readout": 130.0, "end": 133.0}
    first = collection_request(cfg, kmap, points)
    first.topics.pop("start")
    second = collection_request(cfg, kmap, points)
    assert "start" in second.topics and second.topics["start"]


def _record(t: float, **fields: object) -> bytes:
    s = sal.make_sample("ESS", "airFlow", 301, private_sndStamp=t, **fields)
    return salrecord.encode(s.serialize(), 301, t, t, None)


def test_cache_answers_with_the_fields_asked_for() -> None:
    store = Store(100, 3600.0)
    store.add(b"sal.ESS.airFlow", _record(10.0, speed=3.5, direction=90.0))
    store.add(b"sal.ESS.airFlow", _record(20.0, speed=4.5, direction=180.0))
    req = CollectRequest({"start": 15.0}, {"start": ["ESS.airFlow:301"]}, [Window("ESS.airFlow:301", 0.0, 30.0)],
                         {"ESS.airFlow:301": ["speed"]})  # fmt: skip
    got = store.collect(req)
    snap = got["snapshots"]["start"]["ESS.airFlow:301"]
    assert snap["data"] == {"speed": 3.5} and snap["sndStamp"] == 10.0
    assert [s["data"] for s in got["windows"]["ESS.airFlow:301"]] == [{"speed": 3.5}, {"speed": 4.5}]
    # without fields, whole samples; and the stored sample itself is never trimmed
    whole = store.collect(replace(req, fields={}))
    assert whole["snapshots"]["start"]["ESS.airFlow:301"]["data"]["direction"] == 90.0
