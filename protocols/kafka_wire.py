"""SAL over Kafka, the bytes: topic names, record keys, Confluent framing and Avro bodies.

This is how ts_salobj 8 writes a SAL sample (checked against the records it wrote, tests/data/kafka):

- Kafka topic ``lsst.<subname>.<Component>.<sal_name>``, registry subject ``<topic>-value``;
- key: empty for telemetry; for events, commands and ackcmd the JSON text
  ``{ "name": "<Component>", "topic": "<sal_name>" }`` (``"index": N`` between the two for an indexed
  component), written exactly so, since compaction keeps the last record per key;
- value: ``0x00``, the schema id (4 bytes, big-endian), then the schemaless Avro body.

Everything here is pure and raises a typed :class:`WireError` for a record that cannot be read, so a
reader can count it, log it with its topic and offset, and go on.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from protocols import avro_schema as av
from protocols.timescale import utc_from_tai

MAGIC = 0
HEADER = struct.Struct(">bI")

#: ts_salobj ackcmd ``ack`` codes (SalRetCode) used in ackcmd construction.
CMD_ACK, CMD_INPROGRESS, CMD_STALLED, CMD_COMPLETE = 300, 301, 302, 303
CMD_NOPERM, CMD_NOACK, CMD_FAILED, CMD_ABORTED, CMD_TIMEOUT = -300, -301, -302, -303, -304

#: The commands ts_xml gives every Header Service CSC; ts_salobj's cmdtype is a command's index in
#: the sorted SAL names of the component (``ackcmd`` first, then ``command_*``, then events).
TS_XML_HEADER_SERVICE_COMMANDS = ("disable", "enable", "exitControl", "setLogLevel", "standby", "start")


# --------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------


class WireError(ValueError):
    """A Kafka record we cannot turn into a SAL sample; ``reason`` says why in a few words."""

    reason = "unreadable record"

    def __init__(self, detail: str, topic: str | None = None, offset: int | None = None):
        self.detail = detail
        self.topic = topic
        self.offset = offset
        super().__init__(detail)

    def located(self, topic: str | None, offset: int | None) -> WireError:
        """The same error with the record's place filled in (for the log line)."""
        self.topic = topic if self.topic is None else self.topic
        self.offset = offset if self.offset is None else self.offset
        return self

    def __str__(self) -> str:
        where = ""
        if self.topic is not None:
            where = f" (topic {self.topic}" + (f", offset {self.offset})" if self.offset is not None else ")")
        return f"{self.reason}: {self.detail}{where}"


class NoMagicByte(WireError):
    reason = "no Confluent magic byte"


class UnknownSchemaId(WireError):
    reason = "unknown schema id"


class TruncatedBody(WireError):
    reason = "truncated record"


class MalformedBody(WireError):
    reason = "malformed Avro body"


class MissingField(WireError):
    reason = "schema lacks a field we read"


class BadTopicName(WireError):
    reason = "not a SAL Kafka topic name"


class SchemaSourceUnavailable(RuntimeError):
    """The schema registry cannot be asked right now: not the record's fault, so it is not counted as
    bad; the reader retries the record later."""


# --------------------------------------------------------------------------------------------------
# Names and keys
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KafkaTopic:
    """One SAL topic of one component on Kafka."""

    subname: str
    component: str
    sal_name: str

    @property
    def name(self) -> str:
        return f"lsst.{self.subname}.{self.component}.{self.sal_name}"

    @property
    def subject(self) -> str:
        """Schema registry subject of the topic's values."""
        return f"{self.name}-value"

    @property
    def kind(self) -> str:
        return sal_kind(self.sal_name)

    @property
    def compacted(self) -> bool:
        """ts_salobj creates event topics with ``cleanup.policy=compact``."""
        return self.kind == "event"

    def key(self, sal_index: int | None = None) -> bytes:
        return record_key(self.component, self.sal_name, sal_index)


def sal_kind(sal_name: str) -> str:
    if sal_name == "ackcmd":
        return "ackcmd"
    if sal_name.startswith("logevent_"):
        return "event"
    if sal_name.startswith("command_"):
        return "command"
    return "telemetry"


def kafka_topic(subname: str, component: str, sal_name: str) -> KafkaTopic:
    return KafkaTopic(subname, component, sal_name)


