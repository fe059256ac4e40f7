"""SAL records (the listener's payload): CDR bytes forwarded unchanged and decoded on demand."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import sal, salrecord
from protocols.envelope import EnvelopeError, Sender, decode


def _topics() -> list[tuple[str, str]]:
    out = []
    for component, topics in sal._raw().items():
        if component in ("SALGeneric", "HeaderService"):
            continue
        for name, spec in topics.items():
            if spec.get("kind", "event") in ("event", "telemetry"):
                out.append((component, name))
    return out


TOPICS = _topics()


def _value(f: sal.SalField, draw: st.DrawFn) -> object:
    if f.type in ("double", "float"):
        base = st.floats(allow_nan=True, allow_infinity=True, width=64 if f.type == "double" else 32)
    elif f.type in ("string", "char"):
        base = st.text(max_size=12)
    elif f.type == "boolean":
        base = st.booleans()
    else:
        base = st.integers(min_value=0, max_value=127)
    return [draw(base) for _ in range(f.count)] if f.count > 1 else draw(base)


def _same(a: object, b: object) -> bool:
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return a == b and type(a) is type(b)


@st.composite
def samples(draw: st.DrawFn) -> tuple[str, str, object]:
    component, name = draw(st.sampled_from(TOPICS))
    topic = sal.get_topic(component, name)
    values = {f.name: _value(f, draw) for f in topic.fields}
    stamp = draw(st.floats(min_value=1.0, max_value=4e9))
    index = draw(st.integers(min_value=0, max_value=2**31 - 1))
    identity = draw(st.text(max_size=20))
    return component, name, sal.make_sample(component, name, index, private_sndStamp=stamp, private_identity=identity, **values)


@settings(max_examples=300, deadline=None)
@given(samples(), st.booleans())
def test_fast_decoder_agrees_with_cyclone_dds(drawn: tuple[str, str, object], xcdr2: bool) -> None:
    component, name, sample = drawn
    cdr = sample.serialize(use_version_2=xcdr2)
    expected = sal.sample_to_dict(sal.idl_class(component, name).deserialize(cdr))
    got = salrecord.decoder(component, name).decode(cdr)
    assert list(got) == list(expected)
    for k in expected:
        assert _same(expected[k], got[k]), (k, expected[k], got[k])
    assert salrecord.index_and_stamp(cdr) == (sample.salIndex, sample.private_sndStamp)


def test_record_round_trip_through_the_envelope() -> None:
    s = sal.make_sample("ATCamera", "startIntegration", 0, private_sndStamp=1.8e9, imageName="AT_O_20261125_000001",
                        exposureTime=30.0)
    rec = salrecord.encode(s.serialize(), 0, 1.8e9, 1.8e9 + 0.002, 123456789)
    assert len(rec) == salrecord.HEADER_SIZE + len(s.serialize())
    msg = decode(Sender("listener.LATISS@h:1:0").frames("sal.ATCamera.startIntegration", rec))
    p = msg.payload
    assert (p["component"], p["topic"], p["salIndex"], p["sndStamp"], p["rcvStamp"], p["srcStamp"]) == (
        "ATCamera", "startIntegration", 0, 1.8e9, 1.8e9 + 0.002, 123456789)
    assert p["data"]["imageName"] == "AT_O_20261125_000001" and p["data"]["exposureTime"] == 30.0
    assert "salIndex" not in p["data"] and p["data"]["private_sndStamp"] == 1.8e9


def test_sample_without_a_stamp_reads_as_none() -> None:
    s = sal.make_sample("ESS", "airFlow", 301)
    idx, snd, _, src = salrecord.peek(salrecord.encode(s.serialize(), 301, math.inf, 1.0, None))
    assert (idx, snd, src) == (301, None, None)


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (b'{"component": "ATCamera"}', "not a SAL record"),
        (b"HSR1", "not a SAL record"),
        (salrecord.HEADER.pack(b"HSR1", 0, 1.0, 1.0, -1) + b"\x00\x01\x00\x00\x01", "undecodable"),
        (salrecord.HEADER.pack(b"HSR1", 0, 1.0, 1.0, -1) + b"\x00\x01\x00\x00" + b"\x00" * 8 + struct.pack("<I", 999),
         "undecodable"),
    ],
)
def test_bad_records_are_refused_with_the_reason(payload: bytes, why: str) -> None:
    frames = Sender("listener.LATISS@h:1:0").frames("sal.ATCamera.startIntegration", payload)
    with pytest.raises(EnvelopeError, match=why):
        decode(frames)


def test_unknown_topic_is_refused() -> None:
    s = sal.make_sample("ESS", "airFlow", 301)
    frames = Sender("listener.LATISS@h:1:0").frames("sal.ESS.noSuchTopic", salrecord.encode(s.serialize(), 1, 1.0, 1.0, None))
    with pytest.raises(EnvelopeError, match="noSuchTopic"):
        decode(frames)


def test_other_encodings_fall_back_to_the_generic_decoder() -> None:
    """Big-endian CDR (another vendor's writer) is not read by the fast path but still decodes."""
    s = sal.make_sample("ESS", "airFlow", 301, private_sndStamp=5.0, speed=2.5)
    from cyclonedds.idl._support import Endianness

    cdr = s.serialize(endianness=Endianness.Big)
    assert cdr[:2] == b"\x00\x00" and salrecord.index_and_stamp(cdr) is None
    assert salrecord.decoder("ESS", "airFlow").decode(cdr)["speed"] == 2.5
