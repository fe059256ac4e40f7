"""The YAML header form (header/yamlheader.py): the previous service's layout byte for byte, and a
round trip that gives back the FITS header's cards, types and order as fitsio reads them."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import fitsio
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from header.cards import format_card, structural_extension, structural_primary
from header.compose import ComposedHeader
from header.fitsfile import encode_file, encode_file_from_cards, encode_hdu
from header.yamlheader import (
    Card,
    YamlHeaderError,
    cards_to_records,
    decode_yaml,
    decode_yaml_named,
    encode_yaml,
    payload_yaml,
    yaml_extname,
    yaml_extnames,
    yaml_to_cards,
)
from tools.bench.stages import composed_headers

CAMERAS = ("LATISS", "ComCam", "LSSTCam")


@pytest.fixture(scope="module", params=CAMERAS)
def composed(request: pytest.FixtureRequest) -> ComposedHeader:
    return next(iter(composed_headers(request.param, 1)))


def old_service_dump(named: list[tuple[str, list[str]]]) -> bytes:
    """What lsst-dm/HeaderService 3.5.8 wrote (hutils.HDRTEMPL.write_header_yaml): its records per
    extension dumped by PyYAML, here built from fitsio's reading of the card images."""
    doc: dict[str, list[dict[str, Any]]] = {}
    for name, cards in named:
        recs = []
        for r in fitsio_records(cards):
            if r["name"] in ("CHECKSUM", "DATASUM"):
                continue
            recs.append({"keyword": r["name"], "value": r["value"], "comment": r["comment"]})
        doc[name] = recs
    return yaml.dump(doc, default_flow_style=False, sort_keys=False).encode()


def fitsio_records(cards: list[str]) -> list[dict[str, Any]]:
    """fitsio's records of one HDU's card images, read from FITS bytes as a reader of the file
    would, in the previous service's terms: COMMENT/HISTORY carry their text as the value with
    an empty comment, a blank-keyword card has no value (its text is the comment)."""
    out = []
    for r in _read_hdu(cards).records():
        name, value, comment = r["name"], r.get("value"), r.get("comment", "")
        if name in ("COMMENT", "HISTORY"):
            comment = ""
        elif name is None:
            value = None
        out.append({"name": name, "value": value, "comment": comment})
    return out


def _read_hdu(cards: list[str]) -> fitsio.FITSHDR:
    """fitsio's reading of the HDU written as FITS bytes to a real file."""
    has_sums = any(c.startswith("CHECKSUM=") for c in cards)
    data = encode_file_from_cards([cards]) if has_sums else encode_hdu(cards)
    extension = cards[0].startswith("XTENSION")
    with tempfile.TemporaryDirectory(prefix="hs-yaml-") as d:
        path = Path(d) / "hdu.fits"
        path.write_bytes(encode_hdu(structural_primary()) + data if extension else data)
        return fitsio.read_header(str(path), int(extension))


def same(a: Any, b: Any) -> bool:
    """Equal and of the same type (1 is not 1.0 is not True)."""
    return type(a) is type(b) and a == b


# --------------------------------------------------------------------------------------------
# Composed headers of the three cameras
# --------------------------------------------------------------------------------------------


def test_extension_names_in_hdu_order(composed: ComposedHeader) -> None:
    named = decode_yaml_named(encode_yaml(composed.hdus, composed.hdu_names))
    names = [n for n, _ in named]
    assert names[0] == "PRIMARY"
    assert len(names) == len(composed.hdus) == len(set(names))
    sensors = [n for n in composed.hdu_names[1:] if "/" not in n]
    for i, payload_name in enumerate(composed.hdu_names[1:], start=1):
        if "/" in payload_name:
            sensor, segment = payload_name.split("/")
            assert names[i] == f"{sensor}_{segment}" and segment.startswith("Segment")
        else:
            assert names[i] == f"{payload_name}_PRIMARY"
    assert [n for n in names if n.endswith("_PRIMARY")] == [f"{s}_PRIMARY" for s in sensors]
    # without the payload's names, the EXTNAME cards give the same ones
    assert yaml_extnames(composed.hdus) == names
    assert encode_yaml(composed.hdus) == encode_yaml(composed.hdus, composed.hdu_names)
    assert payload_yaml(json.loads(composed.payload_json())["hdus"]) == encode_yaml(composed.hdus, composed.hdu_names)


def test_round_trip_equals_fitsio_reading_of_the_fits_file(composed: ComposedHeader, tmp_path: Path) -> None:
    path = tmp_path / "h.fits"
    path.write_bytes(composed.file_bytes())
    hdus = decode_yaml(encode_yaml(composed.hdus, composed.hdu_names))
    with fitsio.FITS(str(path)) as f:
        assert len(f) == len(hdus)
        for i, records in enumerate(hdus):
            expected = [r for r in f[i].read_header().records() if r["name"] not in ("CHECKSUM", "DATASUM")]
            assert [c.keyword for c in records] == [r["name"] for r in expected], i
            for card, r in zip(records, expected):
                assert same(card.value, r["value"]), (i, card, r["value"])
                assert card.comment == r["comment"], (i, card)
            assert all(c.keyword not in ("CHECKSUM", "DATASUM") for c in records)


