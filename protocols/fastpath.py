"""Forwarder-side client of the fast path: finished FITS headers straight from the composer.

The composer publishes every header it finishes on its PUB socket (``composer_pub``) with the topic
``hdr.<instrument>.<imageName>`` and the usual envelope (see :mod:`protocols.envelope`). The payload
is plain JSON holding the header as FITS card images, HDU by HDU::

    {"imageName": ..., "instrument": ..., "version": 1, "complete": true, "reasons": [...],
     "hdus": [{"name": "PRIMARY", "cards": ["SIMPLE  =                    T / ...", ...]}, ...]}

Each card is the 80-character card image exactly as it is written to the file on disk (long
strings use the CONTINUE convention, long keywords HIERARCH, undefined values a blank value
field), so a forwarder in any language can read it: subscribe to ``hdr.`` with any ZeroMQ
binding, take frame 2, parse JSON, and copy the cards into its own header. This module is the
Python client of that protocol; it turns the cards back into :class:`fitsio.FITSHDR` objects::

    from protocols.fastpath import FastPathClient

    with FastPathClient("tcp://127.0.0.1:5552", instrument="LATISS") as client:
        for msg in client:                       # blocks; one HeaderMessage per finished header
            primary = msg.hdus[0][1]             # fitsio.FITSHDR
            print(msg.image_name, msg.version, primary["EXPTIME"])

A header may be published more than once for the same image (a later ``version`` supersedes an
earlier one, e.g. after an incomplete header was completed). Sequence gaps — headers the socket
dropped, for instance because the forwarder was too slow — are counted in :attr:`FastPathClient.gaps`;
the authoritative copy of every header is always in the publisher's annex.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import fitsio
import zmq

from protocols.envelope import Envelope, EnvelopeError, GapTracker, decode
from protocols.messages import SensorRequest

log = logging.getLogger(__name__)

CARD = 80
HDR_PREFIX = "hdr."

__all__ = [
    "CardParseError",
    "FastPathClient",
    "HeaderMessage",
    "cards_to_fitshdr",
    "headers",
    "parse_header_payload",
]


class CardParseError(ValueError):
    """A card image that cannot be read as FITS; the message names the card and why."""


# --------------------------------------------------------------------------------------------
# Card images -> FITSHDR
# --------------------------------------------------------------------------------------------


def _parse_quoted(text: str) -> tuple[str, str] | None:
    """Read a FITS quoted string at the start of ``text`` (after blanks).

    Returns ``(value, rest)`` with doubled quotes undone and trailing blanks of the value removed
    (they are not significant in FITS), ``rest`` being what follows the closing quote; ``None`` if
    ``text`` does not start with a properly closed quoted string.
    """
    s = text.lstrip(" ")
    if not s.startswith("'"):
        return None
    out: list[str] = []
    i = 1
    while i < len(s):
        c = s[i]
        if c == "'":
            if i + 1 < len(s) and s[i + 1] == "'":
                out.append("'")
                i += 2
                continue
            return "".join(out).rstrip(" "), s[i + 1 :]
        out.append(c)
        i += 1
    return None


def _comment_of(rest: str) -> str:
    """The comment after a value: ``[blanks] / comment``; empty if there is none."""
    r = rest.strip()
    if r.startswith("/"):
        return r[1:].strip()
    return ""


def _convert(rec: fitsio.FITSRecord) -> Any:
    """The value of a keyword card, fixing what fitsio's card parser leaves raw."""
    value = rec.get("value")
    orig = rec.get("value_orig")
    if orig is None:
        return None  # blank value field: undefined
    if isinstance(orig, str) and orig.startswith("'"):
        parsed = _parse_quoted(orig)
        if parsed is not None:
            return parsed[0]
        return value
    if isinstance(value, str) and rec.get("dtype") == "F":
        # Fortran-style exponent (1.0D+10), which Python's literal parser does not read.
        try:
            return float(value.replace("D", "E").replace("d", "e"))
        except ValueError:
            return value
    return value


