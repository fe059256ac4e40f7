"""The header as YAML, in the form the summit's previous Header Service wrote it (``write_mode: yaml``).

The camera's image handling fetches this file from the Large File Annex and merges it into the raw
files it writes, so the form is kept byte for byte as lsst-dm/HeaderService 3.5.8 wrote it with
``yaml.dump(header, default_flow_style=False, sort_keys=False)``: a mapping from extension name, in
HDU order, to the list of that HDU's cards, each ``{keyword, value, comment}``::

    PRIMARY:
    - keyword: SIMPLE
      value: true
      comment: file conforms to FITS standard
    ...
    R22_S11_PRIMARY:
    ...
    R22_S11_Segment10:
    ...

Extension names are ``PRIMARY``, ``<sensor>_PRIMARY`` for a sensor HDU and ``<sensor>_Segment<NN>``
for a segment HDU (that service prefixed the sensor for every camera; the ``EXTNAME`` card inside
stays ``Segment<NN>``). Values keep their FITS type: logical as ``true``/``false``, integer, real
(always with a ``.`` so it reads back as a float), string, and the undefined value as ``null``.
HIERARCH keywords are named without the ``HIERARCH`` prefix, a long (CONTINUE) string is one value,
COMMENT and HISTORY cards carry their text as the value, a blank-keyword card has a ``null`` keyword.
``CHECKSUM`` and ``DATASUM`` are not carried: they describe the bytes of one FITS HDU, and a reader
that writes FITS from this file computes its own (as :func:`header.fitsfile.encode_hdu` does); END
and padding are not cards.

Encoding is text emitted directly, memoized per card and per HDU (a 206-HDU LSSTCam header repeats
most of its cards from one sensor and one image to the next). Each string's style (plain or
single-quoted) is decided by PyYAML's own scalar analysis and type resolver; a record whose line
would fold past column 80 is rendered by PyYAML's emitter itself, so the output equals ``yaml.dump``
of the same records exactly. Pure: no files, no sockets.
"""

from __future__ import annotations

import math
import re
from functools import lru_cache
from typing import Any, NamedTuple

import yaml

from header.cards import CARD, CardError, format_card

__all__ = [
    "Card",
    "YamlHeaderError",
    "cards_to_records",
    "decode_yaml",
    "decode_yaml_named",
    "encode_yaml",
    "payload_yaml",
    "records_to_cards",
    "yaml_extname",
    "yaml_extnames",
    "yaml_to_cards",
]

NOT_CARRIED = frozenset({"CHECKSUM", "DATASUM"})  # properties of the FITS bytes, not of the header
_WIDTH = 80  # PyYAML's default best_width: plain scalars fold past this column
_NOT_PLAIN_WORDS = frozenset(
    "yes Yes YES no No NO true True TRUE false False FALSE on On ON off Off OFF null Null NULL".split()
)
_PLAIN_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_\-]*")
# PyYAML's own scalar analysis and implicit-type resolution: the same decisions yaml.dump makes
_analyze = yaml.emitter.Emitter.analyze_scalar
_resolve = yaml.resolver.Resolver().resolve
_STR_TAG = "tag:yaml.org,2002:str"
_INT = re.compile(r"[+-]?[0-9]+")
_Dumper = yaml.Dumper  # the pure-Python emitter the previous service used (yaml.dump's default)
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class YamlHeaderError(ValueError):
    """A YAML header (or a card image) that cannot be read as a header; the message says why."""


class Card(NamedTuple):
    """One header record as the YAML carries it; ``keyword`` is ``""`` for a blank-keyword card."""

    keyword: str
    value: Any  # None (undefined), bool, int, float or str
    comment: str


# --------------------------------------------------------------------------------------------
# Extension names
# --------------------------------------------------------------------------------------------


def yaml_extname(payload_name: str) -> str:
    """The YAML extension name of an HDU from its composer payload name: ``PRIMARY`` stays,
    ``R22_S11`` (a sensor HDU) becomes ``R22_S11_PRIMARY``, ``R22_S11/Segment10`` becomes
    ``R22_S11_Segment10``."""
    if payload_name == "PRIMARY":
        return payload_name
    sensor, sep, segment = payload_name.partition("/")
    return f"{sensor}_{segment}" if sep else f"{sensor}_PRIMARY"


