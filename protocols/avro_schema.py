"""Avro schemas of SAL topics, generated from ``sal_topics.yaml`` the way ts_xml generates them.

ts_salobj 8 writes every SAL sample to Kafka as an Avro record whose schema ts_xml derives from the
interface XML; readers and the schema registry only accept records of that exact shape. We derive the
same schema from our own topic definitions: record name = the SAL name (``logevent_summaryState``),
namespace ``lsst.sal.<Component>``, the private fields first (``salIndex`` ahead of them for an indexed
component), then the topic's own fields, each ``{name, type, default, description, units}`` in that
key order. ``private_revCode`` is ts_xml's ``get_revcode``: the first 8 hex digits of the MD5 of
``json.dumps(schema, indent=4)``, so a byte-identical schema gives the same revCode.

ts_xml writes the namespace as ``lsst.sal.<Component>`` whatever ``LSST_TOPIC_SUBNAME`` is (only
Kafka topic names and registry subjects carry the subname), and so do we by default.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from typing import Any

from protocols.sal import SalField, SalTopic, get_topic

#: Components with a salIndex (``IndexEnumeration`` in ts_xml's SALSubsystems.xml) among those the
#: Header Service reads or writes; their records carry ``salIndex`` as their first field.
INDEXED_COMPONENTS = frozenset({"DIMM", "ESS", "MTHexapod", "Scheduler"})

#: SAL type -> Avro type (ts_xml 28: SAL ``long`` is 32 bits, so ``int``).
AVRO_TYPES: dict[str, str] = {
    "boolean": "boolean",
    "byte": "int",
    "octet": "int",
    "short": "int",
    "int": "int",
    "long": "int",
    "unsigned short": "int",
    "long long": "long",
    "unsigned int": "long",
    "unsigned long": "long",
    "float": "float",
    "double": "double",
    "string": "string",
    "char": "string",
}

_SCALAR_DEFAULT: dict[str, Any] = {"boolean": False, "int": 0, "long": 0, "float": 0.0, "double": 0.0, "string": ""}

SAL_INDEX_FIELD = SalField(
    "salIndex", "long", units="unitless", description="SAL index (only present for indexed SAL components)"
)

#: The private fields every SAL record carries, in ts_xml's order.
PRIVATE_FIELDS: tuple[SalField, ...] = (
    SalField("private_sndStamp", "double", units="second", description="Time of instance publication"),
    SalField("private_rcvStamp", "double", units="second", description="Time of instance reception"),
    SalField(
        "private_efdStamp",
        "double",
        units="second",
        description="UTC time for EFD timestamp. An integer (the number of leap seconds) different from private_sndStamp.",
    ),
    SalField(
        "private_kafkaStamp", "double", units="second", description="TAI time at which the Kafka message was created."
    ),
    SalField("private_seqNum", "long", units="unitless", description="Sequence number"),
    SalField("private_revCode", "string", units="unitless", description="Revision hashcode"),
    SalField(
        "private_identity",
        "string",
        units="unitless",
        description="Identity of publisher: SAL component name for a CSC or user@host for a user",
    ),
    SalField("private_origin", "long", units="unitless", description="Process ID of publisher"),
)


class SchemaError(ValueError):
    """A topic cannot be turned into an Avro schema (unknown SAL type, unknown SAL name)."""


def sal_name(topic: SalTopic) -> str:
    """ts_xml's SAL name: ``logevent_<name>``, ``command_<name>``, ``ackcmd`` or the telemetry name."""
    return topic.dds_name[len(topic.component) + 1 :]


def is_indexed(component: str) -> bool:
    return component in INDEXED_COMPONENTS


def topic_for_sal_name(component: str, name: str) -> SalTopic:
    """The topic a SAL name designates (``logevent_endReadout``, ``command_start``, ``ackcmd``, ``vacuum``)."""
    kind, _, short = name.partition("_")
    expected = {"logevent": "event", "command": "command"}.get(kind)
    if name == "ackcmd":
        return get_topic(component, "ackcmd")
    if expected is None:
        topic = get_topic(component, name)
    else:
        try:
            topic = get_topic(component, short)
        except KeyError:
            topic = get_topic(component, name)
    if sal_name(topic) != name:
        raise SchemaError(f"{component}.{name} is a {topic.kind} named {sal_name(topic)}, not {name}")
    return topic


def field_schema(f: SalField) -> dict[str, Any]:
    """One field as ts_xml writes it; a string with a count stays a scalar string (as ts_sal does)."""
    try:
        scalar = AVRO_TYPES[f.type]
    except KeyError:
        raise SchemaError(f"field {f.name}: SAL type {f.type!r} has no Avro type") from None
    default = _SCALAR_DEFAULT[scalar]
    if f.count > 1 and scalar != "string":
        avro_type: Any = {"type": "array", "items": scalar}
        default = [default] * f.count
    else:
        avro_type = scalar
    return {
        "name": f.name,
        "type": avro_type,
        "default": default,
        "description": f.description or "",
        "units": f.units or "unitless",
    }


def topic_fields(topic: SalTopic) -> tuple[SalField, ...]:
    """All fields of a topic's record, in order: salIndex (indexed components), private, own."""
    head = (SAL_INDEX_FIELD,) if is_indexed(topic.component) else ()
    return head + PRIVATE_FIELDS + topic.fields


@lru_cache(maxsize=None)
def _schema_json(component: str, name: str, namespace_root: str) -> str:
    topic = topic_for_sal_name(component, name)
    schema = {
        "type": "record",
        "name": name,
        "namespace": f"lsst.{namespace_root}.{component}",
        "fields": [field_schema(f) for f in topic_fields(topic)],
        "description": topic.description or "",
    }
    return json.dumps(schema)


def schema_for_topic(topic: SalTopic, namespace_root: str = "sal") -> dict[str, Any]:
    """The Avro schema (a fresh dict) of a topic."""
    return json.loads(_schema_json(topic.component, sal_name(topic), namespace_root))


def avro_schema(component: str, name: str, namespace_root: str = "sal") -> dict[str, Any]:
    """The Avro schema of a topic given by its SAL name (``logevent_endReadout``, ``vacuum``, ``ackcmd``)."""
    return json.loads(_schema_json(component, name, namespace_root))


def schema_text(schema: dict[str, Any]) -> str:
    """The schema as ts_xml's schema files are written (``indent=1``, no final newline)."""
    return json.dumps(schema, indent=1)


def rev_code(schema: dict[str, Any]) -> str:
    """ts_xml's ``get_revcode``: first 8 hex digits of the MD5 of ``json.dumps(schema, indent=4)``."""
    return hashlib.md5(json.dumps(schema, indent=4).encode("utf-8")).hexdigest()[:8]


def field_names(schema: dict[str, Any]) -> list[str]:
    return [f["name"] for f in schema["fields"]]
