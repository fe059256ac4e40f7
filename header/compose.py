"""Compose one image's FITS header from its camera events and the cached telemetry (pure).

The composer process gathers an :class:`ExposureInputs` (the exposure's own camera events and the
cache's snapshots at each collection point) and calls :func:`compose_header`; everything here is
deterministic in its inputs, so real-time and catch-up produce identical values.
"""

from __future__ import annotations

import json
import math
import re
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, Hashable

from header import astro, geometry
from header.wcs import default_wcs
from header.cards import CardError, fits_type, format_card, sanitize_text, structural_extension, structural_primary, typed_value
from header.fitsfile import checksum_cards, encode_hdu, split_cards
from header.keywords import Resolved, reduce_keyword, split_list
from header.memo import BoundedMemo
from protocols.config import CardTemplate, InstanceConfig, KeywordMap, KeywordSource
from protocols import sal
from protocols.names import dayobs_problem

SOFTWARE_VERSION = "1.0.0"
AIRMASS_TOLERANCE = 0.01  # relative disagreement beyond which AMSTART/AMEND are flagged
HA_TOLERANCE_HOURS = 10.0 / 3600.0  # 10 s of time
SCHEDULER_AIRMASS_TOLERANCE = 0.05
MAX_NOTE = 2000  # characters of HDRNOTE (the reasons; the provenance keeps them whole)
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
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # operator cards (CSC)
    overrides_version: int = 0


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
    context: "SensorContext | None" = None

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

    def payload_json(self, **extra: Any) -> bytes:
        """:meth:`to_payload` (plus ``extra`` fields) as compact JSON, each extension HDU's JSON
        memoized: an LSSTCam header's sensor HDUs mostly repeat, and encoding its 670 kB anew took
        2 ms. The primary HDU is new in every composition (its DATE is the composition's time):
        memoized, it would only push out HDUs that repeat."""
        head = {k: v for k, v in self.to_payload().items() if k not in ("hdus", "provenance")}
        head.update(extra)
        hdus = ",".join(
            _hdu_json(n, c) if i else _compact({"name": n, "cards": c})
            for i, (n, c) in enumerate(zip(self.hdu_names, self.hdus))
        )
        text = _compact(head)[:-1] + ',"hdus":[' + hdus + '],"provenance":' + _compact(self.provenance) + "}"
        return text.encode()


def _compact(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), allow_nan=True)


def _hdu_json(name: str, cards: list[str]) -> str:
    """One extension HDU's JSON, memoized: the hits are the image's own provisional composition's."""
    key = (name, tuple(cards))
    return _HDU_JSON.get(key) or _HDU_JSON.put(key, _compact({"name": name, "cards": cards}))


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

    @property
    def n_segments(self) -> int:
        return 8 if geometry.is_wavefront(self.slot) else 16

    def segment(self, name: str) -> dict[str, Any]:
        return geometry.segment_cards(
            self.vendor,
            name,
            self.readout.get("preCols"),
            self.readout.get("overCols"),
            self.readout.get("overRows"),
            n_segments=self.n_segments,
        )

    def values(self, index: int) -> dict[str, Any]:
        """Computed values of this sensor's HDU: name, geometry and readout actually used."""
        geo = self.segment(geometry.segment_names(self.n_segments)[0])
        vendor = geometry.get_vendor(self.vendor)
        return {
            "sensor_extname": self.location,
            "detsize": geo["DETSIZE"],
            "ccdslot": self.slot,
            "raftbay": self.raft,
            "preh": self.readout.get("preCols", vendor.prescan),
            "overh": self.readout.get("overCols", vendor.overscan_cols),
            "overv": self.readout.get("overRows", vendor.overscan_rows),
            "extver": index + 1,
        }


def _sample_for(src: KeywordSource, inputs: ExposureInputs, camera: str) -> dict[str, Any] | None:
    if src.component == camera and src.topic in CAMERA_EVENTS:
        sample = inputs.events.get(src.topic)
    else:
        sample = (inputs.snapshots.get(src.when) or {}).get(src.topic_key)
    return sample if isinstance(sample, dict) else None


MAX_READOUT_PIXELS = 10000  # prescan/overscan sizes beyond this are not a readout geometry
MAX_SENSORS = 256  # the largest focal plane (LSSTCam) has 205
SENSOR_NAME = re.compile(r"R\d\d_S(?:\d\d|[GW][01])")


def _data(sample: Any) -> dict[str, Any]:
    data = sample.get("data") if isinstance(sample, dict) else None
    return data if isinstance(data, dict) else {}


@lru_cache(maxsize=64)
def _sensor_names(reported: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(loc for loc in reported if SENSOR_NAME.fullmatch(loc)))[:MAX_SENSORS]