def test_same_bytes_as_the_old_service_yaml_dump(composed: ComposedHeader) -> None:
    named = [(yaml_extname(n), c) for n, c in zip(composed.hdu_names[:40], composed.hdus[:40])]
    assert encode_yaml([c for _, c in named], [n for n, _ in zip(composed.hdu_names, named)]) == old_service_dump(named)


def test_fits_rebuilt_from_yaml_is_the_same_file(composed: ComposedHeader) -> None:
    rebuilt = encode_file([cards for _, cards in yaml_to_cards(encode_yaml(composed.hdus, composed.hdu_names))])
    assert rebuilt == composed.file_bytes()


def test_header_parity_cards_are_carried(composed: ComposedHeader) -> None:
    """Undefined values are null; every keyword of the primary is in the YAML primary."""
    text = encode_yaml(composed.hdus, composed.hdu_names)
    primary = decode_yaml(text)[0]
    assert [c.keyword for c in primary] == [c.keyword for c in cards_to_records(composed.hdus[0])
                                            if c.keyword not in ("CHECKSUM", "DATASUM")]
    assert b"keyword: CHECKSUM" not in text and b"keyword: DATASUM" not in text


# --------------------------------------------------------------------------------------------
# Awkward cards
# --------------------------------------------------------------------------------------------

AWKWARD = [
    ("EXTNAME", "PRIMARY", ""),
    ("UNDEF", None, "no value"),
    ("EMPTY", "", "empty string"),
    ("BLANKS", "   ", "blank string"),
    ("LEAD", "  leading blanks", ""),
    ("QUOTE", "it's", "an apostrophe"),
    ("YES", "yes", "a YAML boolean word"),
    ("NULLWORD", "null", "a YAML null word"),
    ("TRUEWORD", "True", ""),
    ("NUMSTR", "20261124", "digits as a string"),
    ("FLTSTR", "1.5", "a float as a string"),
    ("SEXAGES", "12:30", "YAML 1.1 sexagesimal"),
    ("DATE-OBS", "2026-11-25T03:04:06.457", "a timestamp-looking string"),
    ("SECTION", "[1:4072,1:4000]", "flow indicator first"),
    ("HASH", "a #b", "comment indicator inside"),
    ("COLON", "key: value", "mapping indicator inside"),
    ("STAR", "*alias", ""),
    ("DASH", "- item", ""),
    ("LONG", "word " * 40 + "end", "a long string (CONTINUE)"),
    ("LONGQ", "it''s " * 30, "long with quotes"),
    ("INT", 0, ""),
    ("NEG", -42, ""),
    ("BIG", 10**15, ""),
    ("FLT", 1.0, ""),
    ("NEGZERO", -0.0, ""),
    ("TINY", 1.5e-05, ""),
    ("HUGE", 1e17, ""),
    ("PREC", 0.1 + 0.2, ""),
    ("TRUE", True, "logical"),
    ("FALSE", False, "logical"),
    ("SIMULATE ATMCS", 0, "a HIERARCH keyword"),
    ("HIERARCH LONG KEYWORD NAME", "text", "HIERARCH with a string"),
    ("COMMENT", "a comment card: with a colon", ""),
    ("HISTORY", "history text", ""),
    ("", None, "---- a section line ----"),
    ("LONGCOM", 1, "comment " * 12),
    ("FOLD", "a b", "x" * 20 + " " + "y" * 30 + " " + "z" * 10),
]


def awkward_cards() -> list[str]:
    cards = structural_primary()
    for key, value, comment in AWKWARD:
        cards += format_card(key, value, comment)
    return cards


def test_awkward_cards_round_trip_with_their_types() -> None:
    cards = awkward_cards()
    ext = structural_extension() + format_card("EXTNAME", "R22_S11") + format_card("ODD", "odd", "")
    text = encode_yaml([cards, ext])
    named = decode_yaml_named(text)
    assert [n for n, _ in named] == ["PRIMARY", "R22_S11_PRIMARY"]
    for (_, records), hdu in zip(named, [cards, ext]):
        expected = fitsio_records(hdu)
        expected = [r for r in expected if r["name"] not in ("CHECKSUM", "DATASUM")]
        assert len(records) == len(expected)
        for card, r in zip(records, expected):
            assert card.keyword == (r["name"] or "")
            assert same(card.value, r["value"]), (card, r)
            assert card.comment == r["comment"], (card, r)
    # FITS rebuilt from the YAML reads back the same
    rebuilt = yaml_to_cards(text)
    assert decode_yaml(encode_yaml([c for _, c in rebuilt])) == decode_yaml(text)


