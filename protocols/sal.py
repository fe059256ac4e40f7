"""SAL topic definitions for the DDS bus, built from the project's copy of the ts_xml interface.

``sal_topics.yaml`` (in this folder) holds topic names, fields, types and counts exactly as the
observatory defines them. Every DDS type the Header Service reads or writes is derived from it here,
so a plain Cyclone DDS program that builds its types from the same YAML interoperates with us.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
TOPICS_YAML = HERE / "sal_topics.yaml"
LOOPBACK_XML = HERE / "cyclonedds-loopback.xml"

#: Fields every SAL topic carries besides its own (header-facts.md, "CSC behaviour").
PRIVATE_FIELDS: dict[str, str] = {
    "private_sndStamp": "double",
    "private_rcvStamp": "double",
    "private_seqNum": "long",
    "private_identity": "string",
    "private_origin": "long",
}

_PY_DEFAULT = {"string": "", "boolean": False}


def ensure_loopback_dds() -> None:
    """Point Cyclone DDS at the loopback-only configuration unless the operator chose another.

    Must run before the first ``cyclonedds`` import creates a domain.
    """
    os.environ.setdefault("CYCLONEDDS_URI", LOOPBACK_XML.as_uri())


@dataclass(frozen=True)
class SalField:
    name: str
    type: str
    count: int = 1
    units: str | None = None
    description: str | None = None

    @property
    def is_array(self) -> bool:
        return self.count > 1

    def default(self) -> Any:
        base = _PY_DEFAULT.get(self.type, 0.0 if self.type in ("double", "float") else 0)
        return [base] * self.count if self.is_array else base


@dataclass(frozen=True)
class SalTopic:
    """One SAL topic: component, short name and kind (event, telemetry, command)."""

    component: str
    name: str
    kind: str
    fields: tuple[SalField, ...] = field(default_factory=tuple)
    description: str = ""

    @property
    def dds_name(self) -> str:
        """The DDS topic name, e.g. ``ATCamera_logevent_startIntegration``."""
        if self.kind == "event":
            return f"{self.component}_logevent_{self.name}"
        if self.kind == "command":
            return f"{self.component}_command_{self.name}"
        if self.kind == "ackcmd":
            return f"{self.component}_ackcmd"
        return f"{self.component}_{self.name}"

    @property
    def key(self) -> str:
        """Short stable key used on ZeroMQ and in the cache: ``Component.topic``."""
        return f"{self.component}.{self.name}"

    def field_map(self) -> dict[str, SalField]:
        """Fields by name (built once per topic: the composer looks types up for every keyword)."""
        fmap = self.__dict__.get("_field_map")
        if fmap is None:
            fmap = {f.name: f for f in self.fields}
            object.__setattr__(self, "_field_map", fmap)
        return fmap


class UnknownTopicError(KeyError):
    """A configuration or scenario names a topic that the SAL interface does not define."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the message readable
        return str(self.args[0])


ACKCMD_FIELDS = (
    SalField("ack", "long", description="Acknowledgement code"),
    SalField("error", "long", description="An error code; only relevant if ack=FAILED"),
    SalField("result", "string", description="Message"),
    SalField("identity", "string", description="private_identity field of the command being acknowledged"),
    SalField("origin", "long", description="private_origin field of the command being acknowledged"),
    SalField("cmdtype", "long", description="Index of command in alphabetical list of commands, with 0 being the first"),
    SalField(
        "timeout", "double", units="second",
        description="Estimated remaining duration of command; only relevant if ack=INPROGRESS",
    ),
)


def _parse_fields(raw: list[dict[str, Any]]) -> tuple[SalField, ...]:
    out = []
    for f in raw or []:
        count = f.get("count", 1)
        count = int(count) if isinstance(count, int) else 1
        out.append(SalField(f["name"], f["type"], count, f.get("units"), f.get("description")))
    return tuple(out)


@lru_cache(maxsize=1)
def _raw() -> dict[str, Any]:
    # libyaml's loader when PyYAML has it: every process reads this file at start, 13 ms instead of 110
    with open(TOPICS_YAML) as fh:
        return yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


@lru_cache(maxsize=None)
def get_topic(component: str, name: str) -> SalTopic:
    """Look up a topic; generic topics (``logevent_summaryState``...) exist for every component.

    ``name`` is the short name for component topics (``startIntegration``) and the generic name for
    SALGeneric ones (``logevent_largeFileObjectAvailable``, ``command_start``, ``ackcmd``); the
    short form ``largeFileObjectAvailable`` of a generic event is accepted too.
    """
    raw = _raw()
    comp = raw.get(component, {})
    if name in comp:
        spec = comp[name]
        fields = _parse_fields(spec.get("fields"))
        return SalTopic(component, name, spec.get("kind", "event"), fields, spec.get("description", ""))
    if name == "ackcmd":
        return SalTopic(component, "ackcmd", "ackcmd", ACKCMD_FIELDS, "Command acknowledgement")
    # Header Service CSCs also have the topics of the ``HeaderService`` section (named like SALGeneric's).
    sections = [raw["SALGeneric"]] + ([raw.get("HeaderService", {})] if component.endswith("HeaderService") else [])
    for generic in sections:
        for gname in (name, f"logevent_{name}"):
            if gname in generic:
                kind, short = gname.split("_", 1)
                kind = "event" if kind == "logevent" else "command"
                spec = generic[gname]
                return SalTopic(component, short, kind, _parse_fields(spec.get("fields")), spec.get("description", ""))
    known = sorted(comp) if comp else []
    raise UnknownTopicError(
        f"SAL topic {component}.{name} is not defined in {TOPICS_YAML.name}"
        + (f" (component {component} has: {', '.join(known)})" if known else " (unknown component; only generic topics)")
    )