def sensors_of(inputs: ExposureInputs, cfg: InstanceConfig) -> tuple[list[Sensor], str | None]:
    """The sensors the camera reports (focalPlaneSummaryInfo), with readout geometry per sensor.

    Only names of sensors (``Rxx_Syy``, ``Rxx_SG0``...) are taken, each once and at most
    ``MAX_SENSORS``: a corrupted list cannot make HDUs for sensors that do not exist."""
    key = f"{cfg.camera}.focalPlaneSummaryInfo:0"
    fp = _data((inputs.snapshots.get("start") or {}).get(key))
    reported = split_list(fp.get("ccdLocation", ""))
    locs = list(_sensor_names(tuple(reported)))
    note = None
    if locs:
        vendors = split_list(fp.get("ccdManufacturer", ""))
        if len(locs) != len(reported):
            note = f"focalPlaneSummaryInfo lists {len(reported) - len(locs)} unknown or repeated sensor(s): ignored"
    else:
        locs = list(cfg.sensors_nominal)
        vendors = []
        note = "focalPlaneSummaryInfo not received or without a known sensor: nominal sensor list used"
    index = {loc: i for i, loc in enumerate(reported)}
    sensors = []
    for loc in locs:
        i = index.get(loc, -1)
        vendor = vendors[i].upper() if 0 <= i < len(vendors) and vendors[i] else "ITL"
        sensors.append(Sensor(loc, "E2V" if vendor.startswith("E2V") else "ITL"))
    d = _data(inputs.events.get("imageReadoutParameters"))
    if d:
        order = {loc: i for i, loc in enumerate(split_list(d.get("ccdLocation", "")))}
        for s in sensors:
            if s.location in order:
                i = order[s.location]
                for f in ("preCols", "overCols", "overRows"):
                    v = d.get(f)
                    if isinstance(v, list) and i < len(v):
                        v = v[i]
                    elif len(order) != 1:
                        continue
                    if isinstance(v, int) and not isinstance(v, bool) and 0 < v <= MAX_READOUT_PIXELS:
                        s.readout[f] = v
    return sensors, note


def resolve_all(cfg: InstanceConfig, kmap: KeywordMap, inputs: ExposureInputs, sensors: list[Sensor]) -> dict[str, Resolved]:
    locs = [s.location for s in sensors]
    out: dict[str, Resolved] = {}
    per_sensor_locs = tuple(locs)
    for src in kmap.keywords:
        sample = _sample_for(src, inputs, cfg.camera)
        at = inputs.points.get(src.when) or inputs.points.get("start", 0.0)
        max_age = src.max_age
        if max_age is None and sal.get_topic(src.component, src.topic).kind == "telemetry":
            max_age = cfg.telemetry_max_age
        memo_key = _reduced_key(src, sample, at, max_age, per_sensor_locs)
        if memo_key is not None:
            try:
                got = _REDUCED.get(memo_key)
            except TypeError:  # a value that cannot be a key (not from a SAL sample): not memoized
                got = memo_key = None
            if got is not None:
                out[src.keyword] = got
                continue
        window = inputs.windows.get(src.topic_key) if src.monitor else None
        out[src.keyword] = reduce_keyword(src, sample, at, locs, max_age, window)
        if memo_key is not None:
            _REDUCED.put(memo_key, out[src.keyword])
    return out


# Memoized pieces. The composer composes each image once provisionally at startReadout, so that
# at endOfImageTelemetry the astrometry, the WCS of every sensor, the per-sensor reductions and
# the encoded sensor HDUs are already known: only what changed since is computed then.


@lru_cache(maxsize=1024)  # five LSSTCam pointings (205 sensors each)
def _wcs_cached(ra: float, dec: float, rotpa: float, camera: str, raft: str, slot: str, vendor: str) -> tuple:
    return tuple(default_wcs(ra, dec, rotpa, camera, raft, slot, vendor).items())


def geometry_wcs(ra: float, dec: float, rotpa: float, camera: str, sensor: "Sensor") -> dict[str, Any]:
    return dict(_wcs_cached(ra, dec, rotpa, camera, sensor.raft, sensor.slot, sensor.vendor))


@lru_cache(maxsize=512)
def observed(ra: float, dec: float, t: float) -> tuple[float, float, float, float | None]:
    """(alt, az, ha_hours, airmass) of a pointing at TAI ``t`` (astropy/ERFA), memoized."""
    alt, az, ha = astro.alt_az_ha(ra, dec, t)
    return alt, az, ha, astro.airmass(alt)


def encoded_hdu(cards: tuple[str, ...]) -> tuple[str, ...]:
    """Card images of one HDU with CHECKSUM/DATASUM, memoized on its cards."""
    return _ENCODED_HDUS.get(cards) or _ENCODED_HDUS.put(cards, tuple(checksum_cards(list(cards))))


