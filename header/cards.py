"""FITS card images: formatting header keywords as 80-character cards (FITS 4.0).

Pure and fast: the composer renders every card once per header with these functions; the fast
path and the file on disk carry exactly the same card images. Long strings use the CONTINUE
convention (LONGSTRN), keywords longer than 8 characters or with spaces use HIERARCH, and an
undefined value is a keyword with a blank value field, never a made-up number.
"""

from __future__ import annotations

import math
import re
from functools import lru_cache
from typing import Any

CARD = 80
_KEY_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


class CardError(ValueError):
    """A value that cannot be written as a FITS card (NaN, non-ASCII, bad keyword)."""


def is_printable_ascii(s: str) -> bool:
    return s.isascii() and s.isprintable()


def sanitize_text(s: str) -> str:
    """Replace characters FITS cannot hold (non-ASCII, control characters) with '?'."""
    if s.isascii() and s.isprintable():
        return s
    return "".join(c if 32 <= ord(c) <= 126 else "?" for c in s)


def format_value(value: Any) -> str:
    """The value field of a card; ``None`` is the undefined value (blank)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "T" if value else "F"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise CardError(f"{value!r} is not a FITS value")
        text = repr(value).upper()
        if "." not in text and "E" not in text:
            text += ".0"
        if len(text) > 20:
            text = f"{value:.15G}"
            if "." not in text and "E" not in text:
                text += ".0"
        return text
    if isinstance(value, str):
        if not is_printable_ascii(value):
            raise CardError(f"string {value[:30]!r} holds non-printable or non-ASCII characters")
        return "'" + value.replace("'", "''").ljust(8) + "'"
    raise CardError(f"unsupported card value type {type(value).__name__}")


def _is_standard_key(key: str) -> bool:
    return len(key) <= 8 and set(key) <= _KEY_CHARS


def _with_comment(head: str, comment: str) -> str:
    if comment:
        room = CARD - len(head) - 3
        if room > 0:
            head = f"{head} / {comment[:room]}"
    return head[:CARD].ljust(CARD)


def format_card(key: str, value: Any, comment: str = "") -> list[str]:
    """Card images for one keyword: one card, or several for a long string (CONTINUE).

    Memoized: most cards of a header repeat from one sensor HDU to the next and from one image to
    the next, so formatting them once is what keeps a 206-HDU LSSTCam header fast. The memo holds
    about two LSSTCam images' distinct cards: a hit is a card every header repeats or one the image's
    provisional composition made, and holding 32768 hit no more often (97.3% of cards on a bench
    night of overlapping exposures) for 10 MB more of the composer's memory.
    """
    if isinstance(value, (str, int, float, bool)) or value is None:
        return list(_format_card_cached(key, value, comment))
    return _format_card(key, value, comment)


@lru_cache(maxsize=4096, typed=True)
def _format_card_cached(key: str, value: Any, comment: str) -> tuple[str, ...]:
    return tuple(_format_card(key, value, comment))


def _format_card(key: str, value: Any, comment: str = "") -> list[str]:
    comment = sanitize_text(comment)
    if key in ("COMMENT", "HISTORY", ""):
        text = sanitize_text(str(value) if value is not None else comment)
        chunks = [text[i : i + 72] for i in range(0, max(len(text), 1), 72)]
        return [f"{key:<8}{c}".ljust(CARD) for c in chunks]
    key = key.upper()
    if key.startswith("HIERARCH "):
        key = key[9:]
    if _is_standard_key(key):
        prefix = f"{key:<8}= "
        hierarch = False
    else:
        if not is_printable_ascii(key) or "=" in key:
            raise CardError(f"keyword {key!r} is not valid")
        prefix = f"HIERARCH {key} = "
        hierarch = True
    if isinstance(value, str):
        return _string_cards(prefix, value, comment, hierarch)
    text = format_value(value)
    if not hierarch:
        text = text.rjust(20)
    if len(prefix) + len(text) > CARD:
        raise CardError(f"keyword {key!r} with its value does not fit on one card")
    return [_with_comment(prefix + text, comment)]


def _string_cards(prefix: str, value: str, comment: str, hierarch: bool) -> list[str]:
    text = format_value(value)
    if len(prefix) + len(text) <= CARD:
        return [_with_comment(prefix + text, comment)]
    # CONTINUE convention: each piece ends with '&' inside the quotes, the last one without.
    escaped_room = CARD - len(prefix) - 3  # quotes and '&'
    if escaped_room < 8:
        raise CardError(f"HIERARCH keyword in {prefix!r} leaves no room for a long string")
    cards: list[str] = []
    rest = value
    first = True
    while rest:
        room = escaped_room if first else CARD - 13  # 'CONTINUE  ' + quotes + '&'
        piece = _take_escaped(rest, room)
        rest = rest[len(piece) :]
        quoted = piece.replace("'", "''")
        head = prefix if first else "CONTINUE  "
        if rest:
            cards.append(f"{head}'{quoted}&'".ljust(CARD))
        else:
            cards.append(_with_comment(f"{head}'{quoted}'", comment))
        first = False
    return cards


def _take_escaped(s: str, room: int) -> str:
    """Longest prefix of ``s`` whose quote-escaped form fits in ``room`` characters."""
    used = 0
    for i, c in enumerate(s):
        used += 2 if c == "'" else 1
        if used > room:
            return s[:i]
    return s


@lru_cache(maxsize=1)
def _structural_primary() -> tuple[str, ...]:
    return tuple(
        format_card("SIMPLE", True, "file conforms to FITS standard")
        + format_card("BITPIX", 8, "number of bits per data pixel")
        + format_card("NAXIS", 0, "no data array: header only")
        + format_card("EXTEND", True, "FITS dataset may contain extensions")
    )


def structural_primary() -> list[str]:
    """Mandatory leading cards of a header-only primary HDU."""
    return list(_structural_primary())


@lru_cache(maxsize=1)
def _structural_extension() -> tuple[str, ...]:
    return tuple(
        format_card("XTENSION", "IMAGE", "image extension")
        + format_card("BITPIX", 8, "number of bits per data pixel")
        + format_card("NAXIS", 0, "no data array: header only")
        + format_card("PCOUNT", 0, "number of parameters")
        + format_card("GCOUNT", 1, "one data group")
    )


def structural_extension() -> list[str]:
    """Mandatory leading cards of a header-only IMAGE extension."""
    return list(_structural_extension())


#: Keywords whose value type the FITS standard fixes: fitsverify reports an error (not a warning)
#: when one of them is written undefined or with another type. Indexed WCS families take any axis
#: numbers and an alternate-description letter.
_TYPED_NAMES = {
    "str": ("OBJECT", "TELESCOP", "INSTRUME", "OBSERVER", "ORIGIN", "AUTHOR", "REFERENC", "BUNIT", "EXTNAME",
            "RADESYS", "RADECSYS", "SPECSYS", "SSYSOBS", "SSYSSRC", "XTENSION"),
    "date": ("DATE", "DATE-OBS", "DATE-BEG", "DATE-END", "DATE-AVG", "DATEREF"),
    "int": ("BLANK", "EXTLEVEL", "EXTVER", "WCSAXES", "BITPIX", "NAXIS", "PCOUNT", "GCOUNT"),
    "float": ("BSCALE", "BZERO", "DATAMAX", "DATAMIN", "EPOCH", "EQUINOX", "LATPOLE", "LONPOLE", "MJD-AVG", "MJD-OBS",
              "OBSGEO-X", "OBSGEO-Y", "OBSGEO-Z", "RESTFRQ", "RESTWAV", "VELANGL", "VELOSYS", "ZSOURCE"),
    "bool": ("SIMPLE", "EXTEND"),
}  # fmt: skip
_TYPED_FAMILIES = (
    (re.compile(r"(CTYPE|CUNIT|CNAME)\d{1,2}[A-Z]?|PS\d{1,2}_\d{1,2}[A-Z]?|(RADESYS|SPECSYS|SSYSOBS|SSYSSRC)[A-Z]"), "str"),
    (re.compile(r"(CRVAL|CRPIX|CDELT|CRDER|CSYER)\d{1,2}[A-Z]?|CROTA\d{1,2}|(PC|CD|PV)\d{1,2}_\d{1,2}[A-Z]?"), "float"),
    (re.compile(r"(LONPOLE|LATPOLE|RESTFRQ|RESTWAV|VELOSYS|ZSOURCE)[A-Z]"), "float"),
    (re.compile(r"WCSAXES[A-Z]"), "int"),
)
_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})(?:T(\d{2}):(\d{2}):(\d{2})(?:\.\d+)?)?")


@lru_cache(maxsize=4096)
def fits_type(key: str) -> str | None:
    """The value type FITS fixes for ``key`` (str, date, int, float, bool), or None if it is free."""
    for kind, names in _TYPED_NAMES.items():
        if key in names:
            return kind
    for pattern, kind in _TYPED_FAMILIES:
        if pattern.fullmatch(key):
            return kind
    return None


def _is_fits_date(text: str) -> bool:
    m = _DATE.fullmatch(text)
    if not m:
        return False
    _, month, day, hour, minute, second = (int(g) if g else 0 for g in m.groups())
    return 1 <= month <= 12 and 1 <= day <= 31 and hour <= 23 and minute <= 59 and second <= 60


def typed_value(key: str, value: Any) -> tuple[Any, str | None]:
    """``value`` fit for a keyword whose type FITS fixes, or None with the reason it is not."""
    kind = fits_type(key)
    if kind is None or value is None:
        return value, None
    if kind in ("str", "date"):
        if not isinstance(value, str):
            return None, f"{key} must be a string, not {type(value).__name__}"
        if kind == "date" and not _is_fits_date(value):
            return None, f"{value[:40]!r} is not a FITS date (YYYY-MM-DD[Thh:mm:ss[.s]])"
        return value, None
    if kind == "bool":
        return (value, None) if isinstance(value, bool) else (None, f"{key} must be a logical value")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None, f"{key} must be a number, not {type(value).__name__}"
    if kind == "int":
        if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
            return None, f"{key} must be an integer, not {value!r}"
        return int(value), None
    try:
        return float(value), None
    except OverflowError:
        return None, f"{key}: {value!r:.30} does not fit a floating-point value"
