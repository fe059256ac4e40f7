"""The fast-path client: card images back to fitsio.FITSHDR, and headers received from a PUB socket."""

from __future__ import annotations

import math
from collections.abc import Iterator

import fitsio
import pytest
import zmq

from header.cards import format_card, structural_primary
from protocols.envelope import Sender
from protocols.fastpath import (
    CardParseError,
    FastPathClient,
    HeaderMessage,
    cards_to_fitshdr,
    headers,
    parse_header_payload,
)

# (key as given to format_card, value, comment, key to look up in the FITSHDR). Strings do not end
# in blanks: trailing blanks of a FITS string are not significant, and readers drop them.
ROUND_TRIP = [
    ("OBJECT", ("a long target name " * 12).rstrip(), "long string: CONTINUE", "OBJECT"),
    ("QUOTES", ("it's a 'quoted' value, " * 6).rstrip(), "CONTINUE with quotes at piece boundaries", "QUOTES"),
    ("AMPS", "x&" * 70, "ampersands inside a long string", "AMPS"),
    ("SHORTAMP", "trail&", "a short string ending with '&' is not continued", "SHORTAMP"),
    ("EMPTY", "", "empty string", "EMPTY"),
    ("LEADING", "  two leading blanks", "", "LEADING"),
    ("HIERARCH ESO DET NAME", "hierarch value", "HIERARCH string", "ESO DET NAME"),
    ("VERY LONG KEYWORD NAME", 42, "HIERARCH because of length", "VERY LONG KEYWORD NAME"),
    ("HIERARCH LONG STRING KEY", "y" * 150, "HIERARCH and CONTINUE", "LONG STRING KEY"),
    ("UNDEF", None, "undefined value", "UNDEF"),
    ("HIERARCH UNDEF KEY", None, "undefined HIERARCH", "UNDEF KEY"),
    ("EXPTIME", 30.0, "float", "EXPTIME"),
    ("PI", math.pi, "float, all digits", "PI"),
    ("TINY", -1.25e-300, "float with exponent", "TINY"),
    ("BIG", 6.02214076e23, "float with exponent", "BIG"),
    ("NEGZERO", -0.0, "", "NEGZERO"),
    ("NAXIS1", 4072, "int", "NAXIS1"),
    ("NEGINT", -17, "", "NEGINT"),
    ("BIGINT", 2**62, "", "BIGINT"),
    ("SIMULATE", True, "bool", "SIMULATE"),
    ("OVERSCAN", False, "bool", "OVERSCAN"),
]


@pytest.mark.parametrize("key,value,comment,lookup", ROUND_TRIP, ids=[r[0] for r in ROUND_TRIP])
def test_card_round_trip(key, value, comment, lookup):
    cards = format_card(key, value, comment)
    assert all(len(c) == 80 for c in cards)
    hdr = cards_to_fitshdr(cards)
    assert len(hdr) == 1
    got = hdr[lookup]
    if value is None:
        assert got is None
    else:
        assert type(got) is type(value)
        assert got == value
    if isinstance(value, float):
        assert math.copysign(1.0, got) == math.copysign(1.0, value)
    assert hdr.get_comment(lookup) == comment
    if key.startswith("HIERARCH") or len(key) > 8:
        assert hdr["HIERARCH " + lookup] == got


def test_long_string_really_uses_continue():
    cards = format_card("OBJECT", "z" * 200, "c")
    assert len(cards) >= 3 and all(c.startswith("CONTINUE") for c in cards[1:])
    assert cards_to_fitshdr(cards)["OBJECT"] == "z" * 200


def _header_cards() -> list[str]:
    cards = structural_primary()
    for key, value, comment, _ in ROUND_TRIP:
        cards += format_card(key, value, comment)
    cards += format_card("COMMENT", "first comment line")
    cards += format_card("HISTORY", "made by the test")
    cards += format_card("COMMENT", "second comment line")
    cards += format_card("", "blank-keyword commentary")
    cards.append("END".ljust(80))
    return cards