#: Headers the per-HDU memos hold (HDU JSON, encoded HDUs, sensor HDUs), of the largest header this
#: process composed: an image's provisional and final compositions, the next image's provisional one
#: (overlapping exposures) and a margin. Counted in headers, a LATISS composer (18 HDUs a header)
#: does not keep hundreds of past headers in memos sized for LSSTCam's 206 HDUs.
MEMO_HEADERS = 5
_HDU_JSON: BoundedMemo[str] = BoundedMemo(MEMO_HEADERS)
_ENCODED_HDUS: "BoundedMemo[tuple[str, ...]]" = BoundedMemo(MEMO_HEADERS)
#: Encoded sensor HDUs with their notes.
_SENSOR_HDUS: "BoundedMemo[tuple[tuple[str, ...], Notes]]" = BoundedMemo(MEMO_HEADERS)


def _memoize_headers_of(n_hdus: int, n_sensors: int) -> None:
    """Let the per-HDU memos hold ``MEMO_HEADERS`` headers of ``n_hdus`` HDUs and ``n_sensors``
    sensors, if they hold fewer (they never shrink)."""
    for memo, n in ((_HDU_JSON, n_hdus), (_ENCODED_HDUS, n_hdus), (_SENSOR_HDUS, n_sensors)):
        memo.size = max(memo.size, MEMO_HEADERS * n)


#: Reduced keywords by what a reduction reads (see _reduced_key): six headers' worth for the largest
#: keyword map (LSSTCam reduces ~80 a header); more only held per-sensor values nothing reads again.
_REDUCED: BoundedMemo[Resolved] = BoundedMemo(512)
#: What every sensor HDU of a header shares, one object per distinct value: the sensors' memo keys
#: holding it then compare it by identity.
_COMMON: "BoundedMemo[tuple]" = BoundedMemo(64)
#: Segment HDUs of one sensor with their notes, by sensor and what the segment template reads.
_SEGMENTS: "BoundedMemo[tuple[tuple[tuple[tuple[str, ...], str], ...], Notes]]" = BoundedMemo(256)


#: What a reduction reads of a sample besides the keyword's own field, by kind (see header.keywords).
_READ_TOO = {"keyed_array": ("additionalKeys",), "ccd_array": ("ccdLocation", "location"),
             "ccd_array_str": ("ccdLocation", "location"), "time_series": ("cRioTimestamp",)}  # fmt: skip


def _frozen(v: Any) -> Hashable:
    return tuple(v) if type(v) is list else v


def _reduced_key(src: KeywordSource, sample: dict[str, Any] | None, at: float, max_age: float | None,
                 sensors: tuple[str, ...]) -> tuple | None:  # fmt: skip
    """The memo key of one keyword's reduction: the keyword source, the values it reads from the
    sample (its field, what its kind reads besides, the sample's time), the collection time, the age
    limit and the sensors. The provisional and final compositions and every sensor of a header
    then reduce a sample once. None when there is nothing to key on (no sample, a monitored
    keyword's window)."""
    if src.monitor or sample is None:
        return None
    stamp = sample.get("sndStamp")
    data = sample.get("data")
    if not isinstance(stamp, float) or not isinstance(data, dict):
        return None
    per = sensors if src.kind in ("ccd_array", "ccd_array_str") else None
    read = _frozen(data.get(src.field, _MISSING))
    extra = _READ_TOO.get(src.kind)
    key = (src.fingerprint, stamp, at, max_age, per, read)
    if extra:
        key += tuple([_frozen(data.get(f, _MISSING)) for f in extra])
    return key


_MISSING = object()  # a field the sample does not have


def template_key(template: list[CardTemplate]) -> str:
    """A template by its values (its entries' fingerprints, each computed once): the part of a memo
    key that says which template an HDU was rendered from. One interned string: Python keeps its
    hash and equal templates give the same object, so a key holding it is found as fast as one
    holding a number."""
    return sys.intern("\n".join([t.fingerprint for t in template]))


def _event_time(inputs: ExposureInputs, topic: str, field_name: str) -> float | None:
    """A time field of one of the exposure's camera events, if it is a usable time (> 0)."""
    ev = inputs.events.get(topic)
    data = ev.get("data") if isinstance(ev, dict) else None
    if isinstance(data, dict):
        v = astro.usable_time(data.get(field_name))
        if v:
            return v
    return None


MAX_EXPOSURE_S = 86400.0  # longer is not an exposure time: the end is then unknown


def usable_duration(v: Any) -> float | None:
    """``v`` as seconds if it is a real number in [0, 1 day] (an exposure time, a timeout), else None."""
    if isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= v <= MAX_EXPOSURE_S:
        return float(v)
    return None


