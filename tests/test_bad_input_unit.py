"""Bad input at the unit level: no process, no deployment.

Keyword reduction of hostile samples, card formatting, the cache's store, bad template cards in a
composed header, and the cache server (in this process, on loopback sockets) fed a listener's
garbage. Each bad value becomes an undefined keyword or a rejected message with its reason, never a
crash. Configuration files are in test_bad_input_config.py, a live deployment in
test_bad_input_deployment.py, annex faults in test_annex_faults.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from header.cards import CardError, format_card
from header.compose import CardTemplate, ExposureInputs, Templates, compose_header
from header.keywords import MAX_STRING, Resolved, clean_scalar, reduce_keyword
from procs.cache import CacheServer
from protocols.config import InstanceConfig, KeywordSource, load_instance, load_keyword_map, load_template, replace
from protocols.envelope import Sender

HS_ENV = ("HS_DDS_DOMAIN", "HS_PORT_OFFSET", "HS_ANNEX", "HS_STATE_DIR")
NAN, INF = float("nan"), float("inf")
Latiss = tuple[InstanceConfig, dict[str, KeywordSource]]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests see the configuration files alone, whatever HS_* overrides the caller exported."""
    for k in HS_ENV:
        monkeypatch.delenv(k, raising=False)


@pytest.fixture
def latiss(clean_env: None) -> Latiss:
    cfg = load_instance("LATISS")
    return cfg, load_keyword_map(cfg).by_keyword()

def sample(component: str, topic: str, data: dict[str, Any], t: float = 1000.0, index: int = 0) -> dict[str, Any]:
    return {"component": component, "topic": topic, "salIndex": index, "sndStamp": t, "data": data}


def reduce(src: KeywordSource, data: dict[str, Any], *, at: float = 1000.5, t: float = 1000.0,
           sensors: list[str] | None = None, max_age: float | None = 5.0, smp: dict[str, Any] | None = None) -> Resolved:
    smp = smp if smp is not None else sample(src.component, src.topic, data, t, src.index)
    return reduce_keyword(src, smp, at, sensors or ["R00_S00"], max_age)


@pytest.mark.parametrize(
    ("value", "reason"),
    [(NAN, "value is NaN"), (INF, "value is infinite"), (-INF, "value is infinite")],
    ids=["nan", "plus_inf", "minus_inf"],
)
def test_reduce_non_finite_number(latiss: Latiss, value: float, reason: str) -> None:
    _, km = latiss
    r = reduce(km["HUMIDITY"], {"relativeHumidityItem": value})
    assert not r.defined and r.value is None
    assert r.reason == reason
    assert r.provenance() == {"topic": "ESS.relativeHumidity:301", "time": 1000.0, "undefined": reason}


def test_reduce_string_where_number_expected(latiss: Latiss) -> None:
    _, km = latiss
    r = reduce(km["HUMIDITY"], {"relativeHumidityItem": "wet"})
    assert not r.defined
    assert "expected a number" in r.reason and "str" in r.reason


def test_reduce_non_ascii_string(latiss: Latiss) -> None:
    _, km = latiss
    r = reduce(km["OBJECT"], {"targetName": "Étoile polaire"})
    assert r.reason == "string holds non-ASCII or control characters"


def test_reduce_control_character(latiss: Latiss) -> None:
    _, km = latiss
    r = reduce(km["OBJECT"], {"targetName": "HD 164461\x07\n"})
    assert r.reason == "string holds non-ASCII or control characters"


def test_reduce_oversize_string(latiss: Latiss) -> None:
    _, km = latiss
    assert MAX_STRING == 544
    r = reduce(km["SCHNOTE"], {"note": "x" * 600})
    assert r.reason == "string of 600 characters is longer than 544"
    assert reduce(km["SCHNOTE"], {"note": "x" * 544}).value == "x" * 544  # the limit itself is fine


def test_reduce_missing_field(latiss: Latiss) -> None:
    _, km = latiss
    r = reduce(km["WINDSPD"], {"direction": 12.0})
    assert r.reason == "sample of ESS.airFlow has no field speed"


def test_reduce_enum_value_without_name(latiss: Latiss) -> None:
    _, km = latiss
    src = km["VIGNETTE"]
    r = reduce_keyword(src, sample(src.component, src.topic, {"vignetted": 7}), 1000.5, ["R00_S00"], None, window=[])
    assert r.reason == "enum value 7 has no name"
    r = reduce_keyword(src, sample(src.component, src.topic, {"vignetted": 2}), 1000.5, ["R00_S00"], None, window=[])
    assert r.value == "PARTIALLY"


def test_reduce_keyed_array_key_missing(latiss: Latiss) -> None:
    _, km = latiss
    r = reduce(km["GROUPID"], {"additionalKeys": "imageType:reason", "additionalValues": "OBJECT:science"})
    assert r.reason == "key groupId not in additionalKeys"


def test_reduce_keyed_array_values_shorter_than_keys(latiss: Latiss) -> None:
    _, km = latiss
    r = reduce(km["PROGRAM"], {"additionalKeys": "groupId:imageType:program", "additionalValues": "g1:OBJECT"})
    assert r.reason == "additionalValues has no entry for program"
    assert reduce(km["IMGTYPE"], {"additionalKeys": "groupId:imageType:program",
                                  "additionalValues": "g1:OBJECT"}).value == "OBJECT"


