"""The payload of ``sal.*`` messages: one SAL sample as it came off the bus (record format 1).

The listener republishes each DDS sample unchanged: its serialized CDR bytes, behind a fixed
32-byte header with what every receiver needs without decoding the sample::

    offset  size  field
    0       4     magic b"HSR1" (record format 1)
    4       4     salIndex            int32, little-endian
    8       8     private_sndStamp    float64 TAI unix seconds (NaN when the sample has none)
    16      8     rcvStamp            float64 TAI unix seconds, when the listener took it
    24      8     DDS source timestamp int64 ns (-1 when the bus gave none)
    32      ...   the sample's CDR bytes, with their 4-byte encapsulation header

On Kafka the listener builds the same record from the decoded Avro value (the sample encoded as its
DDS type's CDR; the Kafka record time stands for the DDS source timestamp): one format for both
buses, so the cache and composer never know which bus a sample came from.

A ``sal.*`` payload may also be a batch of records of its topic (batch format 1), so that the
listener and the cache pay one message's cost for all the samples one DDS take returned::

    offset  size  field
    0       4     magic b"HSB1" (batch format 1)
    4       4     n, the number of records       uint32, little-endian, 1..MAX_BATCH
    8       4n    each record's length in bytes  uint32, little-endian
    8+4n    ...   the n records (format 1 above), back to back, nothing after them

Receivers take both forms (:func:`records` gives a payload's records either way); a single record
stays a plain record, so senders speaking format 1 only are understood unchanged.

Forwarding the bytes keeps the listener at a few microseconds per sample and lets the cache store
samples compactly; a sample is decoded only when someone reads it (:func:`decode`), with the types
of :mod:`protocols.sal`. :class:`CdrDecoder` reads the plain little-endian encodings Cyclone DDS
writes for SAL's final types (XCDR1 and XCDR2) with precompiled ``struct`` layouts, about ten times
faster than the generic deserializer, which remains the fallback for any other encoding.
"""

from __future__ import annotations

import math
import struct
from functools import lru_cache
from typing import Any

from protocols import sal

MAGIC = b"HSR1"
BATCH_MAGIC = b"HSB1"
MAX_BATCH = 65536  # records in one batch payload
_BATCH_HEAD = struct.Struct("<4sI")
HEADER = struct.Struct("<4siddq")
HEADER_SIZE = HEADER.size  # 32
NO_SOURCE = -1
#: Seconds a sample's private_sndStamp may be ahead of its reception by the listener (clock
#: offsets). A sample stamped further ahead comes from a broken clock: believed, it would move
#: every "latest time" forward (the cache's history horizon, the composer's deadline clock).
FUTURE_SLACK = 60.0

# Encapsulation identifiers (first two bytes of CDR, big-endian) this module reads itself.
CDR_LE = b"\x00\x01"  # XCDR1, little-endian: 8-byte types aligned to 8
PLAIN_CDR2_LE = b"\x00\x07"  # XCDR2 final types, little-endian: alignment capped at 4
_STAMP_AT = {CDR_LE: 12, PLAIN_CDR2_LE: 8}  # offset of private_sndStamp (follows the int32 salIndex)
_I32 = struct.Struct("<i")
_F64 = struct.Struct("<d")

_CODES = {
    "double": ("d", 8),
    "float": ("f", 4),
    "long": ("i", 4),
    "int": ("i", 4),
    "short": ("h", 2),
    "unsigned int": ("I", 4),
    "unsigned long": ("I", 4),
    "unsigned short": ("H", 2),
    "long long": ("q", 8),
    "unsigned long long": ("Q", 8),
    "byte": ("B", 1),
    "octet": ("B", 1),
    "boolean": ("?", 1),
}


class RecordError(ValueError):
    """A ``sal.*`` payload that is not a valid SAL record."""


