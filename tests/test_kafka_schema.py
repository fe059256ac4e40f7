"""Our Avro schemas against the ones ts_xml generates (tests/data/kafka/schemas, copied from the facts)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from protocols import avro_schema as av
from protocols import sal

DATA = Path(__file__).parent / "data" / "kafka"
GOLDEN = sorted((DATA / "schemas").glob("*.json"))
WIRE = json.loads((DATA / "wire-samples.json").read_text())


def _split(path: Path) -> tuple[str, str]:
    _lsst, _sal, component, name = path.stem.split(".", 3)
    return component, name


def _shape(schema: dict) -> list[tuple]:
    return [(f["name"], json.dumps(f["type"]), json.dumps(f["default"])) for f in schema["fields"]]


def test_every_golden_schema_is_there() -> None:
    assert len(GOLDEN) == 102


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.stem)
def test_schema_matches_ts_xml(path: Path) -> None:
    component, name = _split(path)
    golden_text = path.read_text()
    golden = json.loads(golden_text)
    ours = av.avro_schema(component, name)
    # the least: name, namespace, field names, order, types and defaults
    assert (ours["type"], ours["name"], ours["namespace"]) == (golden["type"], golden["name"], golden["namespace"])
    assert _shape(ours) == _shape(golden)
    # the aim, reached: the very bytes ts_xml writes, so the revCode is the same too
    assert av.schema_text(ours) == golden_text
    assert av.rev_code(ours) == av.rev_code(golden)


@pytest.mark.parametrize("record", WIRE, ids=lambda r: r["topic"])
def test_rev_code_is_the_one_ts_salobj_wrote(record: dict) -> None:
    _lsst, _sal, component, name = record["topic"].split(".", 3)
    assert av.rev_code(av.avro_schema(component, name)) == record["decoded"]["private_revCode"]


def test_indexed_component_has_sal_index_first_and_others_none() -> None:
    assert av.field_names(av.avro_schema("ESS", "temperature"))[:2] == ["salIndex", "private_sndStamp"]
    assert "salIndex" not in av.field_names(av.avro_schema("ATPtg", "currentTargetStatus"))


def test_ackcmd_of_an_indexed_component_carries_sal_index() -> None:
    names = av.field_names(av.avro_schema("Scheduler", "ackcmd"))
    assert names[0] == "salIndex" and names[-7:] == ["ack", "error", "result", "identity", "origin", "cmdtype", "timeout"]


def test_namespace_root_follows_the_caller_and_changes_the_rev_code() -> None:
    default = av.avro_schema("ATHeaderService", "logevent_heartbeat")
    other = av.avro_schema("ATHeaderService", "logevent_heartbeat", namespace_root="test")
    assert other["namespace"] == "lsst.test.ATHeaderService"
    assert av.rev_code(other) != av.rev_code(default)


def test_our_own_command_gets_a_schema_of_the_same_form() -> None:
    schema = av.avro_schema("ATHeaderService", "command_setHeaderCards")
    assert schema["name"] == "command_setHeaderCards"
    assert av.field_names(schema)[-2:] == ["cards", "mode"]


def test_schema_is_a_fresh_copy() -> None:
    a = av.avro_schema("ATCamera", "logevent_endReadout")
    a["fields"].clear()
    assert av.avro_schema("ATCamera", "logevent_endReadout")["fields"]


@pytest.mark.parametrize(
    "component,name",
    [("ATCamera", "logevent_vacuum"), ("ATCamera", "command_endReadout"), ("ATCamera", "nosuch"), ("Nobody", "x")],
)
def test_wrong_sal_name_is_refused(component: str, name: str) -> None:
    with pytest.raises((av.SchemaError, sal.UnknownTopicError)):
        av.avro_schema(component, name)


def test_unknown_sal_type_is_refused_with_the_field_named() -> None:
    with pytest.raises(av.SchemaError, match="field x: SAL type 'quaternion'"):
        av.field_schema(sal.SalField("x", "quaternion"))


def test_string_with_a_count_stays_a_string_as_in_ts_sal() -> None:
    f = av.field_schema(sal.SalField("s", "string", count=3))
    assert f["type"] == "string" and f["default"] == ""


def test_dds_types_do_not_depend_on_descriptions() -> None:
    cls = sal.idl_class("ATCamera", "endOfImageTelemetry")
    names = list(cls.__annotations__)
    assert names[:6] == ["salIndex", *sal.PRIVATE_FIELDS]
    assert names[6:] == [f.name for f in sal.get_topic("ATCamera", "endOfImageTelemetry").fields]