def _duration(inputs: ExposureInputs, topic: str, field_name: str) -> float | None:
    """A duration field of one of the exposure's camera events (see :func:`usable_duration`)."""
    return usable_duration(_data(inputs.events.get(topic)).get(field_name))


class Computer:
    """Values no telemetry carries, computed once per header from the resolved keywords.

    It keeps what it reads of the inputs, not the inputs: a composed header's computer stays in its
    :class:`SensorContext` (the composer keeps twenty) and the telemetry snapshots and monitor
    windows are not needed after the keywords are resolved."""

    def __init__(self, cfg: InstanceConfig, inputs: ExposureInputs, resolved: dict[str, Resolved], now_tai: float, version: int, complete: bool):
        self.cfg = cfg
        self.image_name = inputs.image_name
        self.points = inputs.points
        self.overrides_version = inputs.overrides_version
        self.resolved = resolved
        self.now = now_tai
        self.version = version
        self.complete = complete
        self.beg = _event_time(inputs, "endOfImageTelemetry", "timestampDateObs") or _event_time(
            inputs, "startIntegration", "timestampAcquisitionStart"
        ) or astro.usable_time(inputs.points.get("start"))
        exptime = _duration(inputs, "startIntegration", "exposureTime") or 0.0
        self.end = _event_time(inputs, "endOfImageTelemetry", "timestampDateEnd") or (
            self.beg + exptime if self.beg else None
        )

    def value(self, name: str) -> Any:
        fn = getattr(self, f"c_{name}", None)
        if fn is None:
            raise CardError(f"unknown computed value {name!r}")
        return fn()

    def _mid(self) -> float | None:
        if self.beg is None or self.end is None:
            return None
        return 0.5 * (self.beg + self.end)

    def _pointing(self) -> tuple[float, float] | None:
        ra, dec = self.resolved.get("RA"), self.resolved.get("DEC")
        if ra is None or dec is None or not ra.defined or not dec.defined:
            return None
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (ra.value, dec.value)):
            return None
        return float(ra.value), float(dec.value)

    def _mid_altaz(self) -> tuple[float, float] | None:
        p, mid = self._pointing(), self._mid()
        return observed(p[0], p[1], mid)[:2] if p and mid else None

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
        return f"{self.image_name}.fits"

    def c_airmass_mid(self) -> float | None:
        altaz = self._mid_altaz()
        return astro.airmass(altaz[0]) if altaz else None

    def c_zenith_distance_mid(self) -> float | None:
        altaz = self._mid_altaz()
        return 90.0 - altaz[0] if altaz else None

    def _pointing_at(self, point: str) -> float | None:
        return astro.usable_time(self.points.get(point))

    def _observed(self, point: str) -> tuple[float, float, float, float | None] | None:
        """(alt, az, ha_hours, airmass) of the commanded pointing at a collection point (memoized)."""
        p, t = self._pointing(), self._pointing_at(point)
        return observed(p[0], p[1], t) if p and t else None

    def c_airmass_start(self) -> float | None:
        o = self._observed("start")
        return o[3] if o else None

    def c_airmass_end(self) -> float | None:
        o = self._observed("readout")
        return o[3] if o else None

    def c_ha_start(self) -> float | None:
        o = self._observed("start")
        return o[2] if o else None

    def c_ha_end(self) -> float | None:
        o = self._observed("readout")
        return o[2] if o else None

    def c_alt_start(self) -> float | None:
        o = self._observed("start")
        return o[0] if o else None

    def c_az_start(self) -> float | None:
        o = self._observed("start")
        return o[1] if o else None

    def c_alt_end(self) -> float | None:
        o = self._observed("readout")
        return o[0] if o else None

    def c_az_end(self) -> float | None:
        o = self._observed("readout")
        return o[1] if o else None

    def pointing_check(self) -> list[str]:
        """Disagreements between what the pointing component reported and what we compute."""
        out = []
        for kw, name, tol in (
            ("AMSTART", "airmass_start", AIRMASS_TOLERANCE),
            ("AMEND", "airmass_end", AIRMASS_TOLERANCE),
            ("HASTART", "ha_start", HA_TOLERANCE_HOURS),
            ("HAEND", "ha_end", HA_TOLERANCE_HOURS),
        ):
            r = self.resolved.get(kw)
            try:
                mine = self.value(name)
            except COMPUTE_ERRORS:
                continue
            if r is None or not r.defined or mine is None or not isinstance(r.value, (int, float)):
                continue
            diff = float(r.value) - mine
            if kw.startswith("HA"):
                diff = (diff + 12.0) % 24.0 - 12.0
            if abs(diff) > tol:
                out.append(f"{kw} {r.value:.4f} vs computed {mine:.4f}")
        return out

    def c_pointing_check(self) -> str:
        issues = self.pointing_check()
        return "OK" if not issues else "DISAGREE: " + "; ".join(issues)

    def c_scheduler_airmass_check(self) -> str | None:
        sched = self.resolved.get("SCHAIRMS")
        mine = self.value("airmass_start")
        if sched is None or not sched.defined or mine is None or not isinstance(sched.value, (int, float)):
            return None
        diff = float(sched.value) - mine
        return "OK" if abs(diff) <= SCHEDULER_AIRMASS_TOLERANCE else f"DISAGREE by {diff:+.3f}"

    def wcs_inputs(self) -> tuple[Any, ...] | None:
        """What every sensor's default WCS depends on: the commanded pointing and rotator angle."""
        p, rot = self._pointing(), self.resolved.get("ROTPA")
        if not p or rot is None or not rot.defined:
            return None
        return (p, rot.value)

    def wcs(self, sensor: Sensor) -> dict[str, Any]:
        p, rot = self._pointing(), self.resolved.get("ROTPA")
        if not p or rot is None or not rot.defined:
            return {}
        try:
            return geometry_wcs(p[0], p[1], float(rot.value), self.cfg.instrument, sensor)
        except COMPUTE_ERRORS:
            return {}

    def c_tstand(self) -> str | None:
        return self.cfg.tstand or None

    def c_overrides_version(self) -> int:
        return int(self.overrides_version)

    def c_header_version(self) -> str:
        return f"{SOFTWARE_VERSION} v{self.version}"

    def c_header_status(self) -> str:
        return "COMPLETE" if self.complete else "INCOMPLETE"