def encode(cdr: bytes, sal_index: int, snd_stamp: float | None, rcv_stamp: float, source_ns: int | None) -> bytes:
    """Wrap one sample's CDR bytes in the record header."""
    snd = snd_stamp if snd_stamp is not None and math.isfinite(snd_stamp) else math.nan
    return HEADER.pack(MAGIC, sal_index, snd, rcv_stamp, NO_SOURCE if source_ns is None else source_ns) + cdr


def index_and_stamp(cdr: bytes) -> tuple[int, float] | None:
    """salIndex and private_sndStamp read straight from CDR bytes (the first two SAL fields), or
    None for an encoding this module does not read itself."""
    at = _STAMP_AT.get(cdr[:2])
    if at is None or len(cdr) < at + 8:
        return None
    return _I32.unpack_from(cdr, 4)[0], _F64.unpack_from(cdr, at)[0]


def peek(payload: bytes) -> tuple[int, float | None, float, int | None]:
    """(salIndex, sndStamp or None, rcvStamp, source ns or None) from the header alone."""
    if len(payload) < HEADER_SIZE or payload[:4] != MAGIC:
        raise RecordError(f"not a SAL record (format 1): {bytes(payload[:8])!r}")
    _, idx, snd, rcv, src = HEADER.unpack_from(payload)
    return idx, (snd if math.isfinite(snd) else None), rcv, (None if src == NO_SOURCE else src)


def encode_batch(records: list[bytes]) -> bytes:
    """Records of one topic as one batch payload (a single record is sent as itself instead)."""
    n = len(records)
    if not 0 < n <= MAX_BATCH:
        raise RecordError(f"a batch holds 1 to {MAX_BATCH} records, not {n}")
    return b"".join([_BATCH_HEAD.pack(BATCH_MAGIC, n), struct.pack(f"<{n}I", *map(len, records)), *records])


def records(payload: bytes) -> list[bytes]:
    """The records of a ``sal.*`` payload: itself if it is one record, those of a batch otherwise.

    A batch whose lengths do not add up to its size exactly is refused whole (RecordError);
    each record's own header is checked by :func:`peek` when it is read."""
    if payload[:4] != BATCH_MAGIC:
        return [payload]
    if len(payload) < _BATCH_HEAD.size:
        raise RecordError("batch shorter than its header")
    n = _BATCH_HEAD.unpack_from(payload)[1]
    table_end = _BATCH_HEAD.size + 4 * n
    if not 0 < n <= MAX_BATCH or table_end > len(payload):
        raise RecordError(f"batch of {n} records does not fit its {len(payload)} bytes")
    lengths = struct.unpack_from(f"<{n}I", payload, _BATCH_HEAD.size)
    if table_end + sum(lengths) != len(payload):
        raise RecordError(f"batch lengths add up to {sum(lengths)} bytes, not the {len(payload) - table_end} it carries")
    out = []
    pos = table_end
    for size in lengths:
        out.append(payload[pos : pos + size])
        pos += size
    return out


def decode(component: str, topic: str, payload: bytes) -> dict[str, Any]:
    """A record as the plain dict receivers work with::

        {component, topic, salIndex, sndStamp, srcStamp, rcvStamp, data: {field: value}}

    ``data`` holds every field of the sample but salIndex (private fields included)."""
    idx, snd, rcv, src = peek(payload)
    try:
        data = decoder(component, topic).decode(memoryview(payload)[HEADER_SIZE:])
    except sal.UnknownTopicError:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoding failure is a bad record, never a crash
        raise RecordError(f"{component}.{topic}: undecodable sample: {exc}") from None
    data.pop("salIndex", None)
    return {"component": component, "topic": topic, "salIndex": idx, "sndStamp": snd, "srcStamp": src, "rcvStamp": rcv, "data": data}


def split_topic(topic: str) -> tuple[str, str]:
    """``sal.<Component>.<topic>`` -> (Component, topic)."""
    parts = topic.split(".", 2)
    if len(parts) != 3 or parts[0] != "sal" or not parts[1] or not parts[2]:
        raise RecordError(f"not a SAL topic: {topic!r}")
    return parts[1], parts[2]