def yaml_extnames(hdu_cards: list[list[str]]) -> list[str]:
    """YAML extension names from the HDUs' own EXTNAME cards: the first HDU is ``PRIMARY``, an
    HDU named ``Segment<NN>`` belongs to the sensor HDU before it, any other is a sensor HDU."""
    names: list[str] = []
    sensor = ""
    for i, cards in enumerate(hdu_cards):
        extname = next((str(c.value) for c in cards_to_records(cards) if c.keyword == "EXTNAME"), "")
        if i == 0:
            names.append("PRIMARY")
        elif extname.startswith("Segment") and sensor:
            names.append(f"{sensor}_{extname}")
        elif extname:
            sensor = extname
            names.append(f"{extname}_PRIMARY")
        else:
            raise YamlHeaderError(f"HDU {i} has no EXTNAME card")
    return names


# --------------------------------------------------------------------------------------------
# Card images -> records
# --------------------------------------------------------------------------------------------


def _quoted(text: str) -> tuple[str, str]:
    """A FITS quoted string at the start of ``text``: (value with '' undone and trailing blanks
    removed, what follows the closing quote)."""
    s = text.lstrip(" ")
    if not s.startswith("'"):
        raise YamlHeaderError(f"no quoted string in {text!r}")
    out: list[str] = []
    i = 1
    while i < len(s):
        j = s.find("'", i)
        if j < 0:
            break
        out.append(s[i:j])
        if s[j + 1 : j + 2] == "'":
            out.append("'")
            i = j + 2
            continue
        return "".join(out).rstrip(" "), s[j + 1 :]
    raise YamlHeaderError(f"unterminated quoted string in {text!r}")


def _comment(rest: str) -> str:
    """The comment after a value as FITS readers (cfitsio) take it: blanks, the '/' and one blank
    after it skipped, trailing blanks removed."""
    s = rest.lstrip(" ")
    if s.startswith("/"):
        s = s[2:] if s.startswith("/ ") else s[1:]
    return s.rstrip(" ")


def _number(text: str) -> int | float | bool:
    if text == "T":
        return True
    if text == "F":
        return False
    if _INT.fullmatch(text):
        return int(text)
    try:
        value = float(text.replace("D", "E").replace("d", "e"))
    except ValueError:
        raise YamlHeaderError(f"value {text!r} is neither a string, a number nor a logical") from None
    if not math.isfinite(value):
        raise YamlHeaderError(f"value {text!r} is not a finite number")
    return value


@lru_cache(maxsize=8192)  # the memos hold a few headers' distinct cards (LSSTCam: ~1,400 each)
def _parse_card(card: str) -> tuple[str, Any, str, bool]:
    """(keyword, value, comment, continued) of one card image; ``continued`` when its string
    value ends with '&' (a CONTINUE card may follow)."""
    key = card[:8].rstrip()
    if key in ("COMMENT", "HISTORY") or (not key and card[8:10] != "= "):
        return key, card[8:].rstrip() if key else None, "" if key else card[8:].rstrip(), False
    if card.startswith("HIERARCH "):
        eq = card.find("=")
        if eq < 0:
            raise YamlHeaderError(f"HIERARCH card without '=': {card!r}")
        key, field = card[9:eq].strip(), card[eq + 1 :]
    elif card[8:10] == "= ":
        field = card[10:]
    else:
        raise YamlHeaderError(f"not a keyword card: {card!r}")
    s = field.lstrip(" ")
    if s.startswith("'"):
        value, rest = _quoted(s)
        return key, value, _comment(rest), value.endswith("&")
    if not s.strip() or s.startswith("/"):  # undefined value; cfitsio skips blanks after its '/'
        return key, None, _comment(s[1:].lstrip(" ")), False
    text, slash, comment = s.partition("/")
    return key, _number(text.strip()), _comment(slash + comment), False


