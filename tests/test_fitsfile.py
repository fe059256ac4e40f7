"""CHECKSUM/DATASUM of header-only HDUs: the card-sum shortcut against whole-HDU bytes."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from header.cards import format_card
from header.fitsfile import checksum_cards, checksum32, encode_file_from_cards, encode_hdu, split_cards

VALUES = st.one_of(
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.booleans(),
    st.none(),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=150),
)


def ones_complement_sum(data: bytes) -> int:
    """Independent route: numpy 16-bit halves with end-around carry."""
    words = np.frombuffer(data, dtype=">u4").astype(np.uint64)
    hi, lo = int((words >> 16).sum()), int((words & 0xFFFF).sum())
    while (hi >> 16) or (lo >> 16):
        hi, lo = (hi & 0xFFFF) + (lo >> 16), (lo & 0xFFFF) + (hi >> 16)
    return (hi << 16) | lo


@st.composite
def card_lists(draw: st.DrawFn) -> list[str]:
    cards: list[str] = []
    for i in range(draw(st.integers(min_value=0, max_value=60))):
        cards += format_card(f"KEY{i}", draw(VALUES), draw(st.text(alphabet="abc xyz", max_size=30)))
    return cards


@settings(max_examples=200, deadline=None)
@given(card_lists())
def test_checksum_from_card_sums_equals_the_hdu_bytes(cards: list[str]) -> None:
    fast = checksum_cards(list(cards))
    assert fast == split_cards(encode_hdu(list(cards)))
    data = encode_file_from_cards([fast])
    assert len(data) % 2880 == 0
    # a correct CHECKSUM makes the whole HDU sum to negative zero
    assert ones_complement_sum(data) == 0xFFFFFFFF
    assert checksum32(data) == 0xFFFFFFFF
    assert fast[-2].startswith("DATASUM = '0 ") and fast[-1].startswith("CHECKSUM= '")