def cards_to_fitshdr(cards: list[str]) -> fitsio.FITSHDR:
    """Turn a list of 80-character card images back into a :class:`fitsio.FITSHDR`.

    Each card is parsed with :class:`fitsio.FITSRecord`; on top of that:

    - long strings (``KEY = 'abc&'`` followed by ``CONTINUE  'def'`` cards) are joined into one
      value, dropping the trailing ``&`` of each continued piece; comments of the pieces are joined;
    - HIERARCH keywords keep their name without the prefix (``hdr["ESO DET NAME"]``, fitsio also
      accepts ``hdr["HIERARCH ESO DET NAME"]``);
    - a blank value field is the undefined value, ``None``;
    - quoted strings are un-escaped (``''`` → ``'``) and lose their non-significant trailing blanks;
    - COMMENT and HISTORY cards become records whose value is their text; blank-keyword cards become
      records with name ``None`` (as :func:`fitsio.read_header` represents them);
    - ``END`` is skipped; a CONTINUE card that follows no continued string is dropped with a warning.

    The records are those :func:`fitsio.read_header` would give for the same cards, so the result
    can be compared with, or written by, fitsio directly. Raises :class:`CardParseError` naming the
    first card that is not a FITS card image.
    """
    hdr = fitsio.FITSHDR()
    pending: dict[str, Any] | None = None  # long string record still open ('&' at the end)
    pending_comments: list[str] = []

    def flush() -> None:
        nonlocal pending, pending_comments
        if pending is not None:
            pending["comment"] = " ".join(c for c in pending_comments if c)
            hdr.add_record(pending)
        pending, pending_comments = None, []

    for i, card in enumerate(cards):
        if not isinstance(card, str):
            raise CardParseError(f"card {i} is a {type(card).__name__}, not a string")
        if len(card) > CARD:
            raise CardParseError(f"card {i} has {len(card)} characters (at most {CARD}): {card[:CARD]!r}...")
        if not all(32 <= ord(c) <= 126 for c in card):
            raise CardParseError(f"card {i} holds non-printable or non-ASCII characters: {card!r}")
        key = card[:8].rstrip()

        if key == "CONTINUE" and card[8:10] != "= ":
            if pending is None:
                log.warning("card %d: CONTINUE without a preceding long string, dropped: %r", i, card)
                continue
            parsed = _parse_quoted(card[8:])
            if parsed is None:
                raise CardParseError(f"card {i}: CONTINUE card without a quoted string: {card!r}")
            piece, rest = parsed
            pending["value"] = pending["value"][:-1] + piece  # drop the '&' of the previous piece
            pending_comments.append(_comment_of(rest))
            if not piece.endswith("&"):
                flush()
            continue

        flush()
        if key == "END" and not card[3:].strip():
            continue
        try:
            rec = fitsio.FITSRecord(card)
        except Exception as exc:  # fitsio raises ValueError, TypeError or its C parser's errors
            raise CardParseError(f"card {i} cannot be parsed: {exc}: {card!r}") from None

        name = rec.get("name")
        if name in ("COMMENT", "HISTORY"):
            text = card[8:].rstrip()
            hdr.add_record({"name": name, "value": text, "comment": text, "card_string": card.rstrip()})
            continue
        if name is None:  # blank keyword: commentary text
            hdr.add_record({"name": None, "value": "", "comment": card[8:].strip(), "card_string": card.rstrip()})
            continue

        value = _convert(rec)
        record = {"name": name, "value": value, "comment": rec.get("comment") or ""}
        if isinstance(value, str) and value.endswith("&") and rec.get("dtype") == "C":
            # possibly a long string; it stays '&'-terminated unless a CONTINUE card follows
            pending, pending_comments = record, [record["comment"]]
            continue
        record["card_string"] = card.rstrip()
        hdr.add_record(record)
    flush()
    return hdr


# --------------------------------------------------------------------------------------------
# Fast-path messages
# --------------------------------------------------------------------------------------------


@dataclass
class HeaderMessage:
    """One finished header received on the fast path."""

    image_name: str
    instrument: str
    version: int
    complete: bool
    hdus: list[tuple[str, fitsio.FITSHDR]]
    payload: dict[str, Any] = field(repr=False)
    envelope: Envelope | None = None
    topic: str = ""
    #: messages from the same sender lost just before this one (0 when none were lost)
    missed: int = 0

    @property
    def reasons(self) -> list[str]:
        """Why the header is incomplete (empty for a complete header)."""
        return list(self.payload.get("reasons") or [])

    @property
    def headers(self) -> list[fitsio.FITSHDR]:
        return [h for _, h in self.hdus]

    def cards(self, hdu: int | str = 0) -> list[str]:
        """The raw card images of one HDU (by index or name), as received."""
        if isinstance(hdu, str):
            for h in self.payload["hdus"]:
                if h.get("name") == hdu:
                    return list(h["cards"])
            raise KeyError(f"{self.image_name} has no HDU named {hdu!r}")
        return list(self.payload["hdus"][hdu]["cards"])


