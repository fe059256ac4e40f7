"""The simulated night as a timeline of SAL samples (pure: no DDS).

:func:`plan_night` turns a :class:`~tools.sim.scenario.Scenario` into a time-sorted list of
:class:`Emission` (TAI time, component, salIndex, topic, fields); :func:`iter_night` yields the same
sequence lazily (a long night at 20 Hz mount telemetry does not fit in memory as a list). The player
(:mod:`tools.sim.player`) writes them to DDS; tests inspect them directly.

What a night contains, per camera (topics as in ``shared/reference/keyword-sources.md``):

* night start (10 s before the first exposure): ``simulationMode`` of every component the
  ``HIERARCH SIMULATE`` keywords read, the camera's ``focalPlaneSummaryInfo`` and the static settings
  events (``ATSpectrograph.settingsAppliedValues``, ``ATMCS.m3PortSelected``).
* per exposure, at its *setup* (up to 8 s before the start, after the previous integration ended):
  the pointing component's ``currentTarget`` when the target changes (a slew), ``ATMCS.target``,
  ``telescopeVignetted`` (PARTIALLY during the slew, NO once the dome caught up), the filter events
  when the filter changes (``ATSpectrograph.reportedFilterPosition``/``reportedDisperserPosition``/
  ``reportedLinearStagePosition``, or ``<Camera>.endSetFilter``), ``ATAOS.focusOffsetSummary``
  (LATISS) or a new ``MTHexapod:1`` focus demand (ComCam, LSSTCam); then the camera events
  startIntegration (S), startShutterOpen, endShutterClose, startReadout (S + exptime), endReadout
  (+ readout_delay), imageReadoutParameters, endOfImageTelemetry (+ end_telemetry_delay).
* background telemetry over the whole night: mount positions at ``mount_hz``; target status,
  dome, CCD temperatures, camera vacuum, hexapod, ESS:301 weather at ``env_hz``; DIMM:1 every
  ``dimm_period`` seconds. Weather and temperatures drift slowly (seeded random walks); alt/az,
  hour angle, parallactic angle and airmass come from astropy (no refraction) at the site.

Scenario controls: an exposure's ``omit`` topics are not emitted between its setup and its
endOfImageTelemetry (the top-level ``omit`` ones never); events that belong to an exposure (its
camera events, its slew and filter events) are dropped only by that exposure's own ``omit``, so an
overlapping neighbour keeps its events; ``changes`` override fields from the middle
of the exposure until its endOfImageTelemetry (an event topic is re-published at both instants).
Everything random is drawn from RNGs seeded by :meth:`Scenario.rng_seed`: the same scenario always
gives the same night.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, NamedTuple

import numpy as np

from header.site import SITE_HEIGHT_M, SITE_LAT_DEG, SITE_LON_DEG
from protocols.sal import get_topic
from tools.sim.scenario import (
    INSTRUMENTS,
    SIMULATED_COMPONENTS,
    Background,
    Exposure,
    FilterInfo,
    ImageId,
    Scenario,
    parse_change_key,
    parse_topic_ref,
    tai_iso,
)

__all__ = [
    "Emission",
    "Sensor",
    "SITE_LON_DEG",
    "SITE_LAT_DEG",
    "SITE_HEIGHT_M",
    "focal_plane",
    "readout_sensors",
    "plan_night",
    "iter_night",
    "Night",
    "TELESCOPES",
    "ExposureOutline",
    "topic_counts",
    "emission_key",
]


#: salIndex of the components that have one (everything else is 0).
DEFAULT_INDEX = {"ESS": 301, "DIMM": 1, "MTHexapod": 1}

NIGHT_LEAD = 10.0  # night start, seconds before the first exposure
SETUP_LEAD = 8.0  # slew/filter setup, at most this long before an exposure
NIGHT_TAIL = 1.0  # background telemetry continues this long after the last endOfImageTelemetry

# ts_xml enumerations (ts_idl enums ATPtg/MTPtg, ATMCS, ATDomeTrajectory)
TARGET_RADEC = 1
FRAME_ICRS = 2
ROT_FRAME_TARGET = 1
ROT_MODE_FIELD = 1
M3_NASMYTH2 = 2
VIGN_NO, VIGN_PARTIALLY, VIGN_FULLY = 1, 2, 3


class Emission(NamedTuple):
    """One SAL sample to publish: TAI unix seconds, component, salIndex, topic short name, fields."""

    tai: float
    component: str
    sal_index: int
    topic: str
    fields: dict[str, Any]


class _Owned(Emission):
    """An emission that belongs to one exposure (its setup, camera and change events).

    Such an emission is omitted only when its own exposure omits the topic, even if it falls in the
    omit window of an overlapping exposure.
    """


def emission_key(e: Emission) -> str:
    """``Component.topic``, or ``Component:salIndex.topic`` for indexed components."""
    comp = f"{e.component}:{e.sal_index}" if e.sal_index else e.component
    return f"{comp}.{e.topic}"


def topic_counts(emissions: Iterable[Emission]) -> Counter:
    return Counter(emission_key(e) for e in emissions)


# ----------------------------------------------------------------------------------------------
# Focal planes
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sensor:
    raft: str
    slot: str
    manufacturer: str  # "ITL" or "E2V"
    kind: str  # "science", "guider" or "wavefront"

    @property
    def location(self) -> str:
        return f"{self.raft}_{self.slot}"

    @property
    def reb(self) -> str:
        if self.kind == "guider":
            return "RebG"
        if self.kind == "wavefront":
            return "RebW"
        return f"Reb{self.slot[1]}"


#: LSSTCam science rafts with e2v sensors (the other science rafts and the corner rafts are ITL).
LSSTCAM_E2V_RAFTS = frozenset(
    {"R11", "R12", "R13", "R14", "R21", "R22", "R23", "R24", "R30", "R31", "R32", "R33", "R34"}
)
CORNER_RAFTS = ("R00", "R04", "R40", "R44")
SCIENCE_SLOTS = tuple(f"S{r}{c}" for r in range(3) for c in range(3))
CORNER_SLOTS = (("SG0", "guider"), ("SG1", "guider"), ("SW0", "wavefront"), ("SW1", "wavefront"))

#: Segment geometry (LCA-13501) as imageReadoutParameters reports it.
READOUT = {
    "ITL": {"preCols": 3, "overCols": 32, "overRows": 48, "readRows": 2000, "readCols": 509},
    "E2V": {"preCols": 10, "overCols": 54, "overRows": 46, "readRows": 2002, "readCols": 512},
}
#: focalPlaneSummaryInfo/imageReadoutParameters ccdType: the sensor model number (STA3800C, CCD250).
CCD_TYPE = {"ITL": 3800, "E2V": 250}
CCD_MODEL = {"ITL": "ITL-3800C", "E2V": "E2V-CCD250"}
TEMP_SETPOINT = {"LATISS": -94.15, "ComCam": -95.0, "LSSTCam": -100.0}
#: MTCamera.focal_plane_Ccd is published every 10 s: each sample holds 201 CCDs x 6 doubles
#: (~11 kB), and the CCD temperature changes slowly (its keyword accepts samples up to 30 s old).
LSSTCAM_CCD_TREND_HZ = 0.1


def focal_plane(instrument: str) -> list[Sensor]:
    """The sensors in the order the camera lists them in ``ccdLocation``.

    LATISS: R00_S00. ComCam: R22_S00..R22_S22. LSSTCam: 205 = 21 science rafts R01..R43 x S00..S22
    (189) plus the corner rafts R00, R04, R40, R44 with SG0, SG1 (8 guiders) and SW0, SW1 (8 wavefront
    halves), in raft order.
    """
    if instrument == "LATISS":
        return [Sensor("R00", "S00", "ITL", "science")]
    if instrument == "ComCam":
        return [Sensor("R22", s, "ITL", "science") for s in SCIENCE_SLOTS]
    if instrument != "LSSTCam":
        raise ValueError(f"unknown instrument {instrument!r}")
    out = []
    for r in range(5):
        for c in range(5):
            raft = f"R{r}{c}"
            if raft in CORNER_RAFTS:
                out += [Sensor(raft, slot, "ITL", kind) for slot, kind in CORNER_SLOTS]
            else:
                manu = "E2V" if raft in LSSTCAM_E2V_RAFTS else "ITL"
                out += [Sensor(raft, s, manu, "science") for s in SCIENCE_SLOTS]
    return out


def ccd_locations(instrument: str) -> list[str]:
    """The CCDs as per-CCD camera telemetry (focal_plane_Ccd) lists them: every sensor, except that
    the two halves SW0 and SW1 of a corner raft's wavefront CCD are the one CCD ``Rxx_SW``
    (LSSTCam: 189 science + 8 guider + 4 wavefront = 201, the topic's array size)."""
    out: list[str] = []
    for s in focal_plane(instrument):
        name = f"{s.raft}_SW" if s.kind == "wavefront" else s.location
        if name not in out:
            out.append(name)
    return out


def readout_sensors(instrument: str) -> list[Sensor]:
    """Sensors read into the image (imageReadoutParameters): all but LSSTCam's guiders.

    The guider sensors are read continuously by the guider system, not with the science image, and
    MTCamera.imageReadoutParameters has room for 201 sensors only (189 science + 8 wavefront = 197).
    """
    return [s for s in focal_plane(instrument) if s.kind != "guider"]


def _stable_int(*parts: Any) -> int:
    return int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:8], "big")