def test_reduce_indexed_array_element_out_of_range(latiss: Latiss) -> None:
    _, km = latiss
    r = reduce(km["AIRTEMP"], {"temperatureItem": []})
    assert r.reason == "temperatureItem has no element 0"


def test_reduce_indexed_array_element_nan(latiss: Latiss) -> None:
    """ESS arrays carry NaN in unused channels: the used one being NaN too is undefined, not 'nan'."""
    _, km = latiss
    r = reduce(km["AIRTEMP"], {"temperatureItem": [NAN] * 16})
    assert r.reason == "value is NaN"


def test_reduce_per_sensor_array_shorter_than_sensor_list(latiss: Latiss) -> None:
    _, km = latiss
    sensors = ["R22_S00", "R22_S01", "R22_S02"]
    r = reduce(km["CCDTEMP"], {"temp": [-95.1, -95.2], "location": ":".join(sensors)}, sensors=sensors)
    assert r.per_sensor == {"R22_S00": -95.1, "R22_S01": -95.2}
    assert any("R22_S02" in w for w in r.warnings), r.warnings


def test_reduce_per_sensor_bad_element_is_a_warning(latiss: Latiss) -> None:
    _, km = latiss
    sensors = ["R22_S00", "R22_S01"]
    r = reduce(km["CCDTEMP"], {"temp": [-95.1, NAN], "location": ":".join(sensors)}, sensors=sensors)
    assert r.per_sensor == {"R22_S00": -95.1}
    assert r.warnings == ["R22_S01: value is NaN"]


def test_reduce_stale_sample(latiss: Latiss) -> None:
    _, km = latiss
    r = reduce(km["HUMIDITY"], {"relativeHumidityItem": 40.0}, at=1012.0, t=1000.0, max_age=5.0)
    assert r.reason == "stale: sample is 12.0 s old (max 5 s)"
    assert r.sample_time == 1000.0


def test_reduce_sample_without_sndstamp(latiss: Latiss) -> None:
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



# -- bad template cards in a composed header ------------------------------------------------------


def _templates(cfg: InstanceConfig) -> Templates:
    return Templates(*(load_template(cfg, k) for k in ("primary", "sensor", "segment")))


def test_template_unknown_computed_value(latiss: Latiss) -> None:
    cfg, _ = latiss
    kmap = load_keyword_map(cfg)
    t = _templates(cfg)
    bad = Templates(t.primary + [CardTemplate(key="FOO", computed="no_such_value")], t.sensor, t.segment)
    h = compose_header(cfg, kmap, bad, ExposureInputs("AT_O_20261124_000001", {}, {}, {}), 1.8e9)
    foo = [c for c in h.hdus[0] if c.startswith("FOO ")]
    assert foo and foo[0][10:30].strip() == ""  # undefined
    assert any("FOO" in e and "no_such_value" in e for e in h.provenance["card_errors"])


def test_template_non_ascii_static_value(latiss: Latiss) -> None:
    cfg, _ = latiss
    kmap = load_keyword_map(cfg)
    t = _templates(cfg)
    bad = Templates(t.primary + [CardTemplate(key="FOO", value="Café")], t.sensor, t.segment)
    h = compose_header(cfg, kmap, bad, ExposureInputs("AT_O_20261124_000001", {}, {}, {}), 1.8e9)
    foo = [c for c in h.hdus[0] if c.startswith("FOO ")]
    assert len(foo) == 1 and foo[0][10:30].strip() == "" and "[undefined: string" in foo[0]
    assert h.provenance["card_errors"] == ["FOO: string 'Café' holds non-printable or non-ASCII characters"]
    assert all(c.isascii() and len(c) == 80 for hdu in h.hdus for c in hdu)



# -- the cache server fed garbage by a listener (in process; nothing outside can publish there) ----


@pytest.fixture
def cache_server(clean_env: None, tmp_path: Path) -> Iterator[CacheServer]:
    from tests.conftest import fresh_domain_and_offset

    _, offset = fresh_domain_and_offset()
    cfg = replace(load_instance("LATISS"), port_base=5550 + offset + 10, state_dir=tmp_path / "state",
                  annex=str(tmp_path / "annex"))
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


def test_cache_counts_listener_garbage(cache_server: CacheServer) -> None:
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


def test_cache_counts_a_truncated_sample_as_missing(cache_server: CacheServer) -> None:
    """A record whose CDR bytes are cut short is stored (its header is fine) but reads as missing."""
    snd = Sender("listener.LATISS@test:1:0")
    cache_server.on_sample(snd.frames("sal.ESS.airFlow", airflow_record(301, 1000.0, 3.0)))
    cache_server.on_sample(snd.frames("sal.ESS.airFlow", airflow_record(301, 1001.0, 5.0)[:40]))
    assert cache_server.store.as_of("ESS.airFlow:301", 1000.5)["data"]["speed"] == 3.0
    assert cache_server.store.as_of("ESS.airFlow:301", 1001.5) is None
    assert [d["data"]["speed"] for d in cache_server.store.between("ESS.airFlow:301", 0, 2000)] == [3.0]


def test_cache_survives_listener_payload_that_is_not_an_object(cache_server: CacheServer) -> None:
    snd = Sender("listener.LATISS@test:1:0")
    cache_server.on_sample(snd.frames("sal.ESS.airFlow", [1, 2, 3]))
    assert cache_server.counts["bad_messages"] == 1
