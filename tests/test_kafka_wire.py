"""SAL over Kafka on the wire: the records real ts_salobj 8 wrote (tests/data/kafka/wire-samples.json)
decoded with our code, our samples of the same values encoded to the same bytes, keys, ackcmd, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from protocols import avro_schema as av
from protocols import kafka_wire as kw

DATA = Path(__file__).parent / "data" / "kafka"
WIRE = json.loads((DATA / "wire-samples.json").read_text())
BY_TOPIC = {r["topic"]: r for r in WIRE}


def _codec(topic_name: str) -> kw.AvroCodec:
    t = kw.parse_topic_name(topic_name)
    return kw.AvroCodec(av.avro_schema(t.component, t.sal_name))


#: Our schemas, registered under the ids the captured records carry.
REGISTRY = {r["schema_id"]: _codec(r["topic"]) for r in WIRE}


@pytest.mark.parametrize("record", WIRE, ids=lambda r: r["topic"])
def test_captured_record_decodes_to_its_captured_value(record: dict) -> None:
    schema_id, value = kw.decode_value(bytes.fromhex(record["value_hex"]), REGISTRY.get, topic=record["topic"])
    assert schema_id == record["schema_id"]
    assert value == record["decoded"]
    assert list(value) == list(record["decoded"])  # field order too


@pytest.mark.parametrize("record", WIRE, ids=lambda r: r["topic"])
def test_our_sample_of_the_same_values_encodes_to_the_same_bytes(record: dict) -> None:
    decoded = record["decoded"]
    codec = REGISTRY[record["schema_id"]]
    own = {k: v for k, v in decoded.items() if not k.startswith("private_")}
    # a writer of ours: its own fields, then the private fields set as ts_salobj sets them
    ours = kw.stamp(
        own,
        rev_code=kw.rev_code_of(codec),
        identity=decoded["private_identity"],
        origin=decoded["private_origin"],
        snd_stamp=decoded["private_sndStamp"],
        seq_num=decoded["private_seqNum"],
    )
    assert kw.encode_value(record["schema_id"], codec, ours) == bytes.fromhex(record["value_hex"])


@pytest.mark.parametrize("record", WIRE, ids=lambda r: r["topic"])
def test_key_is_written_exactly_as_captured(record: dict) -> None:
    t = kw.parse_topic_name(record["topic"])
    index = record["decoded"].get("salIndex") if av.is_indexed(t.component) else None
    assert t.key(index).decode() == record["key"]
    assert t.name == record["topic"]


def test_indexed_key_carries_the_index_between_name_and_topic() -> None:
    assert kw.record_key("Scheduler", "logevent_target", 2) == b'{ "name": "Scheduler", "index": 2, "topic": "logevent_target" }'
    assert kw.record_key("ESS", "temperature", 301) == b""


def test_topic_names_subjects_and_compaction() -> None:
    t = kw.kafka_topic("sal", "ATHeaderService", "logevent_largeFileObjectAvailable")
    assert t.name == "lsst.sal.ATHeaderService.logevent_largeFileObjectAvailable"
    assert t.subject == "lsst.sal.ATHeaderService.logevent_largeFileObjectAvailable-value"
    assert t.compacted and t.kind == "event"
    assert not kw.kafka_topic("sal", "ATPtg", "currentTargetStatus").compacted
    assert kw.parse_topic_name("lsst.test.night.ESS.temperature") == kw.KafkaTopic("test.night", "ESS", "temperature")


@pytest.mark.parametrize("name", ["", "lsst.sal.ATPtg", "other.sal.ATPtg.x", "lsst..ATPtg.x", "lsst.sal.ATPtg."])
def test_bad_topic_name_is_refused(name: str) -> None:
    with pytest.raises(kw.BadTopicName):
        kw.parse_topic_name(name)


def test_captured_command_gets_an_ackcmd_shaped_and_encoded_like_the_captured_one() -> None:
    command = BY_TOPIC["lsst.sal.ATHeaderService.command_start"]["decoded"]
    captured = BY_TOPIC["lsst.sal.ATHeaderService.ackcmd"]
    types = kw.header_service_command_types(extra=["setHeaderCards"])
    assert types["start"] == captured["decoded"]["cmdtype"] == 6
    assert types["setHeaderCards"] == 7
    values = kw.ackcmd_values(command, cmdtype=types["start"], ack=kw.CMD_COMPLETE, result="Done")
    codec = _codec("lsst.sal.ATHeaderService.ackcmd")
    # the CSC that answered was ATHeaderService in process 17824, writing at the captured time
    sent = captured["decoded"]["private_sndStamp"]
    ours = kw.stamp(values, rev_code=kw.rev_code_of(codec), identity="ATHeaderService", origin=17824, snd_stamp=sent)
    assert codec.complete(ours) == captured["decoded"]
    assert kw.encode_value(captured["schema_id"], codec, ours) == bytes.fromhex(captured["value_hex"])


def test_ackcmd_of_an_indexed_command_keeps_its_sal_index_and_the_commander() -> None:
    values = kw.ackcmd_values(
        {"salIndex": 2, "private_seqNum": 9, "private_identity": "me@host", "private_origin": 5},
        cmdtype=3,
        ack=kw.CMD_FAILED,
        error=1,
        result="no",
    )
    assert values["salIndex"] == 2 and values["private_seqNum"] == 9
    assert (values["identity"], values["origin"], values["ack"], values["error"]) == ("me@host", 5, -302, 1)


def test_command_types_follow_ts_salobj_sorted_sal_names() -> None:
    names = ["ackcmd", "command_b", "command_a", "logevent_x", "azimuth"]
    assert kw.command_types(names) == {"a": 2, "b": 3}


# --------------------------------------------------------------------------------------------------
# Bad records: typed errors, located
# --------------------------------------------------------------------------------------------------

HEARTBEAT = BY_TOPIC["lsst.sal.ATHeaderService.logevent_heartbeat"]
HB_BYTES = bytes.fromhex(HEARTBEAT["value_hex"])


@pytest.mark.parametrize("value", [b"", None, b"\x01" + HB_BYTES[1:], b"{json}"])
def test_no_magic_byte(value: bytes | None) -> None:
    with pytest.raises(kw.NoMagicByte):
        kw.decode_value(value, REGISTRY.get)


def test_unknown_schema_id_is_located() -> None:
    with pytest.raises(kw.UnknownSchemaId) as err:
        kw.decode_value(kw.frame(999, b"\x00"), REGISTRY.get, topic="lsst.sal.X.y", offset=42)
    assert "topic lsst.sal.X.y, offset 42" in str(err.value) and "999" in str(err.value)
    assert (err.value.topic, err.value.offset) == ("lsst.sal.X.y", 42)


def test_registry_failure_is_an_unknown_schema_id() -> None:
    def broken(_id: int) -> kw.AvroCodec:
        raise ConnectionError("registry down")

    with pytest.raises(kw.UnknownSchemaId, match="registry down"):
        kw.decode_value(HB_BYTES, broken)


@pytest.mark.parametrize("cut", range(1, len(HB_BYTES)))
def test_every_truncation_is_a_truncated_record(cut: int) -> None:
    with pytest.raises(kw.TruncatedBody):
        kw.decode_value(HB_BYTES[:cut], REGISTRY.get)


def test_trailing_bytes_are_malformed() -> None:
    with pytest.raises(kw.MalformedBody, match="3 bytes left"):
        kw.decode_value(HB_BYTES + b"abc", REGISTRY.get)


def test_invalid_utf8_string_is_malformed() -> None:
    codec = _codec("lsst.sal.ATHeaderService.logevent_heartbeat")
    body = bytearray(codec.encode({"private_identity": "ab"}))
    at = body.index(b"ab")
    body[at : at + 2] = b"\xff\xfe"
    with pytest.raises(kw.MalformedBody):
        kw.decode_value(kw.frame(36, bytes(body)), REGISTRY.get)


def test_schema_lacking_a_field_we_read() -> None:
    with pytest.raises(kw.MissingField, match="has no imageName") as err:
        kw.decode_value(HB_BYTES, REGISTRY.get, wanted=["heartbeat", "imageName"], topic="t", offset=1)
    assert err.value.offset == 1
    assert kw.decode_value(HB_BYTES, REGISTRY.get, wanted=["heartbeat"])[1]["heartbeat"] is False


def test_encode_refuses_unknown_fields_and_wrong_types() -> None:
    codec = _codec("lsst.sal.ATHeaderService.logevent_heartbeat")
    with pytest.raises(ValueError, match="no field"):
        codec.encode({"nope": 1})
    with pytest.raises(ValueError, match="cannot encode"):
        codec.encode({"private_seqNum": "one"})


def test_complete_fills_defaults_in_schema_order() -> None:
    codec = _codec("lsst.sal.ESS.temperature")
    full = codec.complete({"temperatureItem": (1.0,) * 16, "salIndex": 3})
    assert list(full) == list(codec.fields)
    assert full["temperatureItem"] == [1.0] * 16 and full["location"] == "" and full["salIndex"] == 3