#: Keywords whose type the FITS standard fixes: an undefined value is an error there, so when
#: there is no value they are left out (the provenance side-car says why), never written blank.
RESERVED = {
    "DATE", "DATE-OBS", "DATE-BEG", "DATE-END", "MJD-OBS", "MJD-BEG", "MJD-END", "MJD", "EQUINOX", "RADESYS",
    "WCSAXES", "CTYPE1", "CTYPE2", "CUNIT1", "CUNIT2", "CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2",
    "CD1_1", "CD1_2", "CD2_1", "CD2_2", "EXTNAME", "EXTVER", "TIMESYS",
}


@dataclass
class Notes:
    """What rendering found about the cards: values that could not be written (``errors``) and,
    for every keyword written without its value or left out, why (``undefined``, for the
    provenance; a sensor's or segment's own cards are named ``<sensor>:<KEY>``)."""

    errors: list[str] = field(default_factory=list)
    undefined: dict[str, str] = field(default_factory=dict)

    def merge(self, other: "Notes") -> None:
        if other.errors:
            self.errors.extend(other.errors)
        if other.undefined:
            self.undefined.update(other.undefined)


def _card(key: str, value: Any, comment: str, reason: str | None, notes: Notes, where: str | None = None) -> list[str]:
    """The card images of one keyword; a value that cannot be written makes it undefined with the
    reason in its comment and in ``notes``.

    A keyword whose type FITS fixes (:func:`header.cards.fits_type`) is never written blank, which
    fitsverify reports as an error: a string one is written as the empty string, any other is left out."""
    kind = fits_type(key)
    if value is not None and kind is not None:
        value, bad = typed_value(key, value)
        if bad:
            notes.errors.append(f"{key}: {bad}")
            reason = bad
    if value is None:
        why = reason or "no value"
        omitted = key in RESERVED or (kind is not None and kind != "str")
        notes.undefined[f"{where}:{key}" if where else key] = f"left out: {why}" if omitted else why
        if omitted:
            return []
        comment = f"{comment} [undefined: {why}]".lstrip()
        value = "" if kind == "str" else None
    try:
        return format_card(key, value, comment)
    except CardError as exc:
        notes.errors.append(f"{key}: {exc}")
        if value is None or value == "":
            return []  # the keyword itself cannot be written (templates and operator cards are checked before)
        return _card(key, None, comment, str(exc), notes, where)