def cards_to_records(cards: list[str]) -> list[Card]:
    """The records of one HDU's card images, as FITS readers give them: long strings joined from
    their CONTINUE cards (the comments of the pieces joined), END and padding left out."""
    out: list[Card] = []
    open_string = False
    for i, card in enumerate(cards):
        if not isinstance(card, str) or len(card) > CARD or not card.isascii() or not card.isprintable():
            raise YamlHeaderError(f"card {i} is not an 80-character ASCII card image: {card!r}")
        if card.startswith("CONTINUE") and card[8:10] != "= ":
            if not open_string:
                raise YamlHeaderError(f"card {i}: CONTINUE without a long string before it")
            piece, rest = _quoted(card[8:])
            last = out[-1]
            comment = " ".join(c for c in (last.comment, _comment(rest)) if c)
            out[-1] = Card(last.keyword, last.value[:-1] + piece, comment)
            open_string = piece.endswith("&")
            continue
        if card[:8].rstrip() == "END" and not card[3:].strip():
            break
        key, value, comment, open_string = _parse_card(card)
        out.append(Card(key, value, comment))
    return out


# --------------------------------------------------------------------------------------------
# Records -> YAML text
# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=8192)
def _string(text: str, column: int) -> str | None:
    """A string as PyYAML's emitter writes it at ``column`` (plain when its analysis allows and the
    text reads back as a string, else single-quoted), or None when it would fold or needs more."""
    if not text:
        return "''"
    analysis = _analyze(None, text)
    if analysis.multiline:
        return None
    if analysis.allow_block_plain and _resolve(yaml.ScalarNode, text, (True, False)) == _STR_TAG:
        out = text
    elif analysis.allow_single_quoted:
        out = "'" + text.replace("'", "''") + "'"
    else:
        return None
    return out if column + len(out) <= _WIDTH else None


def _float_text(value: float) -> str:
    """A float as PyYAML's representer writes it (repr, lower case, a '.0' before a bare exponent)."""
    text = repr(value).lower()
    if "." not in text and "e" in text:
        text = text.replace("e", ".0e", 1)
    return text


def _scalar(value: Any, column: int) -> str | None:
    """The YAML text of a value written at ``column``, or None when PyYAML's emitter must decide."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _float_text(value) if math.isfinite(value) else None
    if isinstance(value, str):
        return _string(value, column)
    return None


@lru_cache(maxsize=8192, typed=True)  # typed: 1, 1.0 and True are different values here
def _record_text(keyword: str, value: Any, comment: str) -> str:
    """One record as PyYAML writes it, as an item of the HDU's list (``- keyword: ...``)."""
    key = _scalar(keyword, 11) if keyword else "null"
    val = _scalar(value, 9)
    com = _scalar(comment, 11)
    if key is not None and val is not None and com is not None:
        return f"- keyword: {key}\n  value: {val}\n  comment: {com}\n"
    record = {"keyword": keyword or None, "value": value, "comment": comment}
    return yaml.dump([record], Dumper=_Dumper, default_flow_style=False, sort_keys=False)


def _text_of(c: Card) -> str:
    if isinstance(c.value, float) and c.value == 0.0 and math.copysign(1.0, c.value) < 0:
        return _record_text.__wrapped__(c.keyword, c.value, c.comment)  # -0.0 would share 0.0's memo slot
    return _record_text(c.keyword, c.value, c.comment)


@lru_cache(maxsize=8192)
def _card_text(card: str) -> str:
    """The YAML text of one card that is a whole record (memoized on the card image)."""
    return "".join(_text_of(c) for c in cards_to_records([card]) if c.keyword not in NOT_CARRIED)


@lru_cache(maxsize=512)  # two LSSTCam headers' HDUs
def _hdu_body(cards: tuple[str, ...]) -> str:
    if any(c.startswith(("CONTINUE", "END")) for c in cards):  # records spanning cards, or an END
        return "".join(_text_of(c) for c in cards_to_records(list(cards)) if c.keyword not in NOT_CARRIED)
    return "".join(map(_card_text, cards))


@lru_cache(maxsize=4096)
def _key_text(name: str) -> str:
    if _PLAIN_KEY.fullmatch(name) and name not in _NOT_PLAIN_WORDS:
        return name
    return yaml.dump({name: None}, Dumper=_Dumper, default_flow_style=False)[: -len(": null\n")]