def parse_topic_name(name: str) -> KafkaTopic:
    """``lsst.sal.ATCamera.logevent_endReadout`` -> its parts; the subname may contain dots."""
    parts = name.split(".")
    if len(parts) < 4 or parts[0] != "lsst" or not all(parts):
        raise BadTopicName(repr(name), topic=name)
    return KafkaTopic(".".join(parts[1:-2]), parts[-2], parts[-1])


def record_key(component: str, sal_name: str, sal_index: int | None = None) -> bytes:
    """The key ts_salobj writes: empty for telemetry, else its JSON text (index only when indexed)."""
    if sal_kind(sal_name) == "telemetry":
        return b""
    if sal_index is None:
        return f'{{ "name": "{component}", "topic": "{sal_name}" }}'.encode()
    return f'{{ "name": "{component}", "index": {int(sal_index)}, "topic": "{sal_name}" }}'.encode()


# --------------------------------------------------------------------------------------------------
# Framing and Avro
# --------------------------------------------------------------------------------------------------


def frame(schema_id: int, body: bytes) -> bytes:
    return HEADER.pack(MAGIC, schema_id) + body


def unframe(value: bytes | None) -> tuple[int, bytes]:
    """(schema id, Avro body) of a Confluent-framed value."""
    if not value:
        raise NoMagicByte("empty value")
    if value[0] != MAGIC:
        raise NoMagicByte(f"first byte is {value[0]:#04x}")
    if len(value) < HEADER.size:
        raise TruncatedBody(f"{len(value)} bytes, shorter than the 5-byte Confluent header")
    return HEADER.unpack_from(value)[1], value[HEADER.size :]


