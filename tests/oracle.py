"""The test oracle: what the simulator published for a keyword, reduced as keyword-sources.md says.

Computed from hs-sim's own plan of the night (not from the Header Service's code), so a header
value that matches it is the value that was on the bus at the collection point.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from header.astro import tai_iso
from protocols.config import InstanceConfig, KeywordSource
from tools.runner import Deployment
from tools.sim.night import Emission


@dataclass
class PlayedNight:
    """A deployment after the night was played: what was planned, what the bus carried, what was announced."""

    dep: Deployment
    cfg: InstanceConfig
    images: list[str]
    emissions: list[Emission]
    announced: dict[str, dict[str, Any]]  # imageName -> its largeFileObjectAvailable
    annex: Path
    instrument: str = "LATISS"


def camera_event(emissions: Sequence[Emission], topic: str, image: str) -> Emission:
    return next(e for e in emissions if e.topic == topic and e.fields.get("imageName") == image)


def expected_value(emissions: Sequence[Emission], src: KeywordSource, image: str, sensor_index: int = 0) -> Any:
    """The value the simulator published for a keyword (``emissions``: the night as the bus carried
    it), reduced as keyword-sources.md says."""
    em = emissions
    points = {
        "start": camera_event(em, "startIntegration", image).tai,
        "readout": camera_event(em, "startReadout", image).tai,
        "end": camera_event(em, "endOfImageTelemetry", image).tai,
    }
    at = points[src.when]
    camera_topics = ("startIntegration", "startReadout", "endOfImageTelemetry", "imageReadoutParameters")
    if src.component.endswith("Camera") and src.topic in camera_topics:
        sample = camera_event(em, src.topic, image)
    else:
        cands = [e for e in em if e.component == src.component and e.topic == src.topic
                 and e.sal_index == src.index and e.tai <= at]
        if not cands:
            return None
        sample = cands[-1]
    fields = sample.fields
    if src.monitor:
        window = [e.fields[src.field] for e in em if e.component == src.component and e.topic == src.topic
                  and points["start"] <= e.tai <= points["end"]] + [fields[src.field]]
        v = max(window) if src.monitor == "max" else min(window)
        return src.enum[int(v)] if src.enum else v
    raw = fields[src.field]
    if src.kind == "keyed_array":
        keys = fields["additionalKeys"].split(":")
        return raw.split(":")[keys.index(src.key)]
    if src.kind in ("ccd_array", "ccd_array_str"):
        i = sensor_index
        return raw.split(":")[i] if isinstance(raw, str) else (raw[i] if isinstance(raw, list) else raw)
    if src.kind == "indexed_array":
        raw = raw[src.element]
    if src.kind == "time_series":
        t0 = fields.get("cRioTimestamp", sample.tai)
        raw = raw[min(max(int(round((at - t0) / 0.01)), 0), len(raw) - 1)]
    if src.kind == "enum":
        return src.enum[int(raw)]
    if isinstance(raw, list):
        raw = raw[0]
    if src.scale:
        raw = raw * src.scale
    if src.convert == "tai_iso":
        return tai_iso(raw)
    return raw


