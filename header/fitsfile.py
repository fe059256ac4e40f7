"""Header-only FITS files: HDUs of card images, 2880-byte blocks, CHECKSUM/DATASUM.

The data part of every HDU is empty, so DATASUM is '0' and CHECKSUM covers the header alone
(ones'-complement sum, ASCII encoding of the FITS checksum convention).
"""

from __future__ import annotations

import struct
from functools import lru_cache

from header.cards import CARD, format_card

BLOCK = 2880
_EXCLUDE = set(range(0x3A, 0x41)) | set(range(0x5B, 0x61))
_ZERO = "0" * 16


def checksum32(data: bytes, start: int = 0) -> int:
    """32-bit ones'-complement sum of big-endian words (FITS checksum convention)."""
    return _fold(start + sum(struct.unpack(f">{len(data) // 4}I", data)))


def encode_checksum(total: int) -> str:
    """ASCII encoding of the complement of a checksum, so the HDU then sums to -0."""
    value = (~total) & 0xFFFFFFFF
    asc = [0] * 16
    for i in range(4):
        byte = (value >> (24 - 8 * i)) & 0xFF
        quotient, remainder = byte // 4 + 0x30, byte % 4
        ch = [quotient + remainder, quotient, quotient, quotient]
        changed = True
        while changed:
            changed = False
            for j in (0, 2):
                if ch[j] in _EXCLUDE or ch[j + 1] in _EXCLUDE:
                    ch[j] += 1
                    ch[j + 1] -= 1
                    changed = True
        for j in range(4):
            asc[4 * j + i] = ch[j]
    text = bytes(asc).decode("ascii")
    return text[-1] + text[:-1]


def pad_block(data: bytes, fill: bytes = b" ") -> bytes:
    rem = len(data) % BLOCK
    return data if rem == 0 else data + fill * (BLOCK - rem)


def encode_hdu(cards: list[str]) -> bytes:
    """One header-only HDU as bytes, with DATASUM and CHECKSUM computed and END added.

    ``cards`` must not hold CHECKSUM, DATASUM or END: they are appended here, last.
    """
    body = cards + format_card("DATASUM", "0", "data unit checksum (no data)")
    ck_index = len(body)
    body = body + format_card("CHECKSUM", _ZERO, "HDU checksum")
    raw = pad_block(("".join(body) + "END".ljust(CARD)).encode("ascii"))
    ck = encode_checksum(checksum32(raw))
    body[ck_index] = format_card("CHECKSUM", ck, "HDU checksum")[0]
    return pad_block(("".join(body) + "END".ljust(CARD)).encode("ascii"))


_WORDS = struct.Struct(">20I")
_BLANK_WORD = 0x20202020
_END = "END".ljust(CARD)


@lru_cache(maxsize=8192)
def card_sum(card: str) -> int:
    """Plain integer sum of one card's twenty big-endian 32-bit words (memoized: most cards of a
    camera's headers repeat from image to image; 8192 hit as often as 65536, 98% of LSSTCam's
    cards, and keep fewer cards of past images alive)."""
    return sum(_WORDS.unpack(card.encode("ascii")))


def _fold(total: int) -> int:
    """Ones'-complement (end-around carry) reduction of a sum of 32-bit words to 32 bits."""
    while total >> 32:
        total = (total & 0xFFFFFFFF) + (total >> 32)
    return total


def checksum_cards(cards: list[str]) -> list[str]:
    """``cards`` followed by their DATASUM and CHECKSUM cards, as :func:`encode_hdu` writes them.

    Cards are whole numbers of 32-bit words and the ones'-complement sum does not depend on word
    order, so the HDU's sum is the sum of its cards' (memoized) sums, END's and the blank padding's:
    no bytes are assembled to checksum a header.
    """
    body = cards + format_card("DATASUM", "0", "data unit checksum (no data)")
    n = len(body) + 2  # CHECKSUM and END
    pad_words = ((-n * CARD) % BLOCK) // 4
    total = sum(map(card_sum, body)) + card_sum(_ZERO_CHECKSUM) + card_sum(_END) + pad_words * _BLANK_WORD
    return body + format_card("CHECKSUM", encode_checksum(_fold(total)), "HDU checksum")


def encode_file(hdus: list[list[str]]) -> bytes:
    return b"".join(encode_hdu(cards) for cards in hdus)


def split_cards(hdu_bytes: bytes) -> list[str]:
    """Card images of an encoded HDU, END and padding removed."""
    text = hdu_bytes.decode("ascii")
    out = []
    for i in range(0, len(text), CARD):
        card = text[i : i + CARD]
        if card.startswith("END "):
            break
        out.append(card)
    return out


def encode_file_from_cards(hdus: list[list[str]]) -> bytes:
    """File bytes from card images that already carry their CHECKSUM/DATASUM (as composed)."""
    return b"".join(pad_block(("".join(cards) + "END".ljust(CARD)).encode("ascii")) for cards in hdus)


_ZERO_CHECKSUM = format_card("CHECKSUM", _ZERO, "HDU checksum")[0]