class AvroCodec:
    """One Avro schema, parsed once, encoding and decoding schemaless bodies."""

    def __init__(self, schema: Mapping[str, Any]):
        # imported here: the pure helpers (names, keys, cmdtype) serve DDS instances too, which
        # should not hold fastavro (6 MB resident) nor need the ``kafka`` extra installed
        try:
            import fastavro
        except ImportError:  # pragma: no cover - a DDS-only installation
            raise RuntimeError("SAL over Kafka needs the 'kafka' extra (fastavro, confluent-kafka)") from None
        self._fastavro = fastavro
        self.schema = dict(schema)
        self.parsed = fastavro.parse_schema(self.schema)
        self.fields = tuple(f["name"] for f in self.schema["fields"])
        self._defaults = {f["name"]: f.get("default") for f in self.schema["fields"]}

    def complete(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Every field of the record, in schema order, defaults for those not given."""
        unknown = set(values) - set(self.fields)
        if unknown:
            raise ValueError(f"{self.schema['name']} has no field(s) {', '.join(sorted(unknown))}")
        out = {}
        for name in self.fields:
            v = values.get(name, self._defaults[name])
            out[name] = list(v) if isinstance(v, (list, tuple)) else v
        return out

    def encode(self, values: Mapping[str, Any]) -> bytes:
        out = io.BytesIO()
        try:
            self._fastavro.schemaless_writer(out, self.parsed, self.complete(values))
        except (TypeError, ValueError, OverflowError, struct.error) as exc:
            raise ValueError(f"cannot encode {self.schema['name']}: {exc}") from exc
        return out.getvalue()

    def decode(self, body: bytes) -> dict[str, Any]:
        fo = io.BytesIO(body)
        try:
            value = self._fastavro.schemaless_reader(fo, self.parsed, None)
        except (EOFError, IndexError) as exc:
            raise TruncatedBody(f"{len(body)}-byte body ends inside the record ({exc})") from None
        except (ValueError, TypeError, OverflowError, UnicodeDecodeError, struct.error, MemoryError) as exc:
            raise MalformedBody(f"{type(exc).__name__}: {exc}") from None
        if fo.tell() != len(body):
            raise MalformedBody(f"{len(body) - fo.tell()} bytes left after the record")
        if not isinstance(value, dict):
            raise MalformedBody("not a record")
        return value


def encode_value(schema_id: int, codec: AvroCodec, values: Mapping[str, Any]) -> bytes:
    return frame(schema_id, codec.encode(values))


def decode_value(
    value: bytes | None,
    codec_for_id: Callable[[int], AvroCodec | None],
    wanted: Iterable[str] = (),
    *,
    topic: str | None = None,
    offset: int | None = None,
) -> tuple[int, dict[str, Any]]:
    """(schema id, decoded record) of a framed value, decoded with the writer's schema.

    ``codec_for_id`` returns the codec of a registered schema id or None; ``wanted`` are the fields
    the caller reads, and a writer's schema without one of them is refused (:class:`MissingField`).
    Every failure is a :class:`WireError` located at ``topic``/``offset``.
    """
    try:
        schema_id, body = unframe(value)
        try:
            codec = codec_for_id(schema_id)
        except (WireError, SchemaSourceUnavailable):
            raise
        except Exception as exc:  # noqa: BLE001 (a registry failure is the record's problem, reported)
            raise UnknownSchemaId(f"id {schema_id}: {type(exc).__name__}: {exc}") from None
        if codec is None:
            raise UnknownSchemaId(f"id {schema_id} is not in the schema registry")
        missing = [f for f in wanted if f not in codec.fields]
        if missing:
            raise MissingField(f"schema id {schema_id} ({codec.schema.get('name')}) has no {', '.join(missing)}")
        return schema_id, codec.decode(body)
    except WireError as exc:
        raise exc.located(topic, offset) from None


# --------------------------------------------------------------------------------------------------
# Samples: private fields, commands and their acknowledgement
# --------------------------------------------------------------------------------------------------


def stamp(
    values: Mapping[str, Any],
    *,
    rev_code: str,
    identity: str,
    origin: int,
    snd_stamp: float,
    seq_num: int | None = None,
) -> dict[str, Any]:
    """A sample's values with the private fields a ts_salobj writer sets at write time.

    ``private_efdStamp`` is the UTC twin of ``private_sndStamp`` (TAI); ``private_kafkaStamp`` equals
    ``private_sndStamp``, as ts_salobj writes them. ``seq_num`` None leaves ``private_seqNum`` as given
    (an ackcmd carries its command's).
    """
    out = dict(values)
    out.update(
        private_sndStamp=snd_stamp,
        private_efdStamp=utc_from_tai(snd_stamp),
        private_kafkaStamp=snd_stamp,
        private_revCode=rev_code,
        private_identity=identity,
        private_origin=int(origin),
    )
    if seq_num is not None:
        out["private_seqNum"] = int(seq_num)
    return out


def command_types(sal_names: Iterable[str]) -> dict[str, int]:
    """Command name -> ts_salobj's ``cmdtype``: its index among the component's sorted SAL names."""
    names = sorted(set(sal_names))
    return {n[len("command_") :]: i for i, n in enumerate(names) if n.startswith("command_")}


def header_service_command_types(extra: Iterable[str] = ()) -> dict[str, int]:
    """cmdtype of each Header Service command as ts_salobj numbers ts_xml's; commands of our own
    (``setHeaderCards``), which ts_salobj does not know, are numbered after them."""
    types = command_types(["ackcmd", *(f"command_{c}" for c in TS_XML_HEADER_SERVICE_COMMANDS)])
    for name in extra:
        types.setdefault(name, max(types.values()) + 1)
    return types


def ackcmd_values(
    command: Mapping[str, Any],
    *,
    cmdtype: int,
    ack: int,
    error: int = 0,
    result: str = "",
    timeout: float = 0.0,
) -> dict[str, Any]:
    """The ackcmd that answers a decoded command record, as ts_salobj's controller writes it.

    ``private_seqNum`` is the command's (its id), ``identity``/``origin`` are the commander's
    ``private_identity``/``private_origin``, ``salIndex`` is kept for an indexed component. The
    writer's own private fields are added by :func:`stamp` with ``seq_num=None``.
    """
    values: dict[str, Any] = {
        "private_seqNum": int(command.get("private_seqNum", 0)),
        "ack": int(ack),
        "error": int(error),
        "result": str(result),
        "identity": str(command.get("private_identity", "")),
        "origin": int(command.get("private_origin", 0)),
        "cmdtype": int(cmdtype),
        "timeout": float(timeout),
    }
    if "salIndex" in command:
        values["salIndex"] = int(command["salIndex"])
    return values


def rev_code_of(codec: AvroCodec) -> str:
    return av.rev_code(codec.schema)