def test_whole_header_keeps_order_commentary_and_skips_end():
    hdr = cards_to_fitshdr(_header_cards())
    names = hdr.keys()
    assert names[:4] == ["SIMPLE", "BITPIX", "NAXIS", "EXTEND"]
    assert "END" not in names
    assert names.count("COMMENT") == 2 and names.count("HISTORY") == 1
    commentary = [(r["name"], r["value"]) for r in hdr.records() if r["name"] in ("COMMENT", "HISTORY")]
    assert commentary == [
        ("COMMENT", "first comment line"),
        ("HISTORY", "made by the test"),
        ("COMMENT", "second comment line"),
    ]
    blank = [r for r in hdr.records() if r["name"] is None]
    assert [r["comment"] for r in blank] == ["blank-keyword commentary"]
    for key, value, _, lookup in ROUND_TRIP:
        assert hdr[lookup] == value, key


def test_same_records_as_fitsio_reading_the_file(tmp_path):
    """What a forwarder gets equals what fitsio reads from a file holding the same cards."""
    cards = _header_cards()
    block = "".join(cards)
    block += " " * (-len(block) % 2880)
    path = tmp_path / "header.fits"
    path.write_bytes(block.encode("ascii"))
    from_file = fitsio.read_header(str(path))
    ours = cards_to_fitshdr(cards)
    assert [r["name"] for r in ours.records()] == [r["name"] for r in from_file.records()]
    for mine, theirs in zip(ours.records(), from_file.records()):
        if mine["name"] is None:
            continue
        if isinstance(theirs["value"], float):
            assert mine["value"] == pytest.approx(theirs["value"], rel=1e-15), mine["name"]
        else:
            assert mine["value"] == theirs["value"], mine["name"]


def test_orphan_continue_is_dropped_and_unfinished_amp_kept():
    cards = format_card("A", "abc&") + ["CONTINUE  'orphan'".ljust(80)] + format_card("B", 1)
    hdr = cards_to_fitshdr(cards)
    # 'abc&' followed by CONTINUE *is* a long string by the convention
    assert hdr["A"] == "abcorphan"
    hdr = cards_to_fitshdr(format_card("B", 1) + ["CONTINUE  'orphan'".ljust(80)])
    assert hdr.keys() == ["B"]


def test_bad_cards_are_named():
    with pytest.raises(CardParseError, match="card 1"):
        cards_to_fitshdr(format_card("A", 1) + ["X" * 81])
    with pytest.raises(CardParseError, match="non-printable"):
        cards_to_fitshdr(["A       = 'caf\u00e9'".ljust(80)])
    with pytest.raises(CardParseError, match="not a string"):
        cards_to_fitshdr([42])  # type: ignore[list-item]


def _payload(image: str = "AT_O_20240601_000042", version: int = 1) -> dict:
    primary = structural_primary() + format_card("OBJECT", "HD 12345 " * 12, "target")
    primary += format_card("EXPTIME", 30.0, "s") + format_card("HIERARCH ESO TEL AIRM", 1.234)
    primary += format_card("DOMEAZ", None, "no telemetry") + format_card("SHUTTER", True)
    sensor = format_card("CCDSLOT", "S00") + format_card("DETSIZE", "[1:4072,1:4000]")
    return {
        "imageName": image,
        "instrument": "LATISS",
        "dayobs": "20240601",
        "version": version,
        "complete": False,
        "reasons": ["DOMEAZ: no sample"],
        "hdus": [{"name": "PRIMARY", "cards": primary}, {"name": "R00_S00", "cards": sensor}],
        "provenance": {},
    }


def test_parse_header_payload_and_headers():
    msg = parse_header_payload(_payload(), "hdr.LATISS.AT_O_20240601_000042")
    assert isinstance(msg, HeaderMessage)
    assert (msg.image_name, msg.instrument, msg.version, msg.complete) == ("AT_O_20240601_000042", "LATISS", 1, False)
    assert [n for n, _ in msg.hdus] == ["PRIMARY", "R00_S00"]
    assert msg.reasons == ["DOMEAZ: no sample"]
    hs = headers(msg)
    assert hs[0]["OBJECT"] == ("HD 12345 " * 12).rstrip()  # trailing blanks are not significant
    assert hs[1]["DETSIZE"] == "[1:4072,1:4000]"
    assert headers(_payload())[0]["ESO TEL AIRM"] == 1.234
    assert msg.cards("R00_S00") == _payload()["hdus"][1]["cards"]


@pytest.mark.parametrize("bad", [[], {"hdus": "x"}, {"hdus": [{"name": "P"}]}, {"hdus": [], "version": "v1"}])
def test_parse_header_payload_rejects_bad_shapes(bad):
    with pytest.raises(ValueError):
        parse_header_payload(bad, "hdr.LATISS.X")


