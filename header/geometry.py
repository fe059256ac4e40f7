"""Camera geometry for Rubin headers: segments (amplifiers) and sensor layout.

Why this module exists
----------------------
DATASEC, DETSEC, DETSIZE and the DTV/DTM mosaic keywords of every segment
HDU follow from a handful of numbers (LCA-13501) and from where the segment
sits on its sensor.  Writing them from one small table, checked by tests
that apply DTM/DTV to DATASEC and tile DETSIZE, avoids the hand-written
per-segment tables that drift apart.  The focal-plane layout gives each
sensor a nominal position for a default WCS.

Segment layout on a sensor (the camera's raw files)
---------------------------------------------------
The 16 segments sit in two rows of 8 in the detector (DETSEC) frame
(x along the serial registers, 1-based pixels, DETSIZE = 8 cols x 2 rows of
segment pixels), as in every raw the camera has written since 2019
(LATISS, ComCam, LSSTCam, UCD test stand; both vendors):

* ``1j`` (j = 0..7): lower row, x block j (x = cols*j+1 .. cols*(j+1)),
  read out flipped in x for both vendors, e.g. ITL Segment10
  DETSEC = '[509:1,1:2000]', DTV1 = 513, DTV2 = 0, DTM1_1 = -1, DTM2_2 = 1.
* ``0j``: upper row, x block j, flipped in y; ITL also flipped in x
  (Segment00 = '[509:1,4000:2001]'), e2v not (Segment00 = '[1:512,4004:2003]').

obs_lsst's camera description (``policy/cameraHeader.yaml``, CCD_ITL and
CCD_E2V: C1j ixy=[j,1] flipXY [T,T]; C0j ixy=[j,0], ITL [T,F], e2v [F,F])
is this layout mirrored top to bottom: DM assembles its detector image in a
frame whose y runs the other way (y_DM = rows of DETSIZE + 1 - y), and
ignores DETSEC (DM-36115).  Header values follow the raws; see
tests/test_segment_layout.py for both checks.  Test-stand files of 2018 and
earlier used the y-mirrored DETSECs (``1j`` in the upper row).

DTM/DTV follow IRAF/NOAO mosaic usage: detector = DTM . image + DTV, i.e.
``x_det = DTM1_1*x + DTM1_2*y + DTV1``, ``y_det = DTM2_1*x + DTM2_2*y + DTV2``
with (x, y) 1-based pixel coordinates in the segment HDU.

Wavefront sensors
-----------------
Each LSSTCam corner raft holds two wavefront half sensors (SW0, SW1) read
through 8 segments.  We name them ``10``..``17`` (as obs_lsst's current
LSSTCam description does), in that HDU order, and give them the DETSECs
their names have on a full ITL sensor, inside DETSIZE '[1:4072,1:4000]'
(the DETSIZE an LSSTCam SW0 raw carries in its primary header).  So the
active half of a wavefront sensor is y = 1..2000 of its detector frame.
(obs_lsst assembles them in a 4072 x 2000 frame; the segment-level numbers
the camera writes for these sensors are not public and should be confirmed
against a real SW raw file.)

Focal-plane positions (approximation)
-------------------------------------
Positions are nominal, in mm, in the focal-plane frame of obs_lsst (DVCS):
raft ``Rrc`` (r = row, c = column) centred at ((c-2), (r-2)) x 127.0 mm,
sensor ``Src`` at ((c-1), (r-1)) x 42.25 mm within its raft; R22 S11 at
(0, 0).  Science sensors are not rotated.  Corner rafts R00, R04, R40, R44
are laid out as obs_lsst does: before the raft rotation SG0 sits in slot
"10" (x -42.25, y 0) rotated by 270 deg, SG1 in slot "01" (0, -42.25),
and the wavefront halves share slot "00": SW0 the lower half
(-42.25, -52.8125), SW1 the upper half (-42.25, -31.6875) rotated by
180 deg.  The corner rafts themselves are rotated by 180 (R00), 270 (R04),
90 (R40) and 0 (R44) deg, which puts the wavefront sensors on the inner
corner of each corner raft.  The measured per-raft offsets (up to ~5 mm,
~100 arcsec) are not included: this is good enough for a starting WCS, not
for astrometry.  Positions and yaws describe DM's pixel frame; header/wcs.py
mirrors them into the DETSEC frame above.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = [
    "Vendor",
    "VENDORS",
    "get_vendor",
    "PIXEL_SIZE_MM",
    "CAMERAS",
    "segment_names",
    "segment_cards",
    "parse_section",
    "active_area",
    "center_pixel",
    "lsstcam_sensors",
    "comcam_sensors",
    "latiss_sensors",
    "camera_sensors",
    "is_wavefront",
    "sensor_center_mm",
    "sensor_yaw_deg",
    "plate_scale_arcsec",
    "plate_scale_arcsec_per_mm",
]

#: Pixel pitch of all Rubin science, guider and wavefront sensors (mm).
PIXEL_SIZE_MM: float = 0.010

#: Cameras this module knows about.
CAMERAS: tuple[str, ...] = ("LSSTCam", "ComCam", "LATISS")

_RAFT_PITCH_MM = 127.0
_SENSOR_PITCH_MM = 42.25


@dataclass(frozen=True)
class Vendor:
    """Per-segment geometry of one sensor vendor (LCA-13501).

    Attributes
    ----------
    name : str
        'ITL' or 'E2V' (the spelling of CCD_MANU).
    seg_rows : int
        Active rows (parallel direction) per segment (pixel).
    seg_cols : int
        Active columns (serial direction) per segment (pixel).
    prescan : int
        Serial pre-scan columns, PREH (pixel).
    overscan_cols : int
        Serial over-scan columns, OVERH (pixel).
    overscan_rows : int
        Parallel over-scan rows, OVERV (pixel).
    """

    name: str
    seg_rows: int
    seg_cols: int
    prescan: int
    overscan_cols: int
    overscan_rows: int

    @property
    def det_cols(self) -> int:
        """Active columns of a full sensor (8 segments across) (pixel)."""
        return 8 * self.seg_cols

    @property
    def det_rows(self) -> int:
        """Active rows of a full sensor (2 segments high) (pixel)."""
        return 2 * self.seg_rows

    @property
    def detsize(self) -> str:
        """DETSIZE of a full sensor, e.g. '[1:4072,1:4000]'."""
        return f"[1:{self.det_cols},1:{self.det_rows}]"


#: LCA-13501 numbers; the camera's imageReadoutParameters override the scans.
VENDORS: dict[str, Vendor] = {
    "ITL": Vendor("ITL", seg_rows=2000, seg_cols=509, prescan=3, overscan_cols=32, overscan_rows=48),
    "E2V": Vendor("E2V", seg_rows=2002, seg_cols=512, prescan=10, overscan_cols=54, overscan_rows=46),
}


def get_vendor(vendor: str | Vendor) -> Vendor:
    """Look a vendor up by name, case-insensitively ('e2v' == 'E2V').

    Parameters
    ----------
    vendor : str or Vendor
        Vendor name as in CCD_MANU, or a Vendor (returned unchanged).

    Returns
    -------
    Vendor
    """
    if isinstance(vendor, Vendor):
        return vendor
    try:
        return VENDORS[str(vendor).strip().upper()]
    except KeyError:
        raise ValueError(f"unknown sensor vendor {vendor!r}; expected one of {sorted(VENDORS)}") from None


# --------------------------------------------------------------------------
# Segments
# --------------------------------------------------------------------------
def segment_names(n_segments: int = 16) -> list[str]:
    """Segment names ('NN' of EXTNAME 'SegmentNN') in HDU order.

    Parameters
    ----------
    n_segments : int
        16 for science and guide sensors: 10, 11, ..., 17, 07, 06, ..., 00.
        8 for a wavefront half sensor: 10, 11, ..., 17.

    Returns
    -------
    list of str
    """
    row1 = [f"1{j}" for j in range(8)]
    if n_segments == 16:
        return row1 + [f"0{j}" for j in range(7, -1, -1)]
    if n_segments == 8:
        return row1
    raise ValueError(f"n_segments must be 16 or 8, not {n_segments!r}")


def _check_segment(segment: str) -> tuple[int, int]:
    """Split 'rj' into (row, j), validating it."""
    seg = str(segment)
    if seg.lower().startswith("segment"):
        seg = seg[len("segment"):]
    if len(seg) != 2 or seg[0] not in "01" or seg[1] not in "01234567":
        raise ValueError(f"segment must be '00'..'07' or '10'..'17', not {segment!r}")
    return int(seg[0]), int(seg[1])


def _segment_placement(vendor: Vendor, row: int, j: int) -> tuple[int, int, int, int]:
    """DETSEC corners (x_start, x_end, y_start, y_end), 1-based, inclusive.

    ``x_start`` is the detector x of the first active column in the segment
    image, ``x_end`` of the last one (likewise y), so a flipped axis has
    start > end.  This is the one place the layout convention lives.
    """
    cols, rows = vendor.seg_cols, vendor.seg_rows
    x_lo, x_hi = cols * j + 1, cols * (j + 1)
    if row == 1:  # lower row, flipped in x for both vendors
        return x_hi, x_lo, 1, rows
    if vendor.name == "ITL":  # upper row, ITL: flipped in x and y
        return x_hi, x_lo, 2 * rows, rows + 1
    return x_lo, x_hi, 2 * rows, rows + 1  # upper row, e2v: flipped in y only


def segment_cards(
    vendor: str | Vendor,
    segment: str,
    prescan: int | None = None,
    overcols: int | None = None,
    overrows: int | None = None,
    *,
    n_segments: int = 16,
) -> dict[str, object]:
    """Geometry keywords of one segment HDU, as Python values.

    Parameters
    ----------
    vendor : str or Vendor
        'ITL' or 'E2V' (CCD_MANU of the sensor).
    segment : str
        '00'..'17' (or 'SegmentNN').
    prescan, overcols, overrows : int, optional
        Serial pre-scan columns, serial over-scan columns and parallel
        over-scan rows (pixel) from the camera's imageReadoutParameters
        (preCols, overCols, overRows); they win over the LCA-13501 table.
    n_segments : int
        16, or 8 for a wavefront half sensor (only segments '10'..'17').

    Returns
    -------
    dict
        EXTNAME, CHANNEL (1-based position in HDU order), NAXIS1, NAXIS2
        (raw segment image size, pixel), DATASEC, DETSEC, DETSIZE (str),
        DTV1, DTV2 (int, pixel), DTM1_1, DTM1_2, DTM2_1, DTM2_2 (float).
    """
    v = get_vendor(vendor)
    row, j = _check_segment(segment)
    name = f"{row}{j}"
    names = segment_names(n_segments)
    if name not in names:
        raise ValueError(f"segment {name!r} is not read out on a {n_segments}-segment sensor")
    pre = v.prescan if prescan is None else int(prescan)
    ocols = v.overscan_cols if overcols is None else int(overcols)
    orows = v.overscan_rows if overrows is None else int(overrows)
    if min(pre, ocols, orows) < 0:
        raise ValueError("pre-scan and over-scan sizes must be >= 0")

    # Active pixels inside the raw segment image (1-based, inclusive).
    dx1, dx2 = pre + 1, pre + v.seg_cols
    dy1, dy2 = 1, v.seg_rows
    x_start, x_end, y_start, y_end = _segment_placement(v, row, j)
    m11 = 1.0 if x_end >= x_start else -1.0
    m22 = 1.0 if y_end >= y_start else -1.0
    dtv1 = int(x_start - m11 * dx1)
    dtv2 = int(y_start - m22 * dy1)
    return {
        "EXTNAME": f"Segment{name}",
        "CHANNEL": names.index(name) + 1,
        "NAXIS1": pre + v.seg_cols + ocols,
        "NAXIS2": v.seg_rows + orows,
        "DATASEC": f"[{dx1}:{dx2},{dy1}:{dy2}]",
        "DETSEC": f"[{x_start}:{x_end},{y_start}:{y_end}]",
        "DETSIZE": v.detsize,
        "DTV1": dtv1,
        "DTV2": dtv2,
        "DTM1_1": m11,
        "DTM1_2": 0.0,
        "DTM2_1": 0.0,
        "DTM2_2": m22,
    }


def parse_section(section: str) -> tuple[int, int, int, int]:
    """Parse an IRAF section '[x1:x2,y1:y2]' into (x1, x2, y1, y2).

    Parameters
    ----------
    section : str
        e.g. '[509:1,4000:2001]'.

    Returns
    -------
    tuple of int
        (x1, x2, y1, y2), 1-based, order as written (x1 > x2 when flipped).
    """
    s = section.strip()
    if not (s.startswith("[") and s.endswith("]")):
        raise ValueError(f"not an IRAF section: {section!r}")
    try:
        xs, ys = s[1:-1].split(",")
        x1, x2 = (int(a) for a in xs.split(":"))
        y1, y2 = (int(a) for a in ys.split(":"))
    except ValueError:
        raise ValueError(f"not an IRAF section: {section!r}") from None
    return x1, x2, y1, y2


def active_area(vendor: str | Vendor, n_segments: int = 16) -> tuple[int, int, int, int]:
    """Active pixels of a sensor in its detector (DETSEC) frame.

    Parameters
    ----------
    vendor : str or Vendor
        'ITL' or 'E2V'.
    n_segments : int
        16, or 8 for a wavefront half sensor (lower half only: its
        segments 10..17 are the lower row of a full sensor).

    Returns
    -------
    tuple of int
        (x1, x2, y1, y2), 1-based, inclusive.
    """
    v = get_vendor(vendor)
    if n_segments == 8:
        return 1, v.det_cols, 1, v.seg_rows
    segment_names(n_segments)  # validates
    return 1, v.det_cols, 1, v.det_rows


def center_pixel(vendor: str | Vendor, n_segments: int = 16) -> tuple[float, float]:
    """Centre of the active area in 1-based detector pixel coordinates.

    Parameters
    ----------
    vendor : str or Vendor
        'ITL' or 'E2V'.
    n_segments : int
        16, or 8 for a wavefront half sensor.

    Returns
    -------
    tuple of float
        (x, y) (pixel), e.g. (2036.5, 2000.5) for ITL.
    """
    x1, x2, y1, y2 = active_area(vendor, n_segments)
    return 0.5 * (x1 + x2), 0.5 * (y1 + y2)


# --------------------------------------------------------------------------
# Sensors and focal plane
# --------------------------------------------------------------------------
_SCIENCE_SLOTS = tuple(f"S{r}{c}" for r in range(3) for c in range(3))
_CORNER_RAFTS = ("R00", "R04", "R40", "R44")
_CORNER_SLOTS = ("SG0", "SG1", "SW0", "SW1")
_SCIENCE_RAFTS = tuple(
    f"R{r}{c}" for r in range(5) for c in range(5) if f"R{r}{c}" not in _CORNER_RAFTS
)
# Raft rotation of the corner rafts (deg, counter-clockwise), as in obs_lsst.
_CORNER_RAFT_YAW = {"R00": 180.0, "R04": 270.0, "R40": 90.0, "R44": 0.0}
# Corner-raft sensors before the raft rotation: (x mm, y mm, yaw deg).
_CORNER_LAYOUT = {
    "SG0": (-_SENSOR_PITCH_MM, 0.0, 270.0),
    "SG1": (0.0, -_SENSOR_PITCH_MM, 0.0),
    "SW0": (-_SENSOR_PITCH_MM, -52.8125, 0.0),
    "SW1": (-_SENSOR_PITCH_MM, -31.6875, 180.0),
}


def lsstcam_sensors() -> list[tuple[str, str]]:
    """All 205 LSSTCam (raft, sensor) pairs.

    Returns
    -------
    list of tuple of str
        Corner rafts first (R00, R04, R40, R44, each SG0, SG1, SW0, SW1:
        8 guiders + 8 wavefront halves), then the 21 science rafts
        R01..R43 in name order, each S00..S22 (189).
    """
    corners = [(raft, slot) for raft in _CORNER_RAFTS for slot in _CORNER_SLOTS]
    science = [(raft, slot) for raft in _SCIENCE_RAFTS for slot in _SCIENCE_SLOTS]
    return corners + science


def comcam_sensors() -> list[tuple[str, str]]:
    """The 9 ComCam sensors: raft R22, S00..S22.

    Returns
    -------
    list of tuple of str
    """
    return [("R22", slot) for slot in _SCIENCE_SLOTS]


def latiss_sensors() -> list[tuple[str, str]]:
    """The single LATISS sensor, R00 S00.

    Returns
    -------
    list of tuple of str
    """
    return [("R00", "S00")]


def camera_sensors(camera: str) -> list[tuple[str, str]]:
    """Sensors of a camera ('LSSTCam', 'ComCam' or 'LATISS').

    Parameters
    ----------
    camera : str

    Returns
    -------
    list of tuple of str
    """
    cam = _check_camera(camera)
    if cam == "LSSTCam":
        return lsstcam_sensors()
    if cam == "ComCam":
        return comcam_sensors()
    return latiss_sensors()


def is_wavefront(sensor: str) -> bool:
    """True for a wavefront half sensor (SW0, SW1), read with 8 segments.

    Parameters
    ----------
    sensor : str

    Returns
    -------
    bool
    """
    return sensor in ("SW0", "SW1")


def _check_camera(camera: str) -> str:
    for cam in CAMERAS:
        if str(camera).lower() == cam.lower():
            return cam
    raise ValueError(f"unknown camera {camera!r}; expected one of {CAMERAS}")


def _rotate(x: float, y: float, deg: float) -> tuple[float, float]:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return c * x - s * y, s * x + c * y


def _placement(camera: str, raft: str, sensor: str) -> tuple[float, float, float]:
    """(x mm, y mm, yaw deg) of a sensor's active-area centre."""
    cam = _check_camera(camera)
    if (raft, sensor) not in camera_sensors(cam):
        raise ValueError(f"{cam} has no sensor {raft} {sensor}")
    if cam == "LATISS":
        return 0.0, 0.0, 0.0
    r, c = int(raft[1]), int(raft[2])
    raft_x = (c - 2) * _RAFT_PITCH_MM
    raft_y = (r - 2) * _RAFT_PITCH_MM
    if sensor in _CORNER_LAYOUT:
        lx, ly, yaw = _CORNER_LAYOUT[sensor]
        raft_yaw = _CORNER_RAFT_YAW[raft]
        dx, dy = _rotate(lx, ly, raft_yaw)
        return raft_x + dx, raft_y + dy, (yaw + raft_yaw) % 360.0
    sr, sc = int(sensor[1]), int(sensor[2])
    return raft_x + (sc - 1) * _SENSOR_PITCH_MM, raft_y + (sr - 1) * _SENSOR_PITCH_MM, 0.0