def _render(
    template: list[CardTemplate],
    resolved: dict[str, Resolved],
    compute: Callable[[str], Any],
    sensor: str | None,
    notes: Notes,
    fallbacks: dict[str, str] | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
) -> list[str]:
    """Card images of one HDU from its template; ``fallbacks`` records computed stand-ins used."""
    cards: list[str] = []
    for t in template:
        kind = t.kind
        if overrides and t.key in overrides and kind == "static":
            o = overrides[t.key]
            cards += _card(t.key, o.get("value"), o.get("comment") or t.comment, None, notes, sensor)
        elif kind == "static":
            cards += _card(t.key, t.value, t.comment, None, notes, sensor)
        elif kind == "computed":
            assert t.computed is not None
            v, why = _computed(compute, t.computed, t.key, notes)
            if v is None and t.optional:
                continue
            cards += _card(t.key, v, t.comment, why, notes, sensor)
        else:
            r = resolved.get(t.key)
            if r is None:
                value, reason = None, "not in the keyword map"
            elif r.per_sensor is not None:
                value = r.per_sensor.get(sensor) if sensor else None
                reason = None if value is not None else f"no value for sensor {sensor}"
            else:
                value, reason = r.value, r.reason
            if value is None and t.fallback:
                value, _ = _computed(compute, t.fallback, t.key, notes)
                if value is not None and fallbacks is not None:
                    fallbacks[t.key] = f"computed ({t.fallback}): {reason}"
            if value is None and t.optional:
                continue
            cards += _card(t.key, value, t.comment, reason, notes, sensor)
    return cards


#: What a computation from hostile inputs may raise (astropy and ERFA on absurd times, arithmetic
#: on absurd numbers): the value is then undefined with this reason, never a failed header.
COMPUTE_ERRORS = (CardError, ValueError, ArithmeticError, TypeError)


def _computed(compute: Callable[[str], Any], name: str, key: str, notes: Notes) -> tuple[Any, str | None]:
    """A computed value, or None with the reason it cannot be computed."""
    try:
        v = compute(name)
    except COMPUTE_ERRORS as exc:
        notes.errors.append(f"{key}: {name} cannot be computed: {exc}")
        return None, f"cannot be computed: {str(exc)[:120]}"
    return v, None if v is not None else "cannot be computed from the inputs"


#: Computed values that differ from sensor to sensor (see :meth:`Sensor.values`).
SENSOR_VALUES = frozenset(("sensor_extname", "detsize", "ccdslot", "raftbay", "preh", "overh", "overv", "extver"))


def _varies_by_sensor(t: CardTemplate, resolved: dict[str, Resolved]) -> bool:
    for name in (t.computed if t.kind == "computed" else None, t.fallback):
        if name and _is_sensor_value(name):
            return True
    if t.kind not in ("static", "computed"):
        r = resolved.get(t.key)
        return r is not None and r.per_sensor is not None
    return False


def _is_sensor_value(name: str) -> bool:
    return name in SENSOR_VALUES or name.startswith("wcs.")


def _entry_key(
    t: CardTemplate, resolved: dict[str, Resolved], comp: "Computer", location: str, own: Callable[[str], bool]
) -> Any:
    """What a template entry's card depends on beyond the HDU's own values (``own(name)``: the
    sensor's or segment's, already in the memo key of its HDU)."""
    if t.kind == "static":
        return None
    if t.kind == "computed":
        if own(t.computed or ""):
            return None
        try:
            return ("computed", comp.value(t.computed or ""))
        except COMPUTE_ERRORS as exc:
            return ("error", str(exc))
    r = resolved.get(t.key)
    if r is None:
        return None
    value = r.per_sensor.get(location) if r.per_sensor is not None else r.value
    fallback = None
    if value is None and t.fallback and not own(t.fallback):
        try:
            fallback = comp.value(t.fallback)
        except COMPUTE_ERRORS as exc:
            fallback = ("error", str(exc))
    return (value, r.reason, fallback)


def sensor_plan(
    template: list[CardTemplate], resolved: dict[str, Resolved], comp: "Computer", notes: Notes
) -> list[tuple[list[str], list[CardTemplate]]]:
    """The sensor template split into runs: cards common to every sensor, rendered once per header,
    each followed by the entries rendered per sensor. A 205-sensor header then formats its common
    cards once instead of 205 times."""
    plan: list[tuple[list[str], list[CardTemplate]]] = [([], [])]
    for t in template:
        if _varies_by_sensor(t, resolved):
            plan[-1][1].append(t)
        else:
            if plan[-1][1]:
                plan.append(([], []))
            plan[-1][0].extend(_render([t], resolved, comp.value, None, notes))
    return plan


def segment_hdus(
    templates: Templates, resolved: dict[str, Resolved], comp: "Computer", s: Sensor, index: int, notes: Notes,
    template_sig: str | None = None,
) -> list[tuple[list[str], str]]:
    """The segment HDUs of one sensor, in readout order (10..17, 07..00); memoized on the segment
    template (``template_sig``: its :func:`template_key`, when the caller has it), the sensor and
    whatever else the segment template reads."""
    names = _segment_value_names(s.vendor, s.n_segments)
    deps = tuple(_entry_key(t, resolved, comp, s.location, names.__contains__) for t in templates.segment)
    key = (template_sig or template_key(templates.segment), s.location, s.vendor, tuple(sorted(s.readout.items())), index, deps)
    hit = _SEGMENTS.get(key)
    if hit is None:
        own = Notes()
        hit = _SEGMENTS.put(key, (tuple((tuple(c), n) for c, n in _segment_hdus(templates, resolved, comp, s, index, own)), own))
    notes.merge(hit[1])
    return [(list(c), n) for c, n in hit[0]]