# --------------------------------------------------------------------------------------------
# Over a real PUB socket
# --------------------------------------------------------------------------------------------


@pytest.fixture
def pub() -> Iterator[tuple[zmq.Socket, str]]:
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.PUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind("tcp://127.0.0.1:*")  # a free port, chosen by the OS
    yield sock, sock.getsockopt_string(zmq.LAST_ENDPOINT)
    sock.close()


def _sync(sock: zmq.Socket, sender: Sender, client: FastPathClient, topic: str = "hdr.LATISS.SYNC") -> None:
    """Send until the subscription is live (PUB drops what it sends before that), then drain."""
    for _ in range(100):
        sock.send_multipart(sender.frames(topic, _payload("SYNC")))
        if client.receive(0.1) is not None:
            break
    else:
        pytest.fail("the fast-path client never received anything")
    while client.receive(0.2) is not None:
        pass


def test_fast_path_client_receives_fitshdr(pub):
    sock, endpoint = pub
    assert endpoint.startswith("tcp://127.0.0.1:")
    sender = Sender("composer.LATISS@test:1:0.000")
    with FastPathClient(endpoint, instrument="LATISS") as client:
        _sync(sock, sender, client)
        sock.send_multipart(sender.frames("hdr.LATISS.X", _payload("X", version=2)))
        msg = client.receive(5)
        assert msg is not None
        assert (msg.topic, msg.image_name, msg.instrument, msg.version, msg.complete) == (
            "hdr.LATISS.X",
            "X",
            "LATISS",
            2,
            False,
        )
        assert msg.envelope is not None and msg.envelope.sender == sender.sender
        primary, sensor = headers(msg)
        assert isinstance(primary, fitsio.FITSHDR)
        assert primary["SIMPLE"] is True and primary["NAXIS"] == 0
        assert primary["OBJECT"] == ("HD 12345 " * 12).rstrip()
        assert primary["EXPTIME"] == 30.0
        assert primary["HIERARCH ESO TEL AIRM"] == 1.234
        assert primary["DOMEAZ"] is None and primary.get_comment("DOMEAZ") == "no telemetry"
        assert primary["SHUTTER"] is True
        assert sensor["CCDSLOT"] == "S00"
        assert msg.payload["dayobs"] == "20240601"
        assert client.gaps == 0 and msg.missed == 0

        # garbage on the socket is counted and skipped; a sequence gap is counted
        sock.send_multipart([b"hdr.LATISS.junk", b"not an envelope"])
        sock.send_multipart(sender.frames("hdr.LATISS.bad", {"hdus": [{"name": "P", "cards": ["X" * 81]}]}))
        sender.seq += 3  # three messages "lost"
        sock.send_multipart(sender.frames("hdr.LATISS.Y", _payload("Y")))
        msg = client.receive(5)
        assert msg is not None and msg.image_name == "Y"
        assert client.malformed == 2
        assert msg.missed == 3 and client.gaps == 3


def test_fast_path_client_filters_instrument_and_image(pub):
    sock, endpoint = pub
    sender = Sender("composer.LATISS@test:1:0.000")
    with FastPathClient(endpoint, instrument="LATISS", image="X") as client:
        _sync(sock, sender, client, "hdr.LATISS.X")
        sock.send_multipart(sender.frames("hdr.ComCam.X", _payload("X")))
        sock.send_multipart(sender.frames("hdr.LATISS.X2", _payload("X2")))  # same prefix, other image
        sock.send_multipart(sender.frames("hdr.LATISS.X", _payload("X", version=7)))
        msg = client.receive(5)
        assert msg is not None and msg.image_name == "X" and msg.version == 7
        assert client.receive(0.2) is None
    with pytest.raises(ValueError):
        FastPathClient(endpoint, image="X")


def test_iteration_yields_messages(pub):
    sock, endpoint = pub
    sender = Sender("composer.LATISS@test:1:0.000")
    client = FastPathClient(endpoint)
    try:
        _sync(sock, sender, client)
        for name in ("A", "B"):
            sock.send_multipart(sender.frames(f"hdr.LATISS.{name}", _payload(name)))
        it = iter(client)
        assert [next(it).image_name, next(it).image_name] == ["A", "B"]
    finally:
        client.close()