def _rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed & 0xFFFFFFFFFFFFFFFF, _stable_int(name)])


def _pack(component: str, topic: str, field: str, values: list[Any]) -> Any:
    """Per-sensor values for a field: scalar for a 1-count field, else padded to the field's count."""
    f = get_topic(component, topic).field_map()[field]
    if f.type == "string":
        return ":".join(str(v) for v in values)
    if f.count == 1:
        if len(values) != 1:
            raise ValueError(f"{component}.{topic}.{field} is a scalar but the camera has {len(values)} sensors")
        return values[0]
    if len(values) > f.count:
        raise ValueError(f"{component}.{topic}.{field} has room for {f.count} sensors, not {len(values)}")
    pad = 0.0 if f.type in ("double", "float") else 0
    return list(values) + [pad] * (f.count - len(values))


def _focal_plane_summary(instrument: str, camera: str) -> dict[str, Any]:
    """focalPlaneSummaryInfo: identities are fixed per camera (seeded by the instrument name)."""
    sensors = focal_plane(instrument)
    rng = np.random.default_rng(_stable_int("focal-plane", instrument))
    rafts = sorted({s.raft for s in sensors})
    raft_name = {}
    corner = {s.raft for s in sensors if s.kind != "science"}
    for i, r in enumerate(rafts):
        raft_name[r] = f"LCA-10692_CRTM-{2 + i:04d}" if r in corner else f"LCA-11021_RTM-{i + 1:03d}"
    rebs = sorted({(s.raft, s.reb) for s in sensors})
    reb_serial = {rb: f"{int(rng.integers(0x100000000, 0xFFFFFFFFFFFF)):012x}" for rb in rebs}
    reb_name = {rb: f"LCA-13574-{int(rng.integers(1, 999)):03d}" for rb in rebs}
    ccd_num, man_ser, seq_key, seq_sum = [], [], [], []
    used: set[int] = set()
    for s in sensors:
        while True:
            n = int(rng.integers(1, 500))
            if n not in used:
                used.add(n)
                break
        ccd_num.append(f"{CCD_MODEL[s.manufacturer]}-{n:03d}")
        if s.manufacturer == "ITL":
            man_ser.append(f"{int(rng.integers(19000, 27000))}")
        else:
            man_ser.append(f"{int(rng.integers(16000, 19999))}-{int(rng.integers(1, 25)):02d}-{int(rng.integers(1, 9)):02d}")
        kind = {"science": "", "guider": "guider_", "wavefront": "wfs_"}[s.kind]
        seq_key.append(f"FP_{s.manufacturer}_{kind}2s_l3cp_v30")
        seq_sum.append(str(_stable_int("seq", s.manufacturer, s.kind) % 4294967296))
    setpoint = TEMP_SETPOINT[instrument]
    pack = lambda f, v: _pack(camera, "focalPlaneSummaryInfo", f, v)  # noqa: E731
    return {
        "ccdLocation": pack("ccdLocation", [s.location for s in sensors]),
        "raftBay": pack("raftBay", [s.raft for s in sensors]),
        "ccdSlot": pack("ccdSlot", [s.slot for s in sensors]),
        "rebSerialNumber": pack("rebSerialNumber", [reb_serial[(s.raft, s.reb)] for s in sensors]),
        "rebLSSTName": pack("rebLSSTName", [reb_name[(s.raft, s.reb)] for s in sensors]),
        "ccdLSSTName": pack("ccdLSSTName", ccd_num),
        "raftLSSTName": pack("raftLSSTName", [raft_name[s.raft] for s in sensors]),
        "ccdManSerNum": pack("ccdManSerNum", man_ser),
        "ccdManufacturer": pack("ccdManufacturer", [s.manufacturer for s in sensors]),
        "ccdType": pack("ccdType", [CCD_TYPE[s.manufacturer] for s in sensors]),
        "ccdTempSetPoint": pack("ccdTempSetPoint", [setpoint] * len(sensors)),
        "sequencerKey": pack("sequencerKey", seq_key),
        "sequencerChecksum": pack("sequencerChecksum", seq_sum),
    }


def _readout_parameters(instrument: str, camera: str, image_name: str) -> dict[str, Any]:
    sensors = readout_sensors(instrument)
    pack = lambda f, v: _pack(camera, "imageReadoutParameters", f, v)  # noqa: E731
    out: dict[str, Any] = {
        "imageName": image_name,
        "ccdLocation": pack("ccdLocation", [s.location for s in sensors]),
        "raftBay": pack("raftBay", [s.raft for s in sensors]),
        "ccdSlot": pack("ccdSlot", [s.slot for s in sensors]),
        "ccdType": pack("ccdType", [CCD_TYPE[s.manufacturer] for s in sensors]),
        "daqFolder": "raw",
        "daqAnnotation": "",
    }
    for f in ("overRows", "overCols", "readRows", "readCols", "preCols"):
        out[f] = pack(f, [READOUT[s.manufacturer][f] for s in sensors])
    for f in ("readCols2", "preRows", "postCols", "underCols"):
        out[f] = pack(f, [0] * len(sensors))
    return out


# ----------------------------------------------------------------------------------------------
# Sky: commanded pointing and its observed place
# ----------------------------------------------------------------------------------------------
def _wrap180(x: Any) -> Any:
    return (np.asarray(x) + 180.0) % 360.0 - 180.0


def _unwrap_deg(x: np.ndarray, period: float = 360.0) -> np.ndarray:
    return np.unwrap(np.asarray(x, dtype=float), period=period)


def _observe(tai: np.ndarray, ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, ...]:
    """Observed alt, az (deg, no refraction), hour angle (h) and apparent dec (deg) with astropy."""
    import astropy.units as u
    from astropy.coordinates import AltAz, EarthLocation, HADec, SkyCoord
    from astropy.time import Time
    from astropy.utils import iers

    site = EarthLocation.from_geodetic(lon=SITE_LON_DEG * u.deg, lat=SITE_LAT_DEG * u.deg, height=SITE_HEIGHT_M * u.m)
    with iers.conf.set_temp("auto_download", False), iers.conf.set_temp("auto_max_age", None):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t = Time(tai, format="unix_tai")
            c = SkyCoord(ra=ra * u.deg, dec=dec * u.deg, frame="icrs")
            aa = c.transform_to(AltAz(obstime=t, location=site))
            hd = c.transform_to(HADec(obstime=t, location=site))
    return aa.alt.deg, aa.az.deg, hd.ha.hour, hd.dec.deg