def encode_yaml(hdu_cards: list[list[str]], names: list[str] | None = None) -> bytes:
    """The YAML header of a composed header's card images (``hdus[i]["cards"]`` of the payload).

    ``names`` are the payload's HDU names (``PRIMARY``, ``R22_S11``, ``R22_S11/Segment10``); without
    them the extension names come from the EXTNAME cards. Raises :class:`YamlHeaderError` for a
    card that is not a FITS card image.
    """
    keys = yaml_extnames(hdu_cards) if names is None else [yaml_extname(n) for n in names]
    if len(keys) != len(hdu_cards):
        raise YamlHeaderError(f"{len(keys)} names for {len(hdu_cards)} HDUs")
    if len(set(keys)) != len(keys):
        raise YamlHeaderError("two HDUs would have the same extension name")
    if not hdu_cards:
        return b"{}\n"
    parts = []
    for key, cards in zip(keys, hdu_cards):
        body = _hdu_body(tuple(cards))
        parts.append(f"{_key_text(key)}:\n{body}" if body else f"{_key_text(key)}: []\n")
    return "".join(parts).encode("ascii")


def payload_yaml(hdus: list[dict[str, Any]]) -> bytes:
    """The YAML header of a composer payload's ``hdus`` (``[{"name": ..., "cards": [...]}, ...]``)."""
    return encode_yaml([h["cards"] for h in hdus], [h["name"] for h in hdus])


# --------------------------------------------------------------------------------------------
# YAML -> records and card images
# --------------------------------------------------------------------------------------------

_VALUE_TYPES = (type(None), bool, int, float, str)


def decode_yaml_named(data: bytes | str) -> list[tuple[str, list[Card]]]:
    """(extension name, records) per HDU, in order, from a YAML header. Checks the structure and
    every value's type; raises :class:`YamlHeaderError` saying what is wrong."""
    try:
        doc = yaml.load(data, Loader=_Loader)
    except yaml.YAMLError as exc:
        raise YamlHeaderError(f"not YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise YamlHeaderError(f"a YAML header is a mapping of extension names, not {type(doc).__name__}")
    out: list[tuple[str, list[Card]]] = []
    for name, recs in doc.items():
        if not isinstance(name, str):
            raise YamlHeaderError(f"extension name {name!r} is not a string")
        if not isinstance(recs, list):
            raise YamlHeaderError(f"{name}: the cards are not a list")
        cards: list[Card] = []
        for i, rec in enumerate(recs):
            where = f"{name} card {i}"
            if not isinstance(rec, dict) or "keyword" not in rec or "value" not in rec:
                raise YamlHeaderError(f"{where}: not a mapping with keyword and value")
            keyword, value, comment = rec["keyword"], rec["value"], rec.get("comment", "")
            if keyword is not None and not isinstance(keyword, str):
                raise YamlHeaderError(f"{where}: keyword {keyword!r} is not a string")
            if not isinstance(value, _VALUE_TYPES):
                raise YamlHeaderError(f"{where} ({keyword}): value of type {type(value).__name__} is not a FITS value")
            if isinstance(value, float) and not math.isfinite(value):
                raise YamlHeaderError(f"{where} ({keyword}): {value!r} is not a FITS value")
            if comment is None:
                comment = ""
            if not isinstance(comment, str):
                raise YamlHeaderError(f"{where} ({keyword}): comment is not a string")
            cards.append(Card(keyword or "", value, comment))
        out.append((name, cards))
    return out


def decode_yaml(data: bytes | str) -> list[list[Card]]:
    """The records of every HDU of a YAML header, in order (see :func:`decode_yaml_named`)."""
    return [cards for _, cards in decode_yaml_named(data)]


def records_to_cards(records: list[Card]) -> list[str]:
    """Card images of one HDU's records (without CHECKSUM/DATASUM: :func:`header.fitsfile.encode_hdu`
    adds them). Raises :class:`YamlHeaderError` for a record FITS cannot hold."""
    out: list[str] = []
    for c in records:
        if c.keyword in NOT_CARRIED:
            continue
        try:
            out.extend(format_card(c.keyword, c.value, c.comment))
        except CardError as exc:
            raise YamlHeaderError(f"{c.keyword}: {exc}") from None
    return out


def yaml_to_cards(data: bytes | str) -> list[tuple[str, list[str]]]:
    """(extension name, card images) per HDU of a YAML header, ready for
    :func:`header.fitsfile.encode_file` (which adds DATASUM, CHECKSUM and END)."""
    return [(name, records_to_cards(recs)) for name, recs in decode_yaml_named(data)]
