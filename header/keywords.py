"""Keyword reduction: from cached SAL samples to header values (pure, no I/O).

A *sample* here is the dict the listener publishes: ``{"component", "topic", "salIndex",
"sndStamp", "data": {field: value}}``. Each function returns a :class:`Resolved` value carrying
where it came from (provenance) or why it is undefined, so nothing is ever invented.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from protocols.config import KeywordSource

MAX_STRING = 68 * 8  # longest string we write (CONTINUE keeps it legal; beyond this is a bad sample)


@dataclass
class Resolved:
    """A keyword's value (or per-sensor values) with provenance or the reason it is undefined."""

    value: Any = None
    per_sensor: dict[str, Any] | None = None
    topic: str | None = None
    sample_time: float | None = None
    reason: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def defined(self) -> bool:
        return self.reason is None

    def provenance(self) -> dict[str, Any]:
        out: dict[str, Any] = {"topic": self.topic, "time": self.sample_time}
        if self.reason:
            out["undefined"] = self.reason
        if self.warnings:
            out["warnings"] = self.warnings
        return out


def split_list(value: Any) -> list[str]:
    """SAL packs per-sensor strings and key lists as ':'-separated strings."""
    if isinstance(value, list):
        return [str(v) for v in value]
    if not isinstance(value, str) or value == "":
        return []
    return value.split(":")


def clean_scalar(value: Any) -> tuple[Any, str | None]:
    """A value fit for a FITS card, or None with the reason (NaN, inf, wrong type, bad text)."""
    if value is None:
        return None, "no value"
    if isinstance(value, bool):
        return value, None
    if isinstance(value, int):
        return value, None
    if isinstance(value, float):
        if math.isnan(value):
            return None, "value is NaN"
        if math.isinf(value):
            return None, "value is infinite"
        return value, None
    if isinstance(value, str):
        if len(value) > MAX_STRING:
            return None, f"string of {len(value)} characters is longer than {MAX_STRING}"
        if not all(32 <= ord(c) <= 126 for c in value):
            return None, "string holds non-ASCII or control characters"
        return value, None
    return None, f"unsupported value type {type(value).__name__}"


def _scaled(src: KeywordSource, value: Any) -> Any:
    if src.scale is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value) * src.scale
    return value


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _time_series_element(sample: dict[str, Any], values: list[Any], at: float) -> tuple[Any, str | None]:
    """The element of a 100-sample array (10 ms apart from cRioTimestamp) closest to ``at``, or
    None with the reason when the array has no usable time origin."""
    data = sample.get("data") or {}
    t0 = data.get("cRioTimestamp") or sample.get("sndStamp")
    if not values:
        return None, "time series is empty"
    offset = (at - float(t0)) / 0.01 if _finite(t0) and _finite(at) else math.nan
    if not math.isfinite(offset):
        return None, f"time series has no usable time origin (cRioTimestamp {t0!r:.30})"
    return values[round(min(max(offset, 0.0), len(values) - 1.0))], None


def reduce_keyword(
    src: KeywordSource,
    sample: dict[str, Any] | None,
    at: float,
    sensors: list[str],
    max_age: float | None,
    window: list[dict[str, Any]] | None = None,
) -> Resolved:
    """Resolve one keyword from the sample valid at collection time ``at`` (TAI s).

    ``window`` holds every sample between start and end of the exposure for monitor keywords;
    ``sensors`` is the sensor order of the camera (ccdLocation) for per-sensor arrays.
    """
    res = Resolved(topic=src.topic_key)
    if sample is None and not (src.monitor and window):
        res.reason = f"no {src.component}.{src.topic} sample at or before the collection time"
        return res
    if sample is not None:
        res.sample_time = sample.get("sndStamp") if _finite(sample.get("sndStamp")) else None
        if max_age is not None and res.sample_time is None:
            res.reason = f"{src.component}.{src.topic} sample has no private_sndStamp: its age is unknown"
            return res
        if max_age is not None and res.sample_time is not None and at - res.sample_time > max_age:
            res.reason = f"stale: sample is {at - res.sample_time:.1f} s old (max {max_age:g} s)"
            return res
    data = sample.get("data") if sample is not None else {}
    if not isinstance(data, dict):
        res.reason = f"sample of {src.component}.{src.topic} has no data"
        return res
    if src.monitor:
        datas = [s["data"] for s in (window or []) if isinstance(s, dict) and isinstance(s.get("data"), dict)]
        return _reduce_monitor(src, res, datas + ([data] if data else []))
    if src.field not in data:
        res.reason = f"sample of {src.component}.{src.topic} has no field {src.field}"
        return res
    raw = data[src.field]
    kind = src.kind
    why = _type_mismatch(src, raw)
    if why:
        res.reason = why
        return res
    if kind in ("ccd_array", "ccd_array_str"):
        return _reduce_per_sensor(src, res, raw, data, sensors)
    if kind == "keyed_array":
        keys = split_list(data.get("additionalKeys", ""))
        vals = split_list(raw)
        if src.key not in keys:
            res.reason = f"key {src.key} not in additionalKeys"
            return res
        i = keys.index(src.key)
        if i >= len(vals):
            res.reason = f"additionalValues has no entry for {src.key}"
            return res
        raw = vals[i]
    elif kind == "indexed_array":
        if not isinstance(raw, list) or src.element is None or src.element >= len(raw):
            res.reason = f"{src.field} has no element {src.element}"
            return res
        raw = raw[src.element]
    elif kind == "time_series":
        raw, why = _time_series_element(sample or {}, raw if isinstance(raw, list) else [raw], at)
        if why:
            res.reason = why
            return res
    elif kind == "enum":
        return _enum(src, res, raw)
    if isinstance(raw, list):
        raw = raw[0] if raw else None
    value, why = clean_scalar(_scaled(src, raw))
    if why:
        res.reason = why
        return res
    if src.convert == "tai_iso":
        from header.astro import tai_iso

        from header.astro import usable_time

        if not usable_time(value):
            res.reason = f"{src.field} is not a timestamp: {value!r:.40}"
            return res
        value = tai_iso(float(value))
    res.value = value
    return res