class _Run:
    """Consecutive fixed-size fields: one ``struct`` layout per starting alignment."""

    def __init__(self, fields: list[tuple[str, str, int, int]], align_max: int):
        self.fields = fields  # (name, code, size, count)
        self.align_max = align_max
        self.layouts: dict[int, tuple[struct.Struct, list[tuple[str, int]]]] = {}

    def layout(self, rel: int) -> tuple[struct.Struct, list[tuple[str, int]]]:
        key = rel % 8
        got = self.layouts.get(key)
        if got is None:
            fmt, pos = ["<"], key
            for _name, code, size, count in self.fields:
                a = min(size, self.align_max)
                pad = (-pos) % a
                if pad:
                    fmt.append(f"{pad}x")
                fmt.append(f"{count}{code}" if count > 1 else code)
                pos += pad + size * count
            got = (struct.Struct("".join(fmt)), [(n, c) for n, _code, _s, c in self.fields])
            self.layouts[key] = got
        return got


class CdrDecoder:
    """Decodes one SAL topic's CDR bytes into a dict of its fields, in declaration order."""

    def __init__(self, component: str, topic: str):
        st = sal.get_topic(component, topic)
        self.component, self.topic = component, topic
        fields = [("salIndex", "long", 1)] + [(n, t, 1) for n, t in sal.PRIVATE_FIELDS.items()]
        fields += [(f.name, f.type, f.count) for f in st.fields]
        self.plans = {enc: self._plan(fields, 8 if enc == CDR_LE else 4) for enc in (CDR_LE, PLAIN_CDR2_LE)}

    @staticmethod
    def _plan(fields: list[tuple[str, str, int]], align_max: int) -> list[Any]:
        steps: list[Any] = []
        run: list[tuple[str, str, int, int]] = []
        for name, typ, count in fields:
            if typ in ("string", "char"):
                if run:
                    steps.append(_Run(run, align_max))
                    run = []
                steps.append((name, count))
            else:
                code, size = _CODES[typ]
                run.append((name, code, size, count))
        if run:
            steps.append(_Run(run, align_max))
        return steps

    def decode(self, cdr: bytes | memoryview) -> dict[str, Any]:
        plan = self.plans.get(bytes(cdr[:2]))
        if plan is None:  # the DDS binding's types (Cyclone DDS imported on this first use)
            cls = sal.idl_class(self.component, self.topic)
            return sal.sample_to_dict(cls.deserialize(bytes(cdr)))
        out: dict[str, Any] = {}
        pos = 4
        for step in plan:
            if isinstance(step, _Run):
                layout, names = step.layout(pos - 4)
                values = layout.unpack_from(cdr, pos)
                pos += layout.size
                i = 0
                for name, count in names:
                    if count > 1:
                        out[name] = list(values[i : i + count])
                        i += count
                    else:
                        out[name] = values[i]
                        i += 1
            else:
                name, count = step
                strings = []
                for _ in range(count):
                    pos += (-(pos - 4)) % 4
                    (n,) = struct.unpack_from("<I", cdr, pos)
                    if n < 1 or pos + 4 + n > len(cdr):
                        raise RecordError(f"string field {name} runs past the sample")
                    strings.append(bytes(cdr[pos + 4 : pos + 3 + n]).decode("utf-8"))
                    pos += 4 + n
                out[name] = strings if count > 1 else strings[0]
        if pos > len(cdr):
            raise RecordError("sample shorter than its type")
        return out


@lru_cache(maxsize=None)
def decoder(component: str, topic: str) -> CdrDecoder:
    return CdrDecoder(component, topic)


def encode_sample(component: str, topic: str, record: dict[str, Any]) -> bytes:
    """A record built from its dict form (as :func:`decode` returns it): for tools and tests that
    speak for a listener."""
    idx = int(record.get("salIndex", 0))
    sample = sal.make_sample(component, topic, idx, **dict(record.get("data", {})))
    return encode(sample.serialize(), idx, record.get("sndStamp"), float(record.get("rcvStamp") or 0.0), record.get("srcStamp"))