def test_awkward_cards_same_bytes_as_the_old_service_yaml_dump() -> None:
    cards = awkward_cards()
    assert encode_yaml([cards]) == old_service_dump([("PRIMARY", cards)])
    text = encode_yaml([cards]).decode()
    assert "- keyword: null\n  value: null\n  comment: '---- a section line ----'\n" in text
    assert "- keyword: SIMULATE ATMCS\n  value: 0\n" in text
    assert "  value: 1.0e+17\n" in text and "  value: 1.5e-05\n" in text


def test_undefined_is_null_and_read_back_as_none() -> None:
    text = encode_yaml([structural_primary() + format_card("RA", None, "[undefined: stale]")])
    assert "- keyword: RA\n  value: null\n  comment: '[undefined: stale]'\n" in text.decode()
    assert decode_yaml(text)[0][-1] == Card("RA", None, "[undefined: stale]")


VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**15), max_value=10**15),
    # finite doubles whose 15-digit card text cfitsio reads back (no subnormals, no overflow)
    st.floats(min_value=-1e300, max_value=1e300).filter(lambda x: x == 0 or abs(x) > 1e-300),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=120),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(VALUES, st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=50)),
                max_size=25))
def test_any_values_round_trip_and_match_pyyaml(items: list[tuple[Any, str]]) -> None:
    cards = structural_primary()
    for i, (value, comment) in enumerate(items):
        cards += format_card(f"KEY{i}", value, comment)
    text = encode_yaml([cards])
    assert text == old_service_dump([("PRIMARY", cards)])
    records = decode_yaml(text)[0]
    reread = cards_to_records(cards)
    assert len(records) == len(reread)
    for got, want in zip(records, reread):
        assert got.keyword == want.keyword and got.comment == want.comment
        assert same(got.value, want.value)


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (b"- a\n- b\n", "mapping"),
        (b"PRIMARY: 3\n", "not a list"),
        (b"PRIMARY:\n- 3\n", "keyword and value"),
        (b"PRIMARY:\n- keyword: A\n  value: 2026-11-25 03:04:06\n", "datetime"),
        (b"PRIMARY:\n- keyword: A\n  value: .nan\n", "not a FITS value"),
        (b"PRIMARY:\n- keyword: A\n  value: [1, 2]\n", "list"),
        (b"PRIMARY:\n- keyword: 5\n  value: 1\n", "not a string"),
        (b"PRIMARY: [\n", "not YAML"),
        (b"\xff\xfe", "mapping"),
        (b"PRIMARY: \x80\n", "not YAML"),
    ],
)
def test_bad_yaml_is_rejected_with_its_reason(text: bytes, why: str) -> None:
    with pytest.raises(YamlHeaderError, match=why):
        decode_yaml(text)


def test_record_fits_cannot_hold_is_rejected() -> None:
    with pytest.raises(YamlHeaderError, match="BAD"):
        yaml_to_cards(b"PRIMARY:\n- keyword: BAD\n  value: caf\xc3\xa9\n  comment: ''\n")


@pytest.mark.parametrize(
    "card",
    ["X" * 81, "KEY     = 'unterminated".ljust(80), "CONTINUE  'orphan'".ljust(80), "KEY     = 1.2.3".ljust(80),
     "KEY     = caf\u00e9".ljust(80), "NOEQUALS    1".ljust(80)],
)
def test_bad_card_image_is_rejected(card: str) -> None:
    with pytest.raises(YamlHeaderError):
        encode_yaml([structural_primary() + [card]])


def test_names_must_match_the_hdus() -> None:
    with pytest.raises(YamlHeaderError, match="names"):
        encode_yaml([structural_primary()], ["PRIMARY", "R22_S11"])
    with pytest.raises(YamlHeaderError, match="same extension name"):
        encode_yaml([structural_primary(), structural_extension()], ["PRIMARY", "PRIMARY"])
    with pytest.raises(YamlHeaderError, match="no EXTNAME"):
        encode_yaml([structural_primary(), structural_extension()])
    assert encode_yaml([]) == b"{}\n" and decode_yaml(b"{}\n") == []


INDICATORS = st.text(alphabet="aZ09 -_.:#'\"[]{},&*!|>%@`?~=<+/()", min_size=1, max_size=90)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(INDICATORS, INDICATORS), min_size=1, max_size=10))
def test_strings_full_of_yaml_indicators_match_pyyaml(items: list[tuple[str, str]]) -> None:
    """Plain or quoted, folded or not: each string written as PyYAML writes it, and read back."""
    cards = structural_primary()
    for i, (value, comment) in enumerate(items):
        cards += format_card(f"S{i}", value, comment)
    text = encode_yaml([cards])
    assert text == old_service_dump([("PRIMARY", cards)])
    assert decode_yaml(text)[0] == cards_to_records(cards)