def _idl_type(sal_type: str, count: int) -> Any:
    from cyclonedds.idl import types as t

    base = {
        "double": t.float64,
        "float": t.float32,
        "long": t.int32,
        "int": t.int32,
        "short": t.int16,
        "unsigned int": t.uint32,
        "unsigned long": t.uint32,
        "unsigned short": t.uint16,
        "long long": t.int64,
        "unsigned long long": t.uint64,
        "byte": t.uint8,
        "octet": t.uint8,
        "char": str,
        "boolean": bool,
        "string": str,
    }[sal_type]
    return t.array[base, count] if count > 1 else base


@lru_cache(maxsize=None)
def idl_class(component: str, name: str) -> type:
    """The Cyclone DDS data type of a topic (salIndex is the key, private fields included)."""
    from cyclonedds.idl import make_idl_struct

    topic = get_topic(component, name)
    fields: dict[str, Any] = {"salIndex": _idl_type("long", 1)}
    for fname, ftype in PRIVATE_FIELDS.items():
        fields[fname] = _idl_type(ftype, 1)
    for f in topic.fields:
        fields[f.name] = _idl_type(f.type, f.count)
    return make_idl_struct(
        topic.dds_name,
        f"{component}::{topic.dds_name.split('_', 1)[1]}",
        fields,
        field_annotations={"salIndex": {"key": True}},
    )


EVENT_HISTORY = 100  # samples of each event a late-joining reader receives


def qos_for(kind: str) -> Any:
    """DDS-era SAL QoS: reliable, keep-last 100; events transient-local, the rest volatile.

    An event writer serves its last 100 samples to a reader that joins late (the durability
    service's history; Cyclone's default of 1 would hand a restarted listener only the latest
    startIntegration and lose every exposure begun while it was down)."""
    from cyclonedds.core import Policy, Qos
    from cyclonedds.util import duration

    policies = [Policy.Reliability.Reliable(duration(seconds=1)), Policy.History.KeepLast(EVENT_HISTORY)]
    if kind == "event":
        policies.append(Policy.Durability.TransientLocal)
        policies.append(Policy.DurabilityService(cleanup_delay=0, history=Policy.History.KeepLast(EVENT_HISTORY),
                                                 max_samples=-1, max_instances=-1, max_samples_per_instance=-1))  # fmt: skip
    else:
        policies.append(Policy.Durability.Volatile)
    return Qos(*policies)


def reader_qos(kind: str, depth: int = 10000) -> Any:
    """QoS of the Header Service's own readers: SAL's, with a deep history so that a pause of the
    reading process (garbage collection, a burst) does not overwrite samples before they are taken."""
    from cyclonedds.core import Policy, Qos
    from cyclonedds.util import duration

    policies = [Policy.Reliability.Reliable(duration(seconds=1)), Policy.History.KeepLast(depth)]
    policies.append(Policy.Durability.TransientLocal if kind == "event" else Policy.Durability.Volatile)
    return Qos(*policies)


def make_sample(component: str, name: str, sal_index: int = 0, /, **values: Any) -> Any:
    """Build a sample with defaults for every field not given (SAL writers fill all fields)."""
    topic = get_topic(component, name)
    cls = idl_class(component, name)
    fmap = topic.field_map()
    unknown = set(values) - set(fmap) - set(PRIVATE_FIELDS)
    if unknown:
        raise ValueError(f"{topic.key} has no field(s) {', '.join(sorted(unknown))}")
    kwargs: dict[str, Any] = {"salIndex": sal_index}
    for fname, ftype in PRIVATE_FIELDS.items():
        kwargs[fname] = values.pop(fname, "" if ftype == "string" else 0)
    for f in topic.fields:
        kwargs[f.name] = values[f.name] if f.name in values else f.default()
    return cls(**kwargs)


def sample_to_dict(sample: Any) -> dict[str, Any]:
    """A DDS sample as a plain JSON-ready dict (arrays as lists, NaN/inf preserved as floats)."""
    out = {}
    for name in sample.__annotations__:
        v = getattr(sample, name)
        if isinstance(v, (list, tuple)):
            v = list(v)
        out[name] = v
    return out


def is_finite_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