def parse_header_payload(
    payload: Any, topic: str = "", envelope: Envelope | None = None, missed: int = 0
) -> HeaderMessage:
    """Build a :class:`HeaderMessage` from a decoded ``hdr.*`` payload.

    Raises :class:`EnvelopeError` (a :class:`ValueError`) if the payload does not have the
    ``hdr`` shape, :class:`CardParseError` if a card cannot be read.
    """
    if not isinstance(payload, dict):
        raise EnvelopeError(f"{topic or 'hdr'} payload is a {type(payload).__name__}, not an object")
    hdus_raw = payload.get("hdus")
    if not isinstance(hdus_raw, list):
        raise EnvelopeError(f"{topic or 'hdr'} payload has no 'hdus' list")
    parts = topic.split(".", 2)
    image = payload.get("imageName") or (parts[2] if len(parts) == 3 else "")
    instrument = payload.get("instrument") or (parts[1] if len(parts) >= 2 else "")
    hdus: list[tuple[str, fitsio.FITSHDR]] = []
    for n, h in enumerate(hdus_raw):
        if not isinstance(h, dict) or not isinstance(h.get("cards"), list):
            raise EnvelopeError(f"{topic or 'hdr'}: HDU {n} has no 'cards' list")
        try:
            hdr = cards_to_fitshdr(h["cards"])
        except CardParseError as exc:
            raise CardParseError(f"{image} HDU {n} ({h.get('name')}): {exc}") from None
        hdus.append((str(h.get("name") or n), hdr))
    try:
        version = int(payload.get("version", 0))
    except (TypeError, ValueError):
        raise EnvelopeError(f"{topic or 'hdr'}: version {payload.get('version')!r} is not an integer") from None
    return HeaderMessage(
        image_name=str(image),
        instrument=str(instrument),
        version=version,
        complete=bool(payload.get("complete", False)),
        hdus=hdus,
        payload=payload,
        envelope=envelope,
        topic=topic,
        missed=missed,
    )


def headers(message: HeaderMessage | dict[str, Any]) -> list[fitsio.FITSHDR]:
    """The FITSHDR of every HDU, in order, from a :class:`HeaderMessage` or a raw ``hdr`` payload."""
    if isinstance(message, HeaderMessage):
        return message.headers
    return parse_header_payload(message).headers