@lru_cache(maxsize=16)
def _segment_value_names(vendor: str, n_segments: int) -> frozenset[str]:
    """Names a segment template finds in a segment's own values (geometry and identity)."""
    geo = geometry.segment_cards(vendor, geometry.segment_names(n_segments)[0], None, None, None, n_segments=n_segments)
    return frozenset(k.lower() for k in geo) | {"segment_extname", "ccdslot", "extver"}


def _segment_hdus(
    templates: Templates, resolved: dict[str, Resolved], comp: "Computer", s: Sensor, index: int, notes: Notes
) -> list[tuple[list[str], str]]:
    out = []
    for seg in geometry.segment_names(s.n_segments):
        geo = s.segment(seg)
        values = {k.lower(): v for k, v in geo.items()}
        values.update(segment_extname=geo["EXTNAME"], ccdslot=s.slot, extver=index + 1)

        def seg_compute(name: str, values: dict[str, Any] = values) -> Any:
            return values[name] if name in values else comp.value(name)

        out.append((structural_extension() + _render(templates.segment, resolved, seg_compute, s.location, notes), f"{s.location}/{geo['EXTNAME']}"))
    return out


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
    notes = Notes()

    fallbacks: dict[str, str] = {}
    overrides = inputs.overrides or {}
    primary = structural_primary() + _render(
        templates.primary, resolved, comp.value, None, notes, fallbacks, overrides
    )
    template_keys = {t.key for t in templates.primary}
    for key, o in overrides.items():
        if key not in template_keys:
            primary += _card(key, o.get("value"), o.get("comment", "set by operator command"), None, notes)
    if reasons:
        note = sanitize_text("; ".join(str(r) for r in reasons))
        primary += _card("HDRNOTE", note[:MAX_NOTE], "why this header is incomplete", None, notes)
    hdus = [primary]
    names = ["PRIMARY"]
    plan = sensor_plan(templates.sensor, resolved, comp, notes)
    # what every sensor HDU shares: its template, the cards common to all sensors, and what the
    # sensors' own values are computed from (the instrument's WCS, the pointing)
    common_sig = (template_key(templates.sensor), tuple(tuple(c) for c, _ in plan), cfg.instrument, comp.wcs_inputs())
    common_sig = _COMMON.get(common_sig) or _COMMON.put(common_sig, common_sig)  # compared once, not per sensor
    sensor_hdus: dict[int, list[str]] = {}  # HDU position -> encoded cards, for the sensor HDUs
    hdu_of: dict[str, int] = {}  # sensor -> the position of its HDU
    segment_sig = template_key(templates.segment) if cfg.segments_in_file else None
    keyed = [t for _, varying in plan for t in varying if t.kind != "computed"]  # computed ones are the sensor's own
    for index, s in enumerate(sensors):
        key = (common_sig, s.location, s.vendor, tuple(sorted(s.readout.items())), index,
               tuple([_entry_key(t, resolved, comp, s.location, _is_sensor_value) for t in keyed]))
        hit = _SENSOR_HDUS.get(key)
        if hit is None:
            own = Notes()
            extra = s.values(index)
            wcs_cards = comp.wcs(s)

            def sensor_compute(name: str, extra: dict[str, Any] = extra, wcs_cards: dict[str, Any] = wcs_cards) -> Any:
                if name.startswith("wcs."):
                    return wcs_cards.get(name[4:])
                return extra[name] if name in extra else comp.value(name)

            cards = structural_extension()
            for common, varying in plan:
                cards += common
                if varying:
                    cards += _render(varying, resolved, sensor_compute, s.location, own)
            hit = _SENSOR_HDUS.put(key, (encoded_hdu(tuple(cards)), own))
        if hit[1].errors or hit[1].undefined:
            notes.merge(hit[1])
        hdu_of[s.location] = len(hdus)
        sensor_hdus[len(hdus)] = list(hit[0])
        hdus.append(sensor_hdus[len(hdus)])
        names.append(s.location)
        if cfg.segments_in_file:
            for seg_hdu, seg_name in segment_hdus(templates, resolved, comp, s, index, notes, segment_sig):
                hdus.append(seg_hdu)
                names.append(seg_name)

    _memoize_headers_of(len(hdus), len(sensors))
    # the primary HDU is new in every composition (its DATE is now): checksummed, not memoized
    extensions = [sensor_hdus[i] if i in sensor_hdus else list(encoded_hdu(tuple(h))) for i, h in enumerate(hdus) if i]
    encoded = [checksum_cards(primary)] + extensions
    dayobs_r = resolved.get("DAYOBS")
    dayobs = str(dayobs_r.value) if dayobs_r and dayobs_r.defined else ""
    if dayobs_problem(dayobs):  # the file's folder is never taken from a bad imageDate
        dayobs = astro.dayobs(comp.beg or now_tai)
    provenance = {
        "imageName": inputs.image_name,
        "version": version,
        "complete": complete,
        "reasons": reasons,
        "points": inputs.points,
        "sensors": [s.location for s in sensors],
        "sensor_note": sensor_note,
        "card_errors": notes.errors,
        "undefined": notes.undefined,
        "computed_fallbacks": fallbacks,
        "overrides": {"version": inputs.overrides_version, "cards": overrides},
        "template_cards": template_sources(templates, cfg, overrides, inputs.overrides_version),
        "pointing_check": comp.pointing_check(),
        "keywords": {k: r.provenance() for k, r in resolved.items()},
    }
    context = SensorContext(templates, resolved, comp, {s.location: (i, s, hdu_of[s.location]) for i, s in enumerate(sensors)}, encoded)
    return ComposedHeader(
        inputs.image_name, cfg.instrument, dayobs, version, complete, reasons, encoded, names, provenance, context
    )