@dataclass(frozen=True)
class _Target:
    ra: float
    dec: float
    rotpa: float
    name: str


class _Sky:
    """Commanded pointing as a function of time (tracking, linear slews) and its observed place.

    Alt/az, hour angle and parallactic angle are computed with astropy on a 1 s grid (plus every
    slew and exposure instant) and interpolated in between.
    """

    def __init__(self, knots: list[tuple[float, _Target]], extra_times: list[float], t0: float, t1: float):
        kt = np.array([k[0] for k in knots], dtype=float)
        ra = np.array([k[1].ra for k in knots], dtype=float)
        rot = np.array([k[1].rotpa for k in knots], dtype=float)
        self._kt = kt
        self._kra = _unwrap_deg(ra)
        self._kdec = np.array([k[1].dec for k in knots], dtype=float)
        self._krot = _unwrap_deg(rot)
        grid = np.arange(math.floor(t0) - 2.0, math.ceil(t1) + 3.0, 1.0)
        grid = np.unique(np.concatenate([grid, kt, np.asarray(extra_times, dtype=float)]))
        gra, gdec, _ = self.pointing(grid)
        alt, az, ha, dec_app = _observe(grid, gra, gdec)
        h = np.radians(ha * 15.0)
        d = np.radians(dec_app)
        lat = math.radians(SITE_LAT_DEG)
        pa = np.degrees(np.arctan2(np.sin(h), math.tan(lat) * np.cos(d) - np.sin(d) * np.cos(h)))
        self._g = grid
        self._alt = alt
        self._az = _unwrap_deg(az)
        self._ha = _unwrap_deg(ha, 24.0)
        self._pa = _unwrap_deg(pa)

    def pointing(self, t: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        t = np.asarray(t, dtype=float)
        ra = np.interp(t, self._kt, self._kra) % 360.0
        dec = np.interp(t, self._kt, self._kdec)
        rot = np.interp(t, self._kt, self._krot) % 360.0
        return ra, dec, rot

    def at(self, t: Any) -> dict[str, np.ndarray]:
        """Everything about the pointing at TAI ``t`` (scalar or array); angles in deg, ha in h."""
        t = np.asarray(t, dtype=float)
        ra, dec, rotpa = self.pointing(t)
        alt = np.interp(t, self._g, self._alt)
        az = np.interp(t, self._g, self._az) % 360.0
        ha = (np.interp(t, self._g, self._ha) + 12.0) % 24.0 - 12.0
        pa = _wrap180(np.interp(t, self._g, self._pa))
        airmass = 1.0 / np.sin(np.radians(np.maximum(alt, 0.5)))
        return {
            "ra": ra,
            "dec": dec,
            "rotpa": rotpa,
            "alt": alt,
            "az": az,
            "ha": ha,
            "pa": pa,
            "airmass": airmass,
            # Approximate rotator angles: field rotation only (MT Cassegrain), plus elevation (AT Nasmyth).
            "rot_mt": _wrap180(pa - rotpa),
            "rot_at": _wrap180(pa - rotpa - alt),
        }

    def rate(self, t: float, key: str, dt: float = 0.5) -> float:
        """d(key)/dt in units per second (angles wrapped)."""
        a, b = self.at(t - dt)[key], self.at(t + dt)[key]
        d = float(b - a)
        if key in ("az", "pa", "rotpa", "ra", "rot_mt", "rot_at"):
            d = float(_wrap180(d))
        elif key == "ha":
            d = (d + 12.0) % 24.0 - 12.0
        return d / (2 * dt)


def _scalar(d: dict[str, np.ndarray]) -> dict[str, float]:
    return {k: float(v) for k, v in d.items()}


# ----------------------------------------------------------------------------------------------
# Slow environment drifts (1 s grid, seeded)
# ----------------------------------------------------------------------------------------------
class _Env:
    def __init__(self, rng: np.random.Generator, t0: float, t1: float):
        self.g = np.arange(math.floor(t0) - 2.0, math.ceil(t1) + 3.0, 1.0)
        n = len(self.g)
        hours = (self.g - self.g[0]) / 3600.0

        def walk(step: float, revert: float) -> np.ndarray:
            steps = rng.normal(0.0, step, n)
            x = np.empty(n)
            acc = 0.0
            for i in range(n):
                acc += steps[i] - revert * acc
                x[i] = acc
            return x

        self.air_temp = rng.uniform(9.0, 13.0) - 0.3 * hours + walk(0.01, 0.002)
        self.pressure = 74300.0 + rng.uniform(-150.0, 150.0) + walk(0.5, 0.002)  # Pa
        self.humidity = np.clip(rng.uniform(15.0, 35.0) + walk(0.05, 0.002), 2.0, 98.0)
        self.wind_speed = np.clip(rng.uniform(2.0, 7.0) + walk(0.08, 0.01), 0.0, 30.0)
        self.wind_dir = (rng.uniform(0.0, 360.0) + walk(0.5, 0.002)) % 360.0
        self.seeing = np.clip(rng.uniform(0.6, 1.0) + walk(0.003, 0.0005), 0.35, 3.0)
        self.ccd_temp = walk(0.002, 0.01)
        self.cold_plate = walk(0.01, 0.005)
        self.vacuum = np.exp(walk(0.002, 0.001)) * rng.uniform(1.0e-8, 5.0e-8)

    def at(self, name: str, t: float) -> float:
        series = getattr(self, name)
        if name == "wind_dir":
            return float(np.interp(t, self.g, _unwrap_deg(series)) % 360.0)
        return float(np.interp(t, self.g, series))


# ----------------------------------------------------------------------------------------------
# The night
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExposureOutline:
    """What the planner decided for one exposure (times in TAI unix seconds)."""

    index: int
    image: ImageId
    exposure: Exposure
    start: float
    end_integration: float
    end_readout: float
    end_telemetry: float
    setup: float  # start of this exposure's window (omit applies from here to end_telemetry)
    arrive: float  # end of the slew
    target: _Target
    slew: bool  # a new target (currentTarget published)
    filter: FilterInfo
    filter_changed: bool
    disperser: FilterInfo | None
    disperser_changed: bool
    alt: float  # deg at start
    airmass: float  # at start


_MARK = "__hs_sim_mark__"  # fields key of a re-publication marker for an overridden event topic


# ----------------------------------------------------------------------------------------------
# Per-telescope event emitters
# ----------------------------------------------------------------------------------------------
_Add = Callable[..., None]
_Streams = list[tuple[tuple[tuple[str, str], ...], Iterator[Emission]]]


class _Telescope:
    """What one telescope's control system publishes in a night, beside the camera's events.

    :class:`Night` plans what every telescope shares (pointing target, scheduler visit,
    vignetting, camera events) and asks its emitter, chosen from :data:`TELESCOPES` by
    instrument, for the rest: static settings at night start, the mount target, the filter
    events, the focus and the background telemetry streams.
    """

    pointing = ""  #: pointing component (currentTarget, currentTargetStatus)
    rotator_key = ""  #: sky-model key of the rotator angle the pointing component reports
    scheduler_index = 0  #: Scheduler salIndex
    dome_trajectory = ""  #: component of telescopeVignetted

    def __init__(self, night: Night):
        self.night = night

    def night_start(self, t: float, add: _Add) -> None:
        """Static settings events at night start (after simulationMode and focalPlaneSummaryInfo)."""

    def mount_target(self, o: ExposureOutline, lead: float, at_arrive: dict[str, float], add: _Add) -> None:
        """The mount's own target event at a slew."""

    def vignetting_clear(self) -> dict[str, int]:
        """telescopeVignetted fields once the dome has caught up."""
        return {"vignetted": VIGN_NO, "azimuth": VIGN_NO, "shutter": VIGN_NO}

    def filter_events(self, o: ExposureOutline, t: float, add: _Add) -> None:
        """Filter (and disperser) events when they change before an exposure."""

    def focus_events(self, o: ExposureOutline, rng: np.random.Generator, state: dict, add: _Add) -> None:
        """Focus after a slew or a filter change."""

    def background(self, bg: Background, cam: str) -> _Streams:
        """The telescope's and camera's telemetry streams, each with the (component, topic) pairs it writes."""
        return []


class _AuxTel(_Telescope):
    """Auxiliary Telescope with LATISS: ATSpectrograph filters and dispersers, ATAOS focus, ATMCS."""

    pointing = "ATPtg"
    rotator_key = "rot_at"
    scheduler_index = 2
    dome_trajectory = "ATDomeTrajectory"

    def night_start(self, t: float, add: _Add) -> None:
        f = self.night.info.filters
        g = self.night.info.dispersers
        add(
            t + 0.03,
            "ATSpectrograph",
            "settingsAppliedValues",
            {
                "host": "127.0.0.1",
                "port": 9999,
                "connectionTimeout": 10.0,
                "responseTimeout": 10.0,
                "moveTimeout": 60.0,
                "linearStageMinPos": 0.0,
                "linearStageMaxPos": 75.0,
                "linearStageSpeed": 5.0,
                "filterNames": ",".join(x.name for x in f),
                "filterCentralWavelengths": ",".join(f"{x.wavelength:g}" for x in f),
                "filterFocusOffsets": ",".join(f"{x.focus:g}" for x in f),
                "filterPointingOffsets": ",".join("[0, 0]" for _ in f),
                "gratingNames": ",".join(x.name for x in g),
                "gratingFocusOffsets": ",".join(f"{x.focus:g}" for x in g),
                "gratingPointingOffsets": ",".join("[0, 0]" for _ in g),
                "instrumentPort": M3_NASMYTH2,
            },
        )
        add(t + 0.04, "ATMCS", "m3PortSelected", {"selected": M3_NASMYTH2})

    def mount_target(self, o: ExposureOutline, lead: float, at_arrive: dict[str, float], add: _Add) -> None:
        sky = self.night.sky
        add(
            o.setup + 0.01 * min(lead, 1.0),
            "ATMCS",
            "target",
            {
                "elevation": at_arrive["alt"],
                "elevationVelocity": sky.rate(o.arrive, "alt"),
                "azimuth": at_arrive["az"],
                "azimuthVelocity": sky.rate(o.arrive, "az"),
                "nasmyth1RotatorAngle": 0.0,
                "nasmyth1RotatorAngleVelocity": 0.0,
                "nasmyth2RotatorAngle": at_arrive["rot_at"],
                "nasmyth2RotatorAngleVelocity": sky.rate(o.arrive, "rot_at"),
                "taiTime": o.setup,
                "trackId": o.index + 1,
                "tracksys": "SIDEREAL",
                "radesys": "ICRS",
            },
        )

    def filter_events(self, o: ExposureOutline, t: float, add: _Add) -> None:
        if o.filter_changed:
            f = o.filter
            add(
                t,
                "ATSpectrograph",
                "reportedFilterPosition",
                {
                    "slot": f.slot,
                    "name": f.name,
                    "band": f.band,
                    "centralWavelength": f.wavelength,
                    "focusOffset": f.focus,
                    "pointingOffsets": [0.0, 0.0],
                },
            )
        if o.disperser_changed and o.disperser is not None:
            d = o.disperser
            add(
                t + 0.001,
                "ATSpectrograph",
                "reportedDisperserPosition",
                {"slot": d.slot, "name": d.name, "band": d.band, "focusOffset": d.focus, "pointingOffsets": [0.0, 0.0]},
            )
            add(t + 0.002, "ATSpectrograph", "reportedLinearStagePosition", {"position": 67.0 if d.slot else 0.0})

    def focus_events(self, o: ExposureOutline, rng: np.random.Generator, state: dict, add: _Add) -> None:
        if o.slew:
            state["user_focus"] += float(rng.normal(0.0, 0.004))
        user = round(state["user_focus"], 5)
        ff = o.filter.focus
        df = o.disperser.focus if o.disperser else 0.0
        add(
            o.arrive,
            "ATAOS",
            "focusOffsetSummary",
            {"total": user + ff + df, "userApplied": user, "filter": ff, "disperser": df, "wavelength": 0.0},
        )

    def background(self, bg: Background, cam: str) -> _Streams:
        n = self.night
        return [
            ((("ATPtg", "mountPositions"),), n._at_mount(bg.mount_hz)),
            ((("ATPtg", "currentTargetStatus"),), n._target_status(bg.env_hz, 0.1)),
            ((("ATDome", "position"),), n._at_dome(bg.env_hz, 0.2)),
            (((cam, "focal_plane_Ccd"),), n._ccd_temps(bg.env_hz, 0.3)),
            ((("ATCamera", "vacuum"),), n._at_vacuum(bg.env_hz, 0.35)),
        ]


class _MainTel(_Telescope):
    """Simonyi Survey Telescope (ComCam): camera endSetFilter, MTHexapod:1 focus demands, MTMount."""

    pointing = "MTPtg"
    rotator_key = "rot_mt"
    scheduler_index = 1
    dome_trajectory = "MTDomeTrajectory"
    ccd_trend_hz: float | None = None  #: cap on the focal_plane_Ccd rate (None: the environment rate)

    def vignetting_clear(self) -> dict[str, int]:
        return dict(super().vignetting_clear(), elevation=VIGN_NO)

    def filter_events(self, o: ExposureOutline, t: float, add: _Add) -> None:
        if o.filter_changed:
            f = o.filter
            add(
                t,
                self.night.camera,
                "endSetFilter",
                {"filterName": f.name, "filterType": f.band, "filterSlot": f.slot, "filterPosition": f.position},
            )

    def focus_events(self, o: ExposureOutline, rng: np.random.Generator, state: dict, add: _Add) -> None:
        """A new hexapod demand at arrival, played by the background MTHexapod stream."""
        band_um = {"u": 40.0, "g": 20.0, "r": 0.0, "i": -10.0, "z": -20.0, "y": -30.0}.get(o.filter.band, 0.0)
        z = state["hexapod_z"] + band_um + float(rng.normal(0.0, 2.0))
        demand = [float(rng.normal(0.0, 5.0)), float(rng.normal(0.0, 5.0)), z,
                  float(rng.normal(0.0, 0.002)), float(rng.normal(0.0, 0.002)), 0.0]  # fmt: skip
        self.night._hexapod_demands.append((o.arrive, demand))

    def background(self, bg: Background, cam: str) -> _Streams:
        n = self.night
        mount = (("MTPtg", "mountPosition"), ("MTMount", "azimuth"), ("MTMount", "elevation"), ("MTRotator", "rotation"))
        ccd_hz = bg.env_hz if self.ccd_trend_hz is None else min(bg.env_hz, self.ccd_trend_hz)
        return [
            (mount, n._mt_mount(bg.mount_hz)),
            ((("MTPtg", "currentTargetStatus"),), n._target_status(bg.env_hz, 0.1)),
            ((("MTHexapod", "application"),), n._hexapod(bg.env_hz, 0.15)),
            (((cam, "focal_plane_Ccd"),), n._ccd_temps(ccd_hz, 0.3)),
        ]


class _MainTelLSSTCam(_MainTel):
    """Simonyi Survey Telescope with LSSTCam: 201 CCD temperatures, published as a slow trend."""

    ccd_trend_hz = LSSTCAM_CCD_TREND_HZ


#: The event emitter of each instrument's telescope.
TELESCOPES: dict[str, type[_Telescope]] = {"LATISS": _AuxTel, "ComCam": _MainTel, "LSSTCam": _MainTelLSSTCam}


class Night:
    """Plans one scenario: exposure outlines, sky and environment models, emission streams."""

    def __init__(self, scenario: Scenario):
        self.scenario = scenario
        self.instrument = scenario.instrument
        self.info = INSTRUMENTS[scenario.instrument]
        self.camera = self.info.camera
        self.telescope = TELESCOPES[scenario.instrument](self)
        self.seed = scenario.rng_seed()
        self.images = scenario.image_ids()
        exps = scenario.exposures
        self.t_start = exps[0].tai_start - NIGHT_LEAD
        self.t_end = max(e.tai_end_telemetry for e in exps) + NIGHT_TAIL
        self.outlines = self._outline_exposures()
        knots: list[tuple[float, _Target]] = [(self.t_start - 5.0, self.outlines[0].target)]
        extra: list[float] = []
        for o in self.outlines:
            if o.slew:
                prev = knots[-1][1]
                knots.append((max(o.setup, knots[-1][0] + 1e-6), prev))
                knots.append((max(o.arrive, knots[-1][0] + 1e-6), o.target))
            extra += [o.setup, o.arrive, o.start, o.end_integration]
        knots.append((max(self.t_end + 5.0, knots[-1][0] + 1.0), knots[-1][1]))
        self.sky = _Sky(knots, extra, self.t_start, self.t_end)
        self.env = _Env(_rng(self.seed, "env"), self.t_start, self.t_end)
        self.outlines = [self._with_sky(o) for o in self.outlines]
        self._omit_all = [parse_topic_ref(r) for r in scenario.omit]
        self._omit_windows: dict[tuple[str, str], list[tuple[float, float, int | None]]] = {}
        self._overrides: dict[tuple[str, int, str], list[tuple[float, float, dict[str, Any]]]] = {}
        for o in self.outlines:
            for ref in o.exposure.omit:
                comp, idx, topic = parse_topic_ref(ref)
                self._omit_windows.setdefault((comp, topic), []).append((o.setup, o.end_telemetry, idx))
            mid = max(o.start + o.exposure.exptime / 2.0, o.start + 1e-4)
            for key, value in o.exposure.changes.items():
                comp, idx, topic, fname = parse_change_key(key)
                idx = DEFAULT_INDEX.get(comp, 0) if idx is None else idx
                f = get_topic(comp, topic).field_map()[fname]
                if f.count > 1 and not isinstance(value, list):
                    value = [value] * f.count
                spans = self._overrides.setdefault((comp, idx, topic), [])
                spans.append((mid, o.end_telemetry, {fname: value}))

    # -- planning ---------------------------------------------------------------------------
    def _outline_exposures(self) -> list[ExposureOutline]:
        sc = self.scenario
        exps = sc.exposures
        from tools.sim.scenario import _local_sidereal_deg  # approximate LST for the zenith fallback

        first_pointed = next((e for e in exps if e.ra is not None), None)
        if first_pointed is not None:
            # exposures before the first pointed one (calibrations) find the telescope already there
            assert first_pointed.ra is not None and first_pointed.dec is not None
            fname = first_pointed.object or f"J{first_pointed.ra:08.4f}{first_pointed.dec:+08.4f}"
            fallback = _Target(first_pointed.ra, first_pointed.dec, first_pointed.rotpa or 0.0, fname)
        else:
            fallback = _Target(_local_sidereal_deg(self.t_start), SITE_LAT_DEG, 0.0, "")
        first_filter = next((e.filter for e in exps if e.filter), None) or self.info.filters[0].name
        out: list[ExposureOutline] = []
        target: _Target | None = None
        filt: FilterInfo | None = None
        disp: FilterInfo | None = None
        prev_int_end: float | None = None
        for i, (e, img) in enumerate(zip(exps, self.images)):
            S = e.tai_start
            T = e.exptime
            lead = SETUP_LEAD if prev_int_end is None else min(SETUP_LEAD, 0.8 * max(S - prev_int_end, 0.0))
            setup = S - lead
            arrive = setup + max(0.6 * lead, 1e-3)
            base = target or fallback
            if e.ra is not None and e.dec is not None:
                ra, dec = e.ra, e.dec
            else:
                ra, dec = base.ra, base.dec
            rotpa = e.rotpa if e.rotpa is not None else base.rotpa
            if e.object is not None:
                name = e.object
            elif e.ra is not None and e.dec is not None:
                name = f"J{ra:08.4f}{dec:+08.4f}"
            else:
                name = base.name or f"J{ra:08.4f}{dec:+08.4f}"
            new_target = _Target(float(ra), float(dec), float(rotpa), name)
            slew = target is None or new_target != target
            target = new_target
            new_filt = self.info.filter(e.filter or (filt.name if filt else first_filter))
            filter_changed = filt is None or new_filt != filt
            filt = new_filt
            new_disp = None
            disp_changed = False
            if self.info.dispersers:  # LATISS only
                new_disp = self.info.disperser(e.disperser or (disp.name if disp else "empty_1"))
                disp_changed = disp is None or new_disp != disp
                disp = new_disp
            out.append(
                ExposureOutline(
                    index=i,
                    image=img,
                    exposure=e,
                    start=S,
                    end_integration=S + T,
                    end_readout=S + T + e.readout_delay,
                    end_telemetry=e.tai_end_telemetry,
                    setup=setup,
                    arrive=arrive,
                    target=target,
                    slew=slew,
                    filter=filt,
                    filter_changed=filter_changed,
                    disperser=disp,
                    disperser_changed=disp_changed,
                    alt=float("nan"),
                    airmass=float("nan"),
                )
            )
            prev_int_end = S + T
        return out

    def _with_sky(self, o: ExposureOutline) -> ExposureOutline:
        s = _scalar(self.sky.at(o.start))
        return ExposureOutline(**{**o.__dict__, "alt": s["alt"], "airmass": s["airmass"]})

    # -- filtering: omit and changes ------------------------------------------------------------
    def _omitted(self, e: Emission) -> bool:
        for comp, idx, topic in self._omit_all:
            if comp == e.component and topic == e.topic and (idx is None or idx == e.sal_index):
                return True
        if isinstance(e, _Owned):
            return False  # already decided by its exposure's omit list (see _discrete)
        for t0, t1, idx in self._omit_windows.get((e.component, e.topic), ()):
            if t0 <= e.tai <= t1 and (idx is None or idx == e.sal_index):
                return True
        return False

    def _finish(self, stream: Iterable[Emission]) -> Iterator[Emission]:
        last: dict[tuple[str, int, str], dict[str, Any]] = {}
        for e in stream:
            key = (e.component, e.sal_index, e.topic)
            spans = self._overrides.get(key)
            fields = e.fields
            if spans is not None:
                if _MARK in fields:
                    fields = dict(last.get(key, {}))
                else:
                    last[key] = fields
                active = [ov for t0, t1, ov in spans if t0 <= e.tai <= t1]
                if active:
                    fields = dict(fields)
                    for ov in active:
                        fields.update(ov)
                e = e._replace(fields=fields)
            if self._omitted(e):
                continue
            yield Emission(*e) if isinstance(e, _Owned) else e

    # -- streams ----------------------------------------------------------------------------
    def emissions(self) -> Iterator[Emission]:
        """Every sample of the night in time order (ties keep the order of creation)."""
        streams: list[Iterable[Emission]] = [self._discrete()]
        streams += [gen for _, gen in self._background()]
        return self._finish(heapq.merge(*streams, key=lambda e: e.tai))

    def _discrete(self) -> list[Emission]:
        """Night-start, per-exposure and camera events, sorted by (time, creation order)."""
        items: list[tuple[float, int, Emission]] = []
        owner: list[ExposureOutline | None] = [None]
        omits: dict[int, list[tuple[str, int | None, str]]] = {
            o.index: [parse_topic_ref(r) for r in o.exposure.omit] for o in self.outlines
        }

        def add(t: float, comp: str, topic: str, fields: dict[str, Any], idx: int | None = None) -> None:
            idx = DEFAULT_INDEX.get(comp, 0) if idx is None else idx
            o = owner[0]
            if o is None:
                items.append((t, len(items), Emission(t, comp, idx, topic, fields)))
                return
            for c, i, tp in omits[o.index]:
                if c == comp and tp == topic and (i is None or i == idx):
                    return
            items.append((t, len(items), _Owned(t, comp, idx, topic, fields)))

        self._night_start(add)
        rng = _rng(self.seed, "setup")
        state = {"user_focus": 0.0, "hexapod_z": float(rng.uniform(-40.0, 40.0))}
        self._hexapod_demands: list[tuple[float, list[float]]] = []
        for o in self.outlines:
            owner[0] = o
            self._setup_events(o, add, rng, state)
            self._camera_events(o, add)
            mid = max(o.start + o.exposure.exptime / 2.0, o.start + 1e-4)
            for key in o.exposure.changes:
                comp, idx, topic, _ = parse_change_key(key)
                if get_topic(comp, topic).kind == "event":
                    add(mid, comp, topic, {_MARK: "on"}, idx)
                    add(o.end_telemetry + 1e-4, comp, topic, {_MARK: "off"}, idx)
        owner[0] = None
        items.sort(key=lambda x: (x[0], x[1]))
        return [x[2] for x in items]

    def _night_start(self, add: Callable[..., None]) -> None:
        t = self.t_start
        modes = {}
        for key, mode in self.scenario.simulation_modes.items():
            comp, _, idx = key.partition(":")
            modes[(comp, int(idx) if idx else DEFAULT_INDEX.get(comp, 0))] = mode
        for k, (comp, idx) in enumerate(SIMULATED_COMPONENTS[self.instrument]):
            add(t + 0.001 * k, comp, "simulationMode", {"mode": int(modes.get((comp, idx), 0))}, idx)
        add(t + 0.02, self.camera, "focalPlaneSummaryInfo", _focal_plane_summary(self.instrument, self.camera))
        self.telescope.night_start(t, add)

    def _setup_events(self, o: ExposureOutline, add: Callable[..., None], rng: np.random.Generator, state: dict) -> None:
        """Slew, filter and focus events before an exposure; the telescope's emitter adds its own."""
        tel = self.telescope
        lead = o.start - o.setup
        tgt = o.target
        at_arrive = _scalar(self.sky.at(o.arrive))
        if o.slew:
            add(
                o.setup,
                tel.pointing,
                "currentTarget",
                {
                    "timestamp": o.setup,
                    "targetType": TARGET_RADEC,
                    "targetName": tgt.name,
                    "ra": math.radians(tgt.ra),
                    "declination": math.radians(tgt.dec),
                    "frame": FRAME_ICRS,
                    "azDegs": at_arrive["az"],
                    "elDegs": at_arrive["alt"],
                    "planetName": 0,
                    "ephemFile": "",
                    "equinox": 2000.0,
                    "raString": _sexagesimal(tgt.ra / 15.0, 3),
                    "decString": _sexagesimal(tgt.dec, 2, signed=True),
                    "epoch": 2000.0,
                    "difftrackRA": 0.0,
                    "difftrackDec": 0.0,
                    "properMotionRA": 0.0,
                    "properMotionDec": 0.0,
                    "parallax": 0.0,
                    "radvel": 0.0,
                    "rotPA": tgt.rotpa,
                    "rotAngle": at_arrive[tel.rotator_key],
                    "rotStartFrame": ROT_FRAME_TARGET,
                    "rotTrackFrame": ROT_FRAME_TARGET,
                    "rotMode": ROT_MODE_FIELD,
                    "raHours": tgt.ra / 15.0,
                    "decDegs": tgt.dec,
                },
            )
            start_sky = _scalar(self.sky.at(o.start))
            add(
                o.setup - 0.5,
                "Scheduler",
                "target",
                {
                    "targetId": 1000 + o.index,
                    "blockId": 7,
                    "requestTime": o.setup - 0.5,
                    "ra": tgt.ra,
                    "decl": tgt.dec,
                    "alt": start_sky["alt"],
                    "az": start_sky["az"],
                    "skyAngle": tgt.rotpa,
                    "filter": o.exposure.filter or "",
                    "numExposures": 1,
                    "airmass": 1.0 / math.cos(math.radians(90.0 - start_sky["alt"])) if start_sky["alt"] > 0 else 0.0,
                    "note": f"hs-sim visit {o.index + 1}",
                    "targetName": tgt.name,
                },
                tel.scheduler_index,
            )
            tel.mount_target(o, lead, at_arrive, add)
            moving = o.index > 0 and lead > 0
            clear = tel.vignetting_clear()
            if moving:
                busy = dict(clear, vignetted=VIGN_PARTIALLY, azimuth=VIGN_PARTIALLY)
                add(o.setup + 0.05 * min(lead, 1.0), tel.dome_trajectory, "telescopeVignetted", busy)
                add(o.arrive + 0.5 * max(o.start - o.arrive, 0.0), tel.dome_trajectory, "telescopeVignetted", clear)
            elif o.index == 0:
                add(o.setup + 0.05 * min(lead, 1.0), tel.dome_trajectory, "telescopeVignetted", clear)
        tel.filter_events(o, o.setup + 0.4 * lead, add)
        if o.slew or o.filter_changed or o.disperser_changed:
            tel.focus_events(o, rng, state, add)

    def _camera_events(self, o: ExposureOutline, add: Callable[..., None]) -> None:
        e = o.exposure
        img = o.image
        S, T = o.start, e.exptime
        group = e.group_id if e.group_id is not None else tai_iso(o.setup).replace("-", "").replace(":", "")
        common = {
            "additionalKeys": "groupId:imageType:testType:reason:program",
            "additionalValues": ":".join([group, e.imgtype, e.test_type, e.reason, e.program]),
            "imagesInSequence": 1,
            "imageName": img.name,
            "imageIndex": 1,
            "imageSource": img.camcode,
            "imageController": img.controller,
            "imageDate": img.dayobs,
            "imageNumber": img.seqnum,
            "timestampAcquisitionStart": S,
        }
        cam = self.camera
        add(S, cam, "startIntegration", {**common, "exposureTime": T, "mode": "", "timeout": T + 30.0})
        if T > 0:
            eps = min(0.005, T / 4.0)
            add(S + eps, cam, "startShutterOpen", {"timestampTransition": S + eps})
            add(S + T - eps, cam, "endShutterClose", {"timestampTransition": S + T - eps})
        t_ro = S + T
        add(t_ro, cam, "startReadout", {**common, "exposureTime": T, "timestampStartOfReadout": t_ro})
        t_er = t_ro + e.readout_delay
        add(t_er, cam, "endReadout", {**common, "requestedExposureTime": T, "timestampEndOfReadout": t_er})
        t_eoit = t_er + e.end_telemetry_delay
        add(t_er + min(0.01, e.end_telemetry_delay / 3.0), cam, "imageReadoutParameters",
            _readout_parameters(self.instrument, cam, img.name))  # fmt: skip
        tag = hashlib.sha1(img.name.encode()).hexdigest()[:16]
        add(
            t_eoit,
            cam,
            "endOfImageTelemetry",
            {
                **common,
                "exposureTime": T,
                "imageTag": tag,
                "timestampDateObs": S,
                "timestampDateEnd": S + T,
                "measuredShutterOpenTime": T,
                "darkTime": T,
                "emulatedImage": "",
            },
        )

    # -- background telemetry ---------------------------------------------------------------------
    def _ticks(self, hz: float, phase: float) -> np.ndarray:
        k0 = math.ceil((self.t_start - phase) * hz)
        k1 = math.floor((self.t_end - phase) * hz)
        return np.arange(k0, k1 + 1, dtype=float) / hz + phase

    def _background(self) -> list[tuple[tuple[tuple[str, str], ...], Iterator[Emission]]]:
        """Background telemetry streams, each with the (component, topic) pairs it writes."""
        bg = self.scenario.background
        cam = self.camera
        out: list[tuple[tuple[tuple[str, str], ...], Iterator[Emission]]] = self.telescope.background(bg, cam)
        ess = tuple(("ESS", t) for t in ("temperature", "pressure", "relativeHumidity", "airFlow"))
        out.append((ess, self._ess(bg.env_hz, 0.5)))
        out.append(((("DIMM", "dimmMeasurement"),), self._dimm(bg.dimm_period)))
        return out

    def topics(self) -> set[tuple[str, str]]:
        """Every (component, topic) the night may write (to create DDS writers up front)."""
        out = {(e.component, e.topic) for e in self._discrete()}
        for pairs, gen in self._background():
            gen.close()
            out.update(pairs)
        for comp, idx, topic in self._omit_all:
            if idx is None:
                out.discard((comp, topic))
        return out

    def _blocks(self, ticks: np.ndarray, size: int = 256) -> Iterator[np.ndarray]:
        for i in range(0, len(ticks), size):
            yield ticks[i : i + size]

    def _at_mount(self, hz: float) -> Iterator[Emission]:
        """ATPtg.mountPositions: 100 samples per message, the last at the message time."""
        dt = 1.0 / hz
        sub = (np.arange(100) + 1) / 100.0 * dt - dt
        for blk in self._blocks(self._ticks(hz, 0.0), 64):
            times = (blk[:, None] + sub[None, :]).ravel()
            s = self.sky.at(times)
            arr = {k: v.reshape(len(blk), 100) for k, v in s.items()}
            for j, t in enumerate(blk):
                yield Emission(
                    float(t),
                    "ATPtg",
                    0,
                    "mountPositions",
                    {
                        "cRioTimestamp": float(t),
                        "azimuthCalculatedAngle": arr["az"][j].tolist(),
                        "elevationCalculatedAngle": arr["alt"][j].tolist(),
                        "nasmythCalculatedAngle": arr["rot_at"][j].tolist(),
                        "ra": arr["ra"][j].tolist(),
                        "declination": arr["dec"][j].tolist(),
                        "skyAngle": arr["rotpa"][j].tolist(),
                    },
                )

    def _mt_mount(self, hz: float) -> Iterator[Emission]:
        rng = _rng(self.seed, "mt-mount")
        dt = 0.25 / hz
        odometer = 0.0
        last_rot: float | None = None
        for blk in self._blocks(self._ticks(hz, 0.0)):
            s = self.sky.at(blk)
            s2 = self.sky.at(blk + dt)
            s1 = self.sky.at(blk - dt)
            for j, t in enumerate(blk):
                t = float(t)
                az, alt, rot = float(s["az"][j]), float(s["alt"][j]), float(s["rot_mt"][j])
                vaz = float(_wrap180(s2["az"][j] - s1["az"][j])) / (2 * dt)
                valt = float(s2["alt"][j] - s1["alt"][j]) / (2 * dt)
                vrot = float(_wrap180(s2["rot_mt"][j] - s1["rot_mt"][j])) / (2 * dt)
                az_act = (az + float(rng.normal(0.0, 2e-5))) % 360.0
                alt_act = alt + float(rng.normal(0.0, 2e-5))
                rot_act = rot + float(rng.normal(0.0, 5e-5))
                if last_rot is not None:
                    odometer += abs(float(_wrap180(rot_act - last_rot)))
                last_rot = rot_act
                yield Emission(
                    t,
                    "MTPtg",
                    0,
                    "mountPosition",
                    {
                        "timestamp": t,
                        "azimuthActualPosition": az_act,
                        "elevationActualPosition": alt_act,
                        "rotatorActualPosition": rot_act,
                        "ra": float(s["ra"][j]),
                        "declination": float(s["dec"][j]),
                        "skyAngle": float(s["rotpa"][j]),
                    },
                )
                for name, pos, act, vel in (("azimuth", az, az_act, vaz), ("elevation", alt, alt_act, valt)):
                    fields = {
                        "actualAcceleration": 0.0,
                        "actualAccelerationTimestamp": t,
                        "actualJerk": 0.0,
                        "actualJerkTimestamp": t,
                        "actualPosition": act,
                        "actualPositionTimestamp": t,
                        "actualTorque": float(rng.normal(0.0, 500.0)),
                        "actualTorqueTimestamp": t,
                        "actualVelocity": vel,
                        "actualVelocityTimestamp": t,
                        "demandPosition": pos,
                        "demandPositionTimestamp": t,
                        "demandVelocity": vel,
                        "demandVelocityTimestamp": t,
                        "timestamp": t,
                    }
                    if name == "elevation":
                        fields["elevationInclinometer"] = alt_act + 0.01
                        fields["elevationInclinometerTimestamp"] = t
                    yield Emission(t + 0.001, "MTMount", 0, name, fields)
                yield Emission(
                    t + 0.002,
                    "MTRotator",
                    0,
                    "rotation",
                    {
                        "demandPosition": rot,
                        "demandVelocity": vrot,
                        "demandAcceleration": 0.0,
                        "actualPosition": rot_act,
                        "actualVelocity": vrot,
                        "debugActualVelocityA": vrot,
                        "debugActualVelocityB": vrot,
                        "odometer": odometer,
                        "timestamp": t,
                    },
                )

    def _target_status(self, hz: float, phase: float) -> Iterator[Emission]:
        rot_key = self.telescope.rotator_key
        for blk in self._blocks(self._ticks(hz, phase)):
            s = self.sky.at(blk)
            s2 = self.sky.at(blk + 0.5)
            s1 = self.sky.at(blk - 0.5)
            for j, t in enumerate(blk):
                yield Emission(
                    float(t),
                    self.telescope.pointing,
                    0,
                    "currentTargetStatus",
                    {
                        "timestamp": float(t),
                        "demandAz": float(s["az"][j]),
                        "demandEl": float(s["alt"][j]),
                        "demandRot": float(s[rot_key][j]),
                        "demandAzVelocity": float(_wrap180(s2["az"][j] - s1["az"][j])),
                        "demandElVelocity": float(s2["alt"][j] - s1["alt"][j]),
                        "demandRotVelocity": float(_wrap180(s2[rot_key][j] - s1[rot_key][j])),
                        "ha": float(s["ha"][j]),
                        "parAngle": float(s["pa"][j]),
                        "airmass": float(s["airmass"][j]),
                        "demandRa": float(s["ra"][j]) / 15.0,
                        "demandDec": float(s["dec"][j]),
                    },
                )

    def _at_dome(self, hz: float, phase: float) -> Iterator[Emission]:
        """ATDome.position: the dome follows the telescope azimuth 3 s behind."""
        rng = _rng(self.seed, "at-dome")
        for blk in self._blocks(self._ticks(hz, phase)):
            s = self.sky.at(blk - 3.0)
            for j, t in enumerate(blk):
                az = (float(s["az"][j]) + float(rng.normal(0.0, 0.02))) % 360.0
                yield Emission(
                    float(t),
                    "ATDome",
                    0,
                    "position",
                    {
                        "dropoutDoorOpeningPercentage": 100.0,
                        "mainDoorOpeningPercentage": 100.0,
                        "azimuthPosition": az,
                        "azimuthEncoderPosition": int(az / 360.0 * 4_018_143),
                    },
                )

    def _ccd_temps(self, hz: float, phase: float) -> Iterator[Emission]:
        rng = _rng(self.seed, "ccd-temps")
        ccds = ccd_locations(self.instrument)
        n = len(ccds)
        setpoint = TEMP_SETPOINT[self.instrument]
        loc = _pack(self.camera, "focal_plane_Ccd", "location", ccds)
        for t in self._ticks(hz, phase):
            t = float(t)
            drift = self.env.at("ccd_temp", t)

            def per(field: str, center: float, sigma: float) -> Any:
                return _pack(self.camera, "focal_plane_Ccd", field, [center + float(rng.normal(0.0, sigma)) for _ in range(n)])

            fields: dict[str, Any] = {
                "location": loc,
                "temp": per("temp", setpoint + drift, 0.01),
                "gDV": per("gDV", 0.0, 0.001),
                "oDV": per("oDV", 23.6, 0.005),
                "oGV": per("oGV", -2.0, 0.002),
                "rDV": per("rDV", 12.5, 0.003),
            }
            odi = get_topic(self.camera, "focal_plane_Ccd").field_map().get("oDI")
            if odi is not None and odi.count == 1:
                fields["oDI"] = 14.0 + float(rng.normal(0.0, 0.02))
            elif odi is not None:
                fields["oDI"] = per("oDI", 14.0, 0.02)
            yield Emission(t, self.camera, 0, "focal_plane_Ccd", fields)

    def _at_vacuum(self, hz: float, phase: float) -> Iterator[Emission]:
        rng = _rng(self.seed, "at-vacuum")
        setpoint = TEMP_SETPOINT[self.instrument]
        for t in self._ticks(hz, phase):
            t = float(t)
            yield Emission(
                t,
                "ATCamera",
                0,
                "vacuum",
                {
                    "tempCCD": setpoint + self.env.at("ccd_temp", t) + float(rng.normal(0.0, 0.01)),
                    "tempCCDSetPoint": setpoint,
                    "tempColdPlate": -121.0 + self.env.at("cold_plate", t),
                    "tempCryoHead": -140.5 + self.env.at("cold_plate", t) * 0.5,
                    "vacuum": self.env.at("vacuum", t),
                },
            )

    def _hexapod(self, hz: float, phase: float) -> Iterator[Emission]:
        """MTHexapod:1 (camera hexapod) application: demand x, y, z (um), u, v, w (deg)."""
        rng = _rng(self.seed, "hexapod")
        demands = sorted(self._hexapod_demands_for_background(), key=lambda d: d[0])
        k = 0
        current = demands[0][1] if demands else [0.0] * 6
        for t in self._ticks(hz, phase):
            while k < len(demands) and demands[k][0] <= t:
                current = demands[k][1]
                k += 1
            pos = [d + float(rng.normal(0.0, 0.05 if i < 3 else 1e-5)) for i, d in enumerate(current)]
            yield Emission(
                float(t),
                "MTHexapod",
                1,
                "application",
                {"demand": list(current), "position": pos, "error": [p - d for p, d in zip(pos, current)]},
            )

    def _hexapod_demands_for_background(self) -> list[tuple[float, list[float]]]:
        if not hasattr(self, "_hexapod_demands"):
            self._discrete()  # fills _hexapod_demands (deterministically)
        return list(self._hexapod_demands)

    def _ess(self, hz: float, phase: float) -> Iterator[Emission]:
        rng = _rng(self.seed, "ess")
        nan = float("nan")
        where = {"sensorName": "Weather station", "location": "Summit, weather tower"}
        for t in self._ticks(hz, phase):
            t = float(t)
            temp = self.env.at("air_temp", t) + float(rng.normal(0.0, 0.02))
            yield Emission(t, "ESS", 301, "temperature",
                           {**where, "timestamp": t, "numChannels": 1, "temperatureItem": [temp] + [nan] * 15})  # fmt: skip
            pres = self.env.at("pressure", t) + float(rng.normal(0.0, 1.0))
            yield Emission(t + 0.001, "ESS", 301, "pressure",
                           {**where, "timestamp": t, "numChannels": 1, "pressureItem": [pres] + [nan] * 7})  # fmt: skip
            rh = self.env.at("humidity", t) + float(rng.normal(0.0, 0.1))
            yield Emission(t + 0.002, "ESS", 301, "relativeHumidity",
                           {**where, "timestamp": t, "relativeHumidityItem": rh})  # fmt: skip
            speed = max(0.0, self.env.at("wind_speed", t) + float(rng.normal(0.0, 0.2)))
            yield Emission(
                t + 0.003,
                "ESS",
                301,
                "airFlow",
                {
                    **where,
                    "timestamp": t,
                    "direction": (self.env.at("wind_dir", t) + float(rng.normal(0.0, 2.0))) % 360.0,
                    "directionStdDev": 8.0 + float(rng.normal(0.0, 0.5)),
                    "speed": speed,
                    "speedStdDev": 0.6 + abs(float(rng.normal(0.0, 0.1))),
                    "maxSpeed": speed * 1.4 + 0.3,
                },
            )

    def _dimm(self, period: float) -> Iterator[Emission]:
        rng = _rng(self.seed, "dimm")
        t = self.t_start + 0.7
        n = 0
        while t <= self.t_end:
            fwhm = self.env.at("seeing", t) * (1.0 + float(rng.normal(0.0, 0.03)))
            r0 = 0.98 * 500e-9 / math.radians(fwhm / 3600.0) * 100.0  # cm at 500 nm
            n += 1
            yield Emission(
                t,
                "DIMM",
                1,
                "dimmMeasurement",
                {
                    "timestamp": t,
                    "expiresAt": t + 2.0 * period,
                    "expiresIn": 2.0 * period,
                    "hrNum": 2491,
                    "secz": 1.05 + 0.02 * math.sin(n / 30.0),
                    "fwhm": fwhm,
                    "fwhmx": fwhm * (1.0 + float(rng.normal(0.0, 0.02))),
                    "fwhmy": fwhm * (1.0 + float(rng.normal(0.0, 0.02))),
                    "r0": r0,
                    "nimg": 200,
                    "dx": float(rng.normal(0.0, 0.05)),
                    "dy": float(rng.normal(0.0, 0.05)),
                    "flux": 25000.0 + float(rng.normal(0.0, 500.0)),
                    "fluxL": 12500.0 + float(rng.normal(0.0, 300.0)),
                    "scintL": 0.05 + abs(float(rng.normal(0.0, 0.005))),
                    "strehlL": 0.3 + float(rng.normal(0.0, 0.01)),
                    "fluxR": 12500.0 + float(rng.normal(0.0, 300.0)),
                    "scintR": 0.05 + abs(float(rng.normal(0.0, 0.005))),
                    "strehlR": 0.3 + float(rng.normal(0.0, 0.01)),
                },
            )
            t += period

    # -- summaries ----------------------------------------------------------------------------
    def outline_lines(self) -> list[str]:
        lines = []
        for o in self.outlines:
            e = o.exposure
            flags = []
            if o.slew:
                flags.append("slew")
            if o.filter_changed:
                flags.append("filter")
            if o.index > 0 and o.start < self.outlines[o.index - 1].end_readout:
                flags.append("overlaps-readout")
            if o.alt < 0:
                flags.append("BELOW-HORIZON")
            if e.omit:
                flags.append("omit=" + ",".join(e.omit))
            if e.changes:
                flags.append("changes=" + ",".join(e.changes))
            lines.append(
                f"{o.index + 1:4d} {o.image.name} {tai_iso(o.start)} {e.imgtype:<8} exptime {e.exptime:6.2f} "
                f"{o.filter.name:<12} {o.target.name} ra {o.target.ra:.4f} dec {o.target.dec:+.4f} "
                f"rotpa {o.target.rotpa:.2f} alt {o.alt:.1f} airmass {o.airmass:.3f}"
                + (f" [{' '.join(flags)}]" if flags else "")
            )
        return lines


def _sexagesimal(value: float, digits: int, signed: bool = False) -> str:
    sign = "-" if value < 0 else ("+" if signed else "")
    v = abs(value)
    d = int(v)
    m = int((v - d) * 60)
    s = (v - d - m / 60.0) * 3600.0
    if round(s, digits) >= 60.0:
        s = 0.0
        m += 1
    if m >= 60:
        m = 0
        d += 1
    return f"{sign}{d:02d}:{m:02d}:{s:0{3 + digits}.{digits}f}"


def iter_night(scenario: Scenario) -> Iterator[Emission]:
    """The night's emissions in time order, generated lazily."""
    return Night(scenario).emissions()


def plan_night(scenario: Scenario) -> list[Emission]:
    """The night's emissions as a list sorted by time (see :func:`iter_night` for long nights)."""
    return list(iter_night(scenario))
