"""The hs-sim scenario: a night of exposures described in YAML, validated by pydantic.

A scenario names the instrument and lists its exposures; everything else (telemetry, pointing,
camera events) is generated from it by :mod:`tools.sim.night`. Example::

    instrument: LATISS            # LATISS | ComCam | LSSTCam
    controller: O                 # optional, default O
    first_seq: 1                  # optional, SEQNUM of the first derived image name
    background: {mount_hz: 20, env_hz: 1}
    exposures:
      - start: "2026-11-25T03:04:06.457"   # TAI, start of integration
        exptime: 30.0
        ra: 225.1167                       # deg, ICRS, commanded target
        dec: -40.0301
        rotpa: 183.74                      # deg
        filter: SDSSr_65mm
        imgtype: OBJECT
        omit: [ATPtg.currentTargetStatus]
        changes: {ATDome.position.azimuthPosition: 123.0}

Times are TAI. ``start`` is an ISO date-time without time zone (read as TAI) or a number of
SAL "TAI unix seconds". Every model forbids unknown fields, so a misspelt key is named in the error.
:func:`load_scenario` turns every problem into one :class:`ScenarioError` whose message names the
file and the field, e.g. ``scenario night.yaml: exposures.0.exptime: Input should be a valid number``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from header.site import SITE_LAT_DEG, SITE_LON_DEG
from protocols.sal import UnknownTopicError, get_topic
from protocols.timescale import utc_from_tai

__all__ = [
    "INSTRUMENTS",
    "InstrumentInfo",
    "FilterInfo",
    "ImageId",
    "Background",
    "Exposure",
    "Scenario",
    "ScenarioError",
    "load_scenario",
    "default_scenario",
    "tai_from_datetime",
    "tai_iso",
    "dayobs_of",
    "parse_topic_ref",
    "parse_change_key",
]

_EPOCH = _dt.datetime(1970, 1, 1)
_HALF_DAY = 43200.0
IMAGE_NAME_RE = re.compile(r"^(AT|CC|MC)_([OCHSP])_(\d{8})_(\d{6})$")


# ----------------------------------------------------------------------------------------------
# Time helpers (SAL TAI unix seconds = seconds since 1970-01-01T00:00:00 on the TAI calendar)
# ----------------------------------------------------------------------------------------------
def tai_from_datetime(value: _dt.datetime) -> float:
    """TAI unix seconds of a date-time read on the TAI calendar (naive, or UTC-offset 0)."""
    if value.tzinfo is not None:
        value = value.replace(tzinfo=None)
    return (value - _EPOCH).total_seconds()


def tai_iso(tai: float, digits: int = 3) -> str:
    """ISO-8601 TAI date-time of TAI unix seconds, e.g. ``2026-11-25T03:04:06.457``."""
    d = _EPOCH + _dt.timedelta(seconds=round(tai, 6))
    s = d.strftime("%Y-%m-%dT%H:%M:%S.%f")
    return s[: len(s) - (6 - digits)] if digits else s[:-7]


def dayobs_of(tai: float) -> str:
    """DAYOBS (YYYYMMDD) of an instant: the TAI date of (TAI - 12 h)."""
    return (_EPOCH + _dt.timedelta(seconds=tai - _HALF_DAY)).strftime("%Y%m%d")


# ----------------------------------------------------------------------------------------------
# Instruments
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FilterInfo:
    """One filter (or LATISS disperser): name as reported, band, slot, position, focus offset."""

    name: str
    band: str
    slot: int
    position: float = 0.0  # ComCam/LSSTCam endSetFilter.filterPosition
    wavelength: float = 0.0  # nm, central wavelength (LATISS reportedFilterPosition)
    focus: float = 0.0  # mm, focus offset of this element


@dataclass(frozen=True)
class InstrumentInfo:
    name: str
    camera: str  # SAL component of the camera
    camcode: str  # CAMCODE / imageSource
    filters: tuple[FilterInfo, ...]
    dispersers: tuple[FilterInfo, ...] = ()

    def filter(self, name: str) -> FilterInfo:
        """Filter table entry; an unknown name gets a band guessed from the name and a spare slot."""
        return _lookup(self.filters, name)

    def disperser(self, name: str) -> FilterInfo:
        return _lookup(self.dispersers, name)


def _lookup(table: tuple[FilterInfo, ...], name: str) -> FilterInfo:
    for f in table:
        if f.name == name:
            return f
    m = re.match(r"^(?:SDSS)?([ugrizy])(?:_|$)", name)
    band = m.group(1) if m else name.split("_")[0]
    slot = max((f.slot for f in table), default=0) + 1
    return FilterInfo(name, band, slot, float(slot), 0.0, 0.0)


INSTRUMENTS: dict[str, InstrumentInfo] = {
    "LATISS": InstrumentInfo(
        "LATISS",
        "ATCamera",
        "AT",
        (
            FilterInfo("empty_1", "white", 0, 0.0, 0.0, 0.0),
            FilterInfo("SDSSr_65mm", "r", 1, 0.0, 620.0, 0.040),
            FilterInfo("SDSSg_65mm", "g", 2, 0.0, 475.0, 0.030),
            FilterInfo("SDSSi_65mm", "i", 3, 0.0, 765.0, 0.035),
            FilterInfo("SDSSz_65mm", "z", 4, 0.0, 905.0, 0.020),
            FilterInfo("BG40_65mm", "g", 5, 0.0, 445.0, 0.025),
            FilterInfo("OG550_65mm", "r", 6, 0.0, 690.0, 0.045),
        ),
        (
            FilterInfo("empty_1", "", 0),
            FilterInfo("holo4_003", "", 1, focus=0.150),
            FilterInfo("blue300lpmm_qn1", "", 2, focus=0.070),
            FilterInfo("ronchi170lpmm", "", 3, focus=0.110),
        ),
    ),
    "ComCam": InstrumentInfo(
        "ComCam",
        "CCCamera",
        "CC",
        (
            FilterInfo("u_02", "u", 1, 1.0, 0.0, 0.0),
            FilterInfo("g_01", "g", 2, 2.0, 0.0, 0.0),
            FilterInfo("r_03", "r", 3, 3.0, 0.0, 0.0),
            FilterInfo("i_06", "i", 4, 4.0, 0.0, 0.0),
            FilterInfo("z_03", "z", 5, 5.0, 0.0, 0.0),
            FilterInfo("y_04", "y", 6, 6.0, 0.0, 0.0),
        ),
    ),
    "LSSTCam": InstrumentInfo(
        "LSSTCam",
        "MTCamera",
        "MC",
        (
            FilterInfo("u_24", "u", 1, 0.0, 0.0, 0.0),
            FilterInfo("g_6", "g", 2, 60.0, 0.0, 0.0),
            FilterInfo("r_57", "r", 3, 120.0, 0.0, 0.0),
            FilterInfo("i_39", "i", 4, 180.0, 0.0, 0.0),
            FilterInfo("z_20", "z", 5, 240.0, 0.0, 0.0),
            FilterInfo("y_10", "y", 6, 300.0, 0.0, 0.0),
        ),
    ),
}


#: Components whose simulationMode the header reads (HIERARCH SIMULATE ...), as (component, salIndex).
_MT_SIMULATED = (
    ("MTMount", 0), ("MTM1M3", 0), ("MTM2", 0), ("MTHexapod", 1), ("MTHexapod", 2),
    ("MTRotator", 0), ("MTDome", 0), ("MTDomeTrajectory", 0),
)  # fmt: skip
SIMULATED_COMPONENTS: dict[str, tuple[tuple[str, int], ...]] = {
    "LATISS": (("ATMCS", 0), ("ATHexapod", 0), ("ATPneumatics", 0), ("ATDome", 0), ("ATSpectrograph", 0)),
    "ComCam": _MT_SIMULATED,
    "LSSTCam": _MT_SIMULATED,
}


# ----------------------------------------------------------------------------------------------
# Topic references used by omit / changes / simulation_modes
# ----------------------------------------------------------------------------------------------
def _split_component(text: str) -> tuple[str, int | None]:
    comp, sep, idx = text.partition(":")
    if not comp:
        raise ValueError(f"{text!r}: empty component name")
    if sep:
        if not idx.isdigit():
            raise ValueError(f"{text!r}: salIndex after ':' must be an integer")
        return comp, int(idx)
    return comp, None


def parse_topic_ref(ref: str) -> tuple[str, int | None, str]:
    """``Component[:salIndex].topic`` -> (component, salIndex or None, topic); checks the topic exists."""
    parts = ref.split(".")
    if len(parts) != 2 or not parts[1]:
        raise ValueError(f"{ref!r} is not of the form Component.topic (e.g. ATPtg.currentTargetStatus)")
    comp, idx = _split_component(parts[0])
    try:
        get_topic(comp, parts[1])
    except UnknownTopicError as exc:
        raise ValueError(str(exc)) from None
    return comp, idx, parts[1]


def parse_change_key(key: str) -> tuple[str, int | None, str, str]:
    """``Component[:salIndex].topic.field`` -> (component, salIndex or None, topic, field)."""
    parts = key.split(".")
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"{key!r} is not of the form Component.topic.field (e.g. ATDome.position.azimuthPosition)")
    comp, idx, topic = parse_topic_ref(f"{parts[0]}.{parts[1]}")
    fmap = get_topic(comp, topic).field_map()
    if parts[2] not in fmap:
        raise ValueError(f"SAL topic {comp}.{topic} has no field {parts[2]!r} (fields: {', '.join(fmap)})")
    return comp, idx, topic, parts[2]


def _check_topic_ref(ref: str) -> str:
    parse_topic_ref(ref)
    return ref


def _check_value(field_type: str, count: int, value: Any, key: str) -> None:
    def one(v: Any) -> bool:
        if field_type == "string":
            return isinstance(v, str)
        if field_type == "boolean":
            return isinstance(v, bool)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return False
        if field_type in ("double", "float"):
            return True
        return isinstance(v, int) or (isinstance(v, float) and v.is_integer())

    if isinstance(value, list):
        if count == 1:
            raise ValueError(f"{key}: field is a scalar, got a list")
        if len(value) != count:
            raise ValueError(f"{key}: array field has {count} elements, got {len(value)}")
        bad = [v for v in value if not one(v)]
    else:
        bad = [] if one(value) else [value]
    if bad:
        raise ValueError(f"{key}: {bad[0]!r} is not a valid {field_type}")


def _no_colon(v: str) -> str:
    if ":" in v:
        raise ValueError(f"{v!r} must not contain ':' (startIntegration.additionalValues is ':'-separated)")
    return v


TopicRef = Annotated[str, AfterValidator(_check_topic_ref)]
_NoColon = Annotated[str, AfterValidator(_no_colon)]


# ----------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------
class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Background(_Model):
    """Rates of the background telemetry."""

    mount_hz: float = Field(20.0, gt=0, le=100, description="mount position telemetry rate (Hz)")
    env_hz: float = Field(1.0, gt=0, le=20, description="~1 Hz telemetry rate: target status, dome, ESS, CCD temps")
    dimm_period: float = Field(60.0, gt=0, description="seconds between DIMM measurements")


class Exposure(_Model):
    """One exposure of the night."""

    start: _dt.datetime = Field(description="TAI start of integration (ISO without zone, or TAI unix seconds)")
    exptime: float = Field(ge=0, le=3600, allow_inf_nan=False)
    ra: float | None = Field(None, ge=0, lt=360, description="deg ICRS; None keeps the previous pointing")
    dec: float | None = Field(None, ge=-90, le=90)
    rotpa: float | None = Field(None, ge=-360, le=360, description="deg, sky position angle")
    filter: str | None = Field(None, min_length=1, description="None keeps the current filter")
    disperser: str | None = Field(None, min_length=1, description="LATISS grating (default empty_1)")
    imgtype: _NoColon = "OBJECT"
    image_name: str | None = Field(None, description="CAMCODE_CONTRLLR_DAYOBS_SEQNUM; default derived")
    object: str | None = Field(None, description="target name (ATPtg/MTPtg currentTarget.targetName)")
    group_id: _NoColon | None = None
    program: _NoColon = ""
    reason: _NoColon = ""
    test_type: _NoColon = ""
    readout_delay: float = Field(2.0, gt=0, le=60)
    end_telemetry_delay: float = Field(0.3, gt=0, le=60)
    omit: list[TopicRef] = Field(default_factory=list)
    changes: dict[str, Any] = Field(default_factory=dict)

    @field_validator("start")
    @classmethod
    def _tai_calendar(cls, v: _dt.datetime) -> _dt.datetime:
        off = v.utcoffset()
        if off is not None and off.total_seconds() != 0:
            raise ValueError("give the start as TAI without a time-zone offset")
        return v.replace(tzinfo=None)

    @field_validator("image_name")
    @classmethod
    def _image_name(cls, v: str | None) -> str | None:
        if v is not None and not IMAGE_NAME_RE.match(v):
            raise ValueError(f"{v!r} is not CAMCODE_CONTRLLR_DAYOBS_SEQNUM (e.g. AT_O_20261124_000001)")
        return v

    @field_validator("changes")
    @classmethod
    def _changes(cls, v: dict[str, Any]) -> dict[str, Any]:
        for key, value in v.items():
            comp, _, topic, fname = parse_change_key(key)
            f = get_topic(comp, topic).field_map()[fname]
            _check_value(f.type, f.count, value, key)
        return v

    @model_validator(mode="after")
    def _pointing(self) -> "Exposure":
        if (self.ra is None) != (self.dec is None):
            raise ValueError("give both ra and dec, or neither")
        return self

    @property
    def tai_start(self) -> float:
        return tai_from_datetime(self.start)

    @property
    def tai_readout(self) -> float:
        """Start of readout = end of integration."""
        return self.tai_start + self.exptime

    @property
    def tai_end_telemetry(self) -> float:
        return self.tai_readout + self.readout_delay + self.end_telemetry_delay


@dataclass(frozen=True)
class ImageId:
    """The identity a camera gives an image (OBSID = CAMCODE_CONTRLLR_DAYOBS_SEQNUM)."""

    name: str
    camcode: str
    controller: str
    dayobs: str
    seqnum: int


class Scenario(_Model):
    """A night: instrument, exposures and background telemetry settings."""

    instrument: Literal["LATISS", "ComCam", "LSSTCam"]
    controller: Literal["O", "C", "H", "S", "P"] = "O"
    first_seq: int = Field(1, ge=1, le=999999)
    seed: int | None = Field(None, description="RNG seed; default derived from the scenario itself")
    background: Background = Field(default_factory=Background)
    simulation_modes: dict[str, int] = Field(
        default_factory=dict, description="simulationMode.mode per component (default 0), e.g. {ATMCS: 1, 'MTHexapod:1': 1}"
    )
    omit: list[TopicRef] = Field(default_factory=list, description="topics never published this night")
    exposures: list[Exposure] = Field(min_length=1)

    @property
    def info(self) -> InstrumentInfo:
        return INSTRUMENTS[self.instrument]

    @model_validator(mode="after")
    def _simulation_modes(self) -> "Scenario":
        known = SIMULATED_COMPONENTS[self.instrument]
        for key in self.simulation_modes:
            comp, idx = _split_component(key)
            if idx is None:
                idx = 1 if comp == "MTHexapod" else 0
            if (comp, idx) not in known:
                names = ", ".join(f"{c}:{i}" if c == "MTHexapod" else c for c, i in known)
                raise ValueError(f"simulation_modes.{key}: not a component {self.instrument} reads a simulationMode of ({names})")
        return self

    @model_validator(mode="after")
    def _night(self) -> "Scenario":
        info = self.info
        prev: Exposure | None = None
        for i, e in enumerate(self.exposures):
            if prev is not None:
                if e.tai_start <= prev.tai_start:
                    raise ValueError(
                        f"exposures.{i}.start: {tai_iso(e.tai_start)} is not after exposure {i - 1} "
                        f"({tai_iso(prev.tai_start)}); exposures must be in time order"
                    )
                if e.tai_start < prev.tai_readout - 1e-9:
                    raise ValueError(
                        f"exposures.{i}.start: {tai_iso(e.tai_start)} is before exposure {i - 1} ends its "
                        f"integration ({tai_iso(prev.tai_readout)}); a new exposure may start during the "
                        "previous readout, not during its integration"
                    )
            if e.disperser is not None and self.instrument != "LATISS":
                raise ValueError(f"exposures.{i}.disperser: only LATISS has a disperser")
            if e.image_name is not None and not e.image_name.startswith(info.camcode + "_"):
                raise ValueError(
                    f"exposures.{i}.image_name: {e.image_name} does not start with {info.camcode}_ ({self.instrument})"
                )
            prev = e
        names: dict[str, int] = {}
        for i, img in enumerate(self.image_ids()):
            if img.name in names:
                raise ValueError(f"exposures.{i}.image_name: {img.name} is also exposure {names[img.name]}")
            names[img.name] = i
        return self

    def image_ids(self) -> list[ImageId]:
        """Image identities in exposure order.

        A derived name uses DAYOBS of the start and a running SEQNUM: ``first_seq`` for the first
        DAYOBS of the night, 1 after a DAYOBS change, and the number after an explicit name's.
        """
        info = self.info
        out: list[ImageId] = []
        next_seq: dict[str, int] = {}
        first_day = dayobs_of(self.exposures[0].tai_start)
        for e in self.exposures:
            if e.image_name is not None:
                m = IMAGE_NAME_RE.match(e.image_name)
                assert m is not None
                img = ImageId(e.image_name, m.group(1), m.group(2), m.group(3), int(m.group(4)))
            else:
                day = dayobs_of(e.tai_start)
                seq = next_seq.get(day, self.first_seq if day == first_day else 1)
                img = ImageId(f"{info.camcode}_{self.controller}_{day}_{seq:06d}", info.camcode, self.controller, day, seq)
            next_seq[img.dayobs] = img.seqnum + 1
            out.append(img)
        return out

    def rng_seed(self) -> int:
        """The seed of every random draw of the night: ``seed`` or a digest of the scenario."""
        if self.seed is not None:
            return self.seed
        digest = hashlib.sha256(self.model_dump_json().encode()).digest()
        return int.from_bytes(digest[:8], "big")

    def shifted(self, seconds: float) -> "Scenario":
        """The same night moved in time; explicit image names get the DAYOBS of their new start."""
        exps = []
        for e in self.exposures:
            start = e.start + _dt.timedelta(seconds=seconds)
            name = e.image_name
            if name is not None:
                cam, ctl, _, seq = name.split("_")
                name = f"{cam}_{ctl}_{dayobs_of(tai_from_datetime(start))}_{seq}"
            exps.append(e.model_copy(update={"start": start, "image_name": name}))
        data = self.model_dump()
        data["seed"] = self.rng_seed()  # same noise as the unshifted night
        data["exposures"] = [e.model_dump() for e in exps]
        return Scenario.model_validate(data)


class ScenarioError(ValueError):
    """A scenario file that cannot be used; the message names the file and the offending field."""


def _format_loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc)


def _format_errors(source: str, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        loc = _format_loc(err["loc"])
        lines.append(f"scenario {source}: {loc}: {msg}" if loc else f"scenario {source}: {msg}")
    return "\n".join(lines)


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario YAML file.

    Raises
    ------
    ScenarioError
        Unreadable file, bad YAML or any invalid field; the message starts with
        ``scenario <file name>:`` and names the field (pydantic location, e.g. ``exposures.0.exptime``).
    """
    path = Path(path)
    source = path.name
    try:
        text = path.read_text()
    except OSError as exc:
        raise ScenarioError(f"scenario {path}: cannot read: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or str(exc)
        raise ScenarioError(f"scenario {source}: not valid YAML{where}: {problem}") from None
    if not isinstance(data, dict):
        raise ScenarioError(f"scenario {source}: the top level must be a mapping (instrument, exposures, ...)")
    return scenario_from_dict(data, source)


def scenario_from_dict(data: dict[str, Any], source: str = "<dict>") -> Scenario:
    """Validate an already-parsed scenario; errors as :func:`load_scenario`."""
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(_format_errors(source, exc)) from None


# ----------------------------------------------------------------------------------------------
# The built-in night
# ----------------------------------------------------------------------------------------------
DEFAULT_START = "2026-11-25T03:04:06.457"

_DEFAULT_FILTERS = {
    "LATISS": ["SDSSr_65mm", "SDSSg_65mm", "SDSSi_65mm", "SDSSz_65mm"],
    "ComCam": ["r_03", "g_01", "i_06", "z_03", "u_02", "y_04"],
    "LSSTCam": ["r_57", "g_6", "i_39", "z_20", "u_24", "y_10"],
}
_DEFAULT_NAMES = ["HD 164461", "NGC 6752", "HD 185975", "47 Tuc field", "Fornax field", "HD 2151", "Omega Cen"]


def _local_sidereal_deg(tai: float) -> float:
    """Approximate local mean sidereal time (deg) at the site; good to ~0.01 deg for picking targets."""
    jd_ut = utc_from_tai(tai) / 86400.0 + 2440587.5
    d = jd_ut - 2451545.0
    gmst = 280.46061837 + 360.98564736629 * d
    return (gmst + SITE_LON_DEG) % 360.0


def default_scenario(instrument: str, n: int = 4, start: str | float | _dt.datetime | None = None) -> Scenario:
    """A built-in night of ``n`` short exposures, used by hs-demo when no scenario is given.

    The first exposure is a BIAS (exptime 0, unless ``n`` is 1); the others are OBJECT exposures of 2-5 s on distinct
    targets placed near the meridian at the start time (so they are well above the horizon), in
    different filters; every third one is a second "snap" of the previous target that starts
    during the previous readout (overlapping exposures).

    Parameters
    ----------
    instrument : {"LATISS", "ComCam", "LSSTCam"}
    n : int
        Number of exposures (>= 1).
    start : ISO TAI string, TAI unix seconds, naive datetime (TAI) or None
        Start of the first exposure; default ``DEFAULT_START``.
    """
    if instrument not in INSTRUMENTS:
        raise ScenarioError(f"scenario <default>: instrument: {instrument!r} is not one of {', '.join(INSTRUMENTS)}")
    if n < 1:
        raise ScenarioError("scenario <default>: exposures: need at least one exposure")
    if start is None:
        start = DEFAULT_START
    if isinstance(start, str):
        t0 = tai_from_datetime(_dt.datetime.fromisoformat(start))
    elif isinstance(start, _dt.datetime):
        t0 = tai_from_datetime(start)
    else:
        t0 = float(start)
    lst = _local_sidereal_deg(t0)
    filters = _DEFAULT_FILTERS[instrument]
    exptimes = [2.0, 3.0, 5.0, 4.0]
    exps: list[dict[str, Any]] = []
    t = t0
    prev: dict[str, Any] | None = None
    n_obj = 0
    for i in range(n):
        if i == 0 and n > 1:
            e: dict[str, Any] = {"exptime": 0.0, "imgtype": "BIAS", "reason": "bias", "program": "CALIB"}
        elif i % 3 == 0 and prev is not None and prev["imgtype"] == "OBJECT":
            keys = ("ra", "dec", "rotpa", "filter", "object", "imgtype", "program", "reason", "exptime", "group_id")
            e = {k: prev[k] for k in keys}
            e["_snap"] = True
        else:
            k = n_obj
            n_obj += 1
            ra = (lst + (-12.0 + 9.0 * (k % 4)) + 1.7 * k) % 360.0
            dec = SITE_LAT_DEG + (-14.0, 11.0, -22.0, 6.0, -35.0, 18.0)[k % 6]
            e = {
                "exptime": exptimes[k % len(exptimes)],
                "ra": round(ra, 4),
                "dec": round(dec, 4),
                "rotpa": round((35.0 + 47.0 * k) % 360.0, 2),
                "filter": filters[k % len(filters)],
                "object": _DEFAULT_NAMES[k % len(_DEFAULT_NAMES)],
                "imgtype": "OBJECT",
                "program": "BLOCK-365",
                "reason": "science",
            }
        if i > 0 and prev is not None:
            gap = 1.0 if e.pop("_snap", False) else 7.0  # a snap starts 1 s into the 2 s readout of the previous one
            t = prev["_t"] + prev["exptime"] + gap
        e["_t"] = t
        e.setdefault("group_id", tai_iso(t - 1.0).replace("-", "").replace(":", ""))
        exps.append(e)
        prev = e
    for e in exps:
        t_e = e.pop("_t")
        e["start"] = tai_iso(t_e)
    return scenario_from_dict({"instrument": instrument, "exposures": exps}, "<default>")