def template_sources(
    templates: Templates, cfg: InstanceConfig, overrides: dict[str, dict[str, Any]], overrides_version: int
) -> dict[str, dict[str, str]]:
    """Where each card that is not from the keyword map comes from, per HDU kind: the template's
    static value, an operator card (which replaces a static value), or a computed value (the
    keyword map's cards are under ``keywords``)."""
    config = {"tstand": f"instance tstand = {cfg.tstand!r}" if cfg.tstand else "instance tstand not set: left out"}
    out: dict[str, dict[str, str]] = {}
    for kind, template in (("primary", templates.primary), ("sensor", templates.sensor), ("segment", templates.segment)):
        src: dict[str, str] = {}
        for t in template:
            if kind == "primary" and t.kind == "static" and t.key in overrides:
                src[t.key] = f"operator card (overrides version {overrides_version})"
            elif t.kind == "static":
                src[t.key] = "static (template)"
            elif t.kind == "computed":
                src[t.key] = f"computed {t.computed}" + (f" ({config[t.computed]})" if t.computed in config else "")
        out[kind] = src
    return out


_STRUCTURAL = {"SIMPLE", "XTENSION", "BITPIX", "NAXIS", "EXTEND", "PCOUNT", "GCOUNT", "CHECKSUM", "DATASUM"}


def _card_key(card: str) -> str:
    if card.startswith("HIERARCH "):
        return card[9:].split("=", 1)[0].strip()
    return card[:8].strip()


def merge_cards(primary: list[str], sensor: list[str]) -> list[str]:
    """One header of primary cards overlaid with a sensor's cards (the sensor's value wins).

    This is the header of a single-sensor file (raw, calibrated, crosstalk-corrected).
    """
    sensor_body = [c for c in sensor if _card_key(c) not in _STRUCTURAL]
    sensor_keys = {_card_key(c) for c in sensor_body if _card_key(c) not in ("CONTINUE", "COMMENT", "HISTORY", "")}
    out: list[str] = []
    skipping = False
    for c in primary:
        key = _card_key(c)
        if key == "CONTINUE" and skipping:
            continue
        skipping = key in sensor_keys or key in ("CHECKSUM", "DATASUM")
        if not skipping:
            out.append(c)
    return out + sensor_body


@dataclass
class SensorContext:
    """What is kept of a composed header to build any sensor's own header on request."""

    templates: Templates
    resolved: dict[str, Resolved]
    computer: Computer
    sensors: dict[str, tuple[int, Sensor, int]]  # location -> (sensor index, sensor, position of its HDU)
    hdus: list[list[str]]

    def sensor_header(self, location: str) -> dict[str, Any]:
        """Primary cards merged with one sensor's, and that sensor's segment headers."""
        if location not in self.sensors:
            raise KeyError(f"sensor {location} is not in this image (the camera reported {len(self.sensors)})")
        index, sensor, position = self.sensors[location]
        merged = list(encoded_hdu(tuple(merge_cards(self.hdus[0], self.hdus[position]))))
        segments = [
            {"name": name, "cards": split_cards(encode_hdu(cards))}
            for cards, name in segment_hdus(self.templates, self.resolved, self.computer, sensor, index, Notes())
        ]
        return {"sensor": location, "cards": merged, "segments": segments}