def sensor_center_mm(raft: str, sensor: str, camera: str = "LSSTCam") -> tuple[float, float]:
    """Nominal focal-plane position of the centre of a sensor's active area.

    See the module docstring for the layout and its approximations.

    Parameters
    ----------
    raft : str
        e.g. 'R22'.
    sensor : str
        e.g. 'S11', 'SG0', 'SW1'.
    camera : str
        'LSSTCam', 'ComCam' (R22 at the centre, as in LSSTCam) or 'LATISS'
        (R00 S00 at the centre).

    Returns
    -------
    tuple of float
        (x, y) in mm from the optical axis; R22 S11 is (0, 0).
    """
    x, y, _ = _placement(camera, raft, sensor)
    return x, y


def sensor_yaw_deg(raft: str, sensor: str, camera: str = "LSSTCam") -> float:
    """Rotation of a sensor's detector pixel axes w.r.t. focal-plane axes.

    Parameters
    ----------
    raft, sensor, camera : str
        As for :func:`sensor_center_mm`.

    Returns
    -------
    float
        Counter-clockwise angle (deg) in [0, 360) from the focal-plane +x
        axis to the detector +x axis; 0 for all science sensors.
    """
    return _placement(camera, raft, sensor)[2]


def plate_scale_arcsec(camera: str) -> float:
    """Nominal pixel scale on the sky.

    Parameters
    ----------
    camera : str
        'LSSTCam', 'ComCam' or 'LATISS'.

    Returns
    -------
    float
        (arcsec / pixel): 0.2 for LSSTCam and ComCam, 0.0956 for LATISS.
    """
    cam = _check_camera(camera)
    return 0.0956 if cam == "LATISS" else 0.2


def plate_scale_arcsec_per_mm(camera: str) -> float:
    """Nominal plate scale in the focal plane.

    Parameters
    ----------
    camera : str
        'LSSTCam', 'ComCam' or 'LATISS'.

    Returns
    -------
    float
        (arcsec / mm), i.e. :func:`plate_scale_arcsec` / pixel size.
    """
    return plate_scale_arcsec(camera) / PIXEL_SIZE_MM
