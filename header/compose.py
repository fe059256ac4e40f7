"""Compose one image's FITS header from its camera events and the cached telemetry (pure).

The composer process gathers an :class:`ExposureInputs` (the exposure's own camera events and the
cache's snapshots at each collection point) and calls :func:`compose_header`; everything here is
deterministic in its inputs, so real-time and catch-up produce identical values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from header import astro, geometry
from header.cards import CardError, format_card, structural_extension, structural_primary
from header.fitsfile import encode_hdu, split_cards
from header.keywords import Resolved, reduce_keyword, split_list
from protocols.config import CardTemplate, InstanceConfig, KeywordMap, KeywordSource
from protocols import sal

SOFTWARE_VERSION = "1.0.0"
CAMERA_EVENTS = ("startIntegration", "startReadout", "endReadout", "endOfImageTelemetry", "imageReadoutParameters")


@dataclass
class Templates:
    primary: list[CardTemplate]
    sensor: list[CardTemplate]
    segment: list[CardTemplate]


@dataclass
class ExposureInputs:
    """Everything one header is made of; JSON-serialisable so it can be journaled and replayed."""

    image_name: str
    events: dict[str, dict[str, Any]]  # camera topic -> the sample of this exposure
    points: dict[str, float]  # collection point (start, readout, end) -> TAI s
    snapshots: dict[str, dict[str, dict[str, Any] | None]]  # point -> topic key -> sample
    windows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # topic key -> samples
    reasons: list[str] = field(default_factory=list)  # why the header is incomplete, if it is


@dataclass
class ComposedHeader:
    image_name: str
    instrument: str
    dayobs: str
    version: int
    complete: bool
    reasons: list[str]
    hdus: list[list[str]]  # card images per HDU, CHECKSUM/DATASUM filled
    hdu_names: list[str]
    provenance: dict[str, Any]

    def file_bytes(self) -> bytes:
        from header.fitsfile import encode_file_from_cards

        return encode_file_from_cards(self.hdus)

    def to_payload(self) -> dict[str, Any]:
        return {
            "imageName": self.image_name,
            "instrument": self.instrument,
            "dayobs": self.dayobs,
            "version": self.version,
            "complete": self.complete,
            "reasons": self.reasons,
            "hdus": [{"name": n, "cards": c} for n, c in zip(self.hdu_names, self.hdus)],
            "provenance": self.provenance,
        }


@dataclass
class Sensor:
    location: str  # e.g. R22_S11
    vendor: str  # ITL or E2V
    readout: dict[str, int] = field(default_factory=dict)  # preCols/overCols/overRows

    @property
    def raft(self) -> str:
        return self.location.split("_")[0]

    @property
    def slot(self) -> str:
        return self.location.split("_")[-1]


def _sample_for(src: KeywordSource, inputs: ExposureInputs, camera: str) -> dict[str, Any] | None:
    if src.component == camera and src.topic in CAMERA_EVENTS:
        return inputs.events.get(src.topic)
    return inputs.snapshots.get(src.when, {}).get(src.topic_key)


def sensors_of(inputs: ExposureInputs, cfg: InstanceConfig) -> tuple[list[Sensor], str | None]:
    """The sensors the camera reports (focalPlaneSummaryInfo), with readout geometry per sensor."""
    key = f"{cfg.camera}.focalPlaneSummaryInfo:0"
    fp = inputs.snapshots.get("start", {}).get(key)
    note = None
    if fp and split_list(fp["data"].get("ccdLocation", "")):
        locs = split_list(fp["data"]["ccdLocation"])
        vendors = split_list(fp["data"].get("ccdManufacturer", ""))
    else:
        locs = list(cfg.sensors_nominal)
        vendors = []
        note = "focalPlaneSummaryInfo not received: nominal sensor list used"
    sensors = []
    for i, loc in enumerate(locs):
        vendor = vendors[i].upper() if i < len(vendors) and vendors[i] else "ITL"
        sensors.append(Sensor(loc, "E2V" if vendor.startswith("E2V") else "ITL"))
    rp = inputs.events.get("imageReadoutParameters")
    if rp:
        d = rp["data"]
        order = split_list(d.get("ccdLocation", ""))
        for s in sensors:
            if s.location in order:
                i = order.index(s.location)
                for f in ("preCols", "overCols", "overRows"):
                    v = d.get(f)
                    if isinstance(v, list) and i < len(v) and isinstance(v[i], int) and v[i] > 0:
                        s.readout[f] = v[i]
                    elif isinstance(v, int) and not isinstance(v, bool) and v > 0 and len(order) == 1:
                        s.readout[f] = v
    return sensors, note


def resolve_all(cfg: InstanceConfig, kmap: KeywordMap, inputs: ExposureInputs, sensors: list[Sensor]) -> dict[str, Resolved]:
    locs = [s.location for s in sensors]
    out: dict[str, Resolved] = {}
    for src in kmap.keywords:
        sample = _sample_for(src, inputs, cfg.camera)
        at = inputs.points.get(src.when) or inputs.points.get("start", 0.0)
        max_age = src.max_age
        if max_age is None and sal.get_topic(src.component, src.topic).kind == "telemetry":
            max_age = cfg.telemetry_max_age
        window = inputs.windows.get(src.topic_key) if src.monitor else None
        out[src.keyword] = reduce_keyword(src, sample, at, locs, max_age, window)
    return out


def _event_time(inputs: ExposureInputs, topic: str, field_name: str) -> float | None:
    ev = inputs.events.get(topic)
    if ev:
        v = ev["data"].get(field_name)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0:
            return float(v)
    return None


class Computer:
    """Values no telemetry carries, computed once per header from the resolved keywords."""

    def __init__(self, cfg: InstanceConfig, inputs: ExposureInputs, resolved: dict[str, Resolved], now_tai: float, version: int, complete: bool):
        self.cfg = cfg
        self.inputs = inputs
        self.resolved = resolved
        self.now = now_tai
        self.version = version
        self.complete = complete
        self.beg = _event_time(inputs, "endOfImageTelemetry", "timestampDateObs") or _event_time(
            inputs, "startIntegration", "timestampAcquisitionStart"
        ) or inputs.points.get("start")
        exptime = _event_time(inputs, "startIntegration", "exposureTime") or 0.0
        self.end = _event_time(inputs, "endOfImageTelemetry", "timestampDateEnd") or (
            self.beg + exptime if self.beg else None
        )
        self._altaz: tuple[float, float] | None | bool = False

    def value(self, name: str) -> Any:
        return getattr(self, f"c_{name}")()

    def _mid(self) -> float | None:
        if self.beg is None or self.end is None:
            return None
        return 0.5 * (self.beg + self.end)

    def _pointing(self) -> tuple[float, float] | None:
        ra, dec = self.resolved.get("RA"), self.resolved.get("DEC")
        if ra is None or dec is None or not ra.defined or not dec.defined:
            return None
        return float(ra.value), float(dec.value)

    def _mid_altaz(self) -> tuple[float, float] | None:
        if self._altaz is False:
            p, mid = self._pointing(), self._mid()
            self._altaz = astro.alt_az(p[0], p[1], mid) if p and mid else None
        return self._altaz  # type: ignore[return-value]

    def c_file_date(self) -> str:
        return astro.utc_iso(self.now)

    def c_file_mjd(self) -> float:
        return astro.mjd_utc(self.now)

    def c_mjd_obs(self) -> float | None:
        return astro.mjd_tai(self.beg) if self.beg else None

    c_mjd_beg = c_mjd_obs

    def c_mjd_end(self) -> float | None:
        return astro.mjd_tai(self.end) if self.end else None

    def c_filename(self) -> str:
        return f"{self.inputs.image_name}.fits"

    def c_airmass_mid(self) -> float | None:
        altaz = self._mid_altaz()
        return astro.airmass(altaz[0]) if altaz else None

    def c_zenith_distance_mid(self) -> float | None:
        altaz = self._mid_altaz()
        return 90.0 - altaz[0] if altaz else None

    def c_header_version(self) -> str:
        return f"{SOFTWARE_VERSION} v{self.version}"

    def c_header_status(self) -> str:
        return "COMPLETE" if self.complete else "INCOMPLETE"


def _card(key: str, value: Any, comment: str, reason: str | None, errors: list[str]) -> list[str]:
    if value is None and reason:
        comment = f"{comment} [undefined: {reason}]" if comment else f"undefined: {reason}"
    try:
        return format_card(key, value, comment)
    except CardError as exc:
        errors.append(f"{key}: {exc}")
        return format_card(key, None, f"{comment} [undefined: {exc}]")


def _render(
    template: list[CardTemplate],
    resolved: dict[str, Resolved],
    compute: Callable[[str], Any],
    sensor: str | None,
    errors: list[str],
) -> list[str]:
    cards: list[str] = []
    for t in template:
        kind = t.kind
        if kind == "static":
            cards += _card(t.key, t.value, t.comment, None, errors)
        elif kind == "computed":
            assert t.computed is not None
            v = compute(t.computed)
            cards += _card(t.key, v, t.comment, None if v is not None else "cannot be computed from the inputs", errors)
        else:
            r = resolved.get(t.key)
            if r is None:
                cards += _card(t.key, None, t.comment, "not in the keyword map", errors)
            elif r.per_sensor is not None:
                v = r.per_sensor.get(sensor) if sensor else None
                cards += _card(t.key, v, t.comment, None if v is not None else f"no value for sensor {sensor}", errors)
            else:
                cards += _card(t.key, r.value, t.comment, r.reason, errors)
    return cards


def compose_header(
    cfg: InstanceConfig,
    kmap: KeywordMap,
    templates: Templates,
    inputs: ExposureInputs,
    now_tai: float,
    version: int = 1,
) -> ComposedHeader:
    """Build every HDU of one image's header with its provenance."""
    sensors, sensor_note = sensors_of(inputs, cfg)
    resolved = resolve_all(cfg, kmap, inputs, sensors)
    reasons = list(inputs.reasons)
    complete = not reasons
    comp = Computer(cfg, inputs, resolved, now_tai, version, complete)
    errors: list[str] = []

    primary = structural_primary() + _render(templates.primary, resolved, comp.value, None, errors)
    if reasons:
        primary += _card("HDRNOTE", "; ".join(reasons), "why this header is incomplete", None, errors)
    hdus = [primary]
    names = ["PRIMARY"]
    for s in sensors:
        geo_vendor = s.vendor
        seg_names = geometry.segment_names(16)
        sensor_cards_extra = {
            "sensor_extname": s.location,
            "detsize": geometry.segment_cards(geo_vendor, seg_names[0], s.readout.get("preCols"), s.readout.get("overCols"), s.readout.get("overRows"))["DETSIZE"],
            "ccdslot": s.slot,
        }

        def sensor_compute(name: str, extra: dict[str, Any] = sensor_cards_extra) -> Any:
            return extra[name] if name in extra else comp.value(name)

        hdus.append(structural_extension() + _render(templates.sensor, resolved, sensor_compute, s.location, errors))
        names.append(s.location)
        if not cfg.segments_in_file:
            continue
        for seg in seg_names:
            geo = geometry.segment_cards(geo_vendor, seg, s.readout.get("preCols"), s.readout.get("overCols"), s.readout.get("overRows"))
            seg_values = {
                "segment_extname": geo["EXTNAME"],
                "channel": geo["CHANNEL"],
                "ccdslot": s.slot,
                "datasec": geo["DATASEC"],
                "detsec": geo["DETSEC"],
                "detsize": geo["DETSIZE"],
                "dtv1": geo["DTV1"],
                "dtv2": geo["DTV2"],
                "dtm1_1": geo["DTM1_1"],
                "dtm1_2": geo["DTM1_2"],
                "dtm2_1": geo["DTM2_1"],
                "dtm2_2": geo["DTM2_2"],
            }

            def seg_compute(name: str, extra: dict[str, Any] = seg_values) -> Any:
                return extra[name] if name in extra else comp.value(name)

            hdus.append(structural_extension() + _render(templates.segment, resolved, seg_compute, s.location, errors))
            names.append(f"{s.location}/{geo['EXTNAME']}")

    encoded = [split_cards(encode_hdu(h)) for h in hdus]
    dayobs_r = resolved.get("DAYOBS")
    dayobs = str(dayobs_r.value) if dayobs_r and dayobs_r.defined else astro.dayobs(comp.beg or now_tai)
    provenance = {
        "imageName": inputs.image_name,
        "version": version,
        "complete": complete,
        "reasons": reasons,
        "points": inputs.points,
        "sensors": [s.location for s in sensors],
        "sensor_note": sensor_note,
        "card_errors": errors,
        "keywords": {k: r.provenance() for k, r in resolved.items()},
    }
    return ComposedHeader(inputs.image_name, cfg.instrument, dayobs, version, complete, reasons, encoded, names, provenance)