_NUMERIC = {"double", "float", "long", "int", "short", "long long", "unsigned int", "unsigned long", "unsigned short", "byte", "octet"}


def _type_mismatch(src: KeywordSource, raw: Any) -> str | None:
    """A value whose Python type contradicts its SAL field type (a corrupted or foreign sample)."""
    from protocols import sal

    ftype = sal.get_topic(src.component, src.topic).field_map()[src.field].type
    values = raw if isinstance(raw, list) else [raw]
    if ftype in _NUMERIC and src.kind not in ("keyed_array", "ccd_array_str"):
        for v in values:
            if isinstance(v, (str, bool)) or not isinstance(v, (int, float)):
                return f"expected a number ({ftype}), got {type(v).__name__} {v!r:.30}"
    if ftype == "string":
        for v in values:
            if not isinstance(v, str):
                return f"expected a string, got {type(v).__name__} {v!r:.30}"
    return None


def _enum(src: KeywordSource, res: Resolved, raw: Any) -> Resolved:
    assert src.enum is not None
    if not _finite(raw) or int(raw) != raw:
        res.reason = f"enum value {raw!r} is not an integer"
        return res
    if int(raw) not in src.enum:
        res.reason = f"enum value {int(raw)} has no name"
        return res
    res.value = src.enum[int(raw)]
    return res


def _reduce_monitor(src: KeywordSource, res: Resolved, datas: list[dict[str, Any]]) -> Resolved:
    values = []
    for d in datas:
        v = d.get(src.field)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            values.append(v)
    if not values:
        res.reason = f"no valid {src.field} sample during the exposure"
        return res
    extreme = max(values) if src.monitor == "max" else min(values)
    if src.kind == "enum":
        return _enum(src, res, extreme)
    res.value = _scaled(src, extreme)
    return res


def ccd_of(location: str) -> str | None:
    """The CCD a wavefront half belongs to (``R00_SW0`` and ``R00_SW1`` are the two halves of the
    CCD ``R00_SW``): the name under which per-CCD telemetry such as focal_plane_Ccd lists it."""
    raft, _, slot = location.rpartition("_")
    return f"{raft}_SW" if raft and slot in ("SW0", "SW1") else None


def _reduce_per_sensor(src: KeywordSource, res: Resolved, raw: Any, data: dict[str, Any], sensors: list[str]) -> Resolved:
    order = split_list(data.get("ccdLocation") or data.get("location") or "") or sensors
    values = split_list(raw) if src.kind == "ccd_array_str" or isinstance(raw, str) else list(raw if isinstance(raw, list) else [raw])
    per: dict[str, Any] = {}
    wanted = set(sensors)
    halves: dict[str, list[str]] = {}  # CCD -> its wavefront halves the array does not list by name
    listed = set(order)
    for loc in sensors:
        ccd = ccd_of(loc)
        if ccd and loc not in listed:
            halves.setdefault(ccd, []).append(loc)
    for i, ccd_or_loc in enumerate(order):
        for loc in halves.get(ccd_or_loc, [ccd_or_loc]):
            _reduce_one(src, res, per, values, i, loc, wanted)
    if not per:
        res.reason = f"{src.field} has no value for any reported sensor"
        return res
    res.per_sensor = per
    return res


def _reduce_one(src: KeywordSource, res: Resolved, per: dict[str, Any], values: list[Any], i: int, loc: str, wanted: set[str]) -> None:
    """Element ``i`` of a per-sensor array as sensor ``loc``'s value (or a warning why not)."""
    if loc not in wanted:
        return
    if i >= len(values):
        res.warnings.append(f"{loc}: {src.field} has no element {i} (array of {len(values)})")
        return
    value, why = clean_scalar(_scaled(src, values[i]))
    if why:
        res.warnings.append(f"{loc}: {why}")
        return
    per[loc] = value