class FastPathClient:
    """SUB client of the composer's fast path; yields :class:`HeaderMessage` objects.

    ``endpoint`` is the composer's PUB endpoint (``InstanceConfig.endpoints.composer_pub``),
    tcp:// or ipc://. With ``instrument`` only that camera's headers are received, with ``image``
    as well only that image's (every version of it). Malformed messages are logged, counted in
    :attr:`malformed` and skipped; duplicates are skipped; lost messages are counted in
    :attr:`gaps` (and in each message's ``missed``), peer restarts in :attr:`restarts`.
    """

    def __init__(
        self,
        endpoint: str,
        instrument: str | None = None,
        image: str | None = None,
        *,
        context: zmq.Context | None = None,
        rcvhwm: int = 10000,
    ):
        if image is not None and instrument is None:
            raise ValueError("FastPathClient: an image filter needs the instrument as well")
        self.endpoint = endpoint
        self.instrument = instrument
        self.image = image
        if instrument is None:
            self.prefix = HDR_PREFIX
        elif image is None:
            self.prefix = f"{HDR_PREFIX}{instrument}."
        else:
            self.prefix = f"{HDR_PREFIX}{instrument}.{image}"
        self._exact = image is not None  # 'hdr.LATISS.X' as a prefix also matches 'hdr.LATISS.X1'
        self.ctx = context or zmq.Context.instance()
        self.sock: zmq.Socket | None = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVHWM, rcvhwm)
        self.sock.setsockopt(zmq.SUBSCRIBE, self.prefix.encode())
        self.sock.connect(endpoint)
        self.tracker = GapTracker()
        self.received = 0
        self.malformed = 0

    @property
    def gaps(self) -> int:
        """Number of messages lost so far (sum of all sequence gaps)."""
        return self.tracker.gaps

    @property
    def restarts(self) -> int:
        """Number of times the publishing composer was seen to restart."""
        return self.tracker.restarts

    @property
    def duplicates(self) -> int:
        """Number of messages received twice (skipped)."""
        return self.tracker.duplicates

    def receive(self, timeout_s: float | None = None) -> HeaderMessage | None:
        """The next header, or ``None`` if none arrives within ``timeout_s`` (``None``: wait forever)."""
        if self.sock is None:
            raise RuntimeError("FastPathClient is closed")
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            if deadline is None:
                wait_ms = 500  # wake up regularly so that signals (Ctrl-C) are handled
            else:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                wait_ms = max(1, int(left * 1000))
            if not self.sock.poll(wait_ms):
                continue
            frames = self.sock.recv_multipart()
            try:
                msg = decode(frames)
            except EnvelopeError as exc:
                self.malformed += 1
                log.warning("fast path %s: malformed message dropped: %s", self.endpoint, exc)
                continue
            if self._exact and msg.topic != self.prefix:
                continue
            status = self.tracker.check(msg.envelope)
            if status.duplicate:
                continue
            if status.gap:
                log.warning("fast path %s: %d message(s) lost before %s", self.endpoint, status.gap, msg.topic)
            if status.restarted:
                log.info("fast path %s: composer restarted (%s)", self.endpoint, msg.envelope.sender)
            try:
                header = parse_header_payload(msg.payload, msg.topic, msg.envelope, status.gap)
            except ValueError as exc:  # EnvelopeError and CardParseError
                self.malformed += 1
                log.warning("fast path %s: unreadable header dropped: %s", self.endpoint, exc)
                continue
            self.received += 1
            return header

    def __iter__(self) -> Iterator[HeaderMessage]:
        """Every header as it arrives, forever (until the client is closed)."""
        while self.sock is not None:
            msg = self.receive(None)
            if msg is not None:
                yield msg

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close(linger=0)
            self.sock = None

    def __enter__(self) -> "FastPathClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class SensorHeader:
    """One sensor's own header (primary merged with its sensor HDU) and its segment headers."""

    image_name: str
    sensor: str
    version: int
    header: fitsio.FITSHDR
    segments: list[tuple[str, fitsio.FITSHDR]]
    cards: list[str]


class SensorHeaderError(RuntimeError):
    """The composer could not serve the requested sensor header (unknown image or sensor)."""


class SensorHeaderClient:
    """Asks an instance's composer (ROUTER socket) for the header of one sensor of a recent image.

    LSSTCam files hold one HDU per sensor; forwarders writing a single sensor's raw, calibrated or
    crosstalk-corrected file ask for that sensor's merged header and segment headers here.
    """

    def __init__(self, endpoint: str, timeout_s: float = 5.0):
        from protocols.envelope import Sender, sender_id

        self.endpoint = endpoint
        self.timeout_ms = int(timeout_s * 1000)
        self.sender = Sender(sender_id("sensor-client", "any"))
        self.sock = zmq.Context.instance().socket(zmq.REQ)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)

    def get(self, image_name: str, sensor: str) -> SensorHeader:
        req = SensorRequest(image_name, sensor)
        self.sock.send_multipart(self.sender.frames(req.topic(), req.encode()))
        if not self.sock.poll(self.timeout_ms):
            self.sock.close()
            self.sock = zmq.Context.instance().socket(zmq.REQ)
            self.sock.setsockopt(zmq.LINGER, 0)
            self.sock.connect(self.endpoint)
            raise SensorHeaderError(f"no answer from the composer at {self.endpoint}")
        payload = decode(self.sock.recv_multipart()).payload
        if "error" in payload:
            raise SensorHeaderError(payload["error"])
        return SensorHeader(
            payload["imageName"],
            payload["sensor"],
            int(payload.get("version", 1)),
            cards_to_fitshdr(payload["cards"]),
            [(s["name"], cards_to_fitshdr(s["cards"])) for s in payload["segments"]],
            payload["cards"],
        )

    def close(self) -> None:
        self.sock.close()
