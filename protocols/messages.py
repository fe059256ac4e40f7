"""Payloads carried in envelopes, and the client side of the cache's request protocol.

- ``sal.<Component>.<topic>``: a SAL sample ``{component, topic, salIndex, sndStamp, srcStamp,
  rcvStamp, data}`` (listener PUB).
- ``hdr.<instrument>.<imageName>``: a finished header ``{imageName, instrument, dayobs, version,
  complete, reasons, hdus: [{name, cards: [80-char card images]}], provenance}`` (composer PUB
  fast path and PUSH to the publisher).
- ``ctl.announced.<imageName>``: ``{imageName, version, path, url, md5, byteSize, complete,
  announced, annex, files}`` (publisher PUB, after the DDS announcement: its annex-index entry).
- ``ctl.rejected.<imageName>``: ``{imageName, version, reason, path}`` (publisher PUB, header set aside).
- ``ctl.skipped.<instrument>.<imageName>``: ``{imageName, reason[, duplicate]}`` (composer PUB).
- ``ctl.fault.<instrument>``: ``{code, report}``; ``ctl.warning.<instrument>``: ``{code, report,
  active}`` (composer and publisher PUB, read by hs-csc; see :mod:`protocols.csc_state`).
- Requests (REQ to a ROUTER, topic ``ctl.request.<op>``): the cache's ``collect``, ``range``,
  ``latest`` and ``status``; the composer's ``sensor``, ``recompose`` and ``status``; the
  listener's ``replay`` and ``refill``. Replies (topic ``ctl.reply.<op>``, sensor headers on
  ``hdr.<instrument>.sensor``, refusals ``{error}``): :class:`CollectReply`, :class:`RangeReply`,
  :class:`LatestReply`, :class:`CacheStatus`, :class:`ReplayReply`, :class:`RefillReply`,
  :class:`RecomposeReply`, :class:`ComposerStatus`, :class:`SensorReply`, :class:`ErrorReply`.
- ``ctl.csc.<instrument>``: :class:`CscState` (hs-csc PUB and REP answer).
- ``ctl.status.<role>.<instrument>``: :class:`ProcessStatus` ``{counts[, open, composed, pending,
  unsynced, bad]}`` (listener, composer and publisher PUB).
- ``ctl.behind.<instrument>``: :class:`BusBehind` ``{t0, t1, topics}`` (listener PUB, in its sample
  stream: a camera event published while other topics were behind it; read by the cache).

Every request, reply and control message is a dataclass here with one ``encode`` (the JSON
payload, the same keys as ever) and one ``decode`` that validates and raises
:class:`EnvelopeError` with the reason; senders and receivers use these instead of dictionaries
written by hand (:meth:`CacheClient.ask` decodes the reply it expects).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar, Union

import zmq

from protocols.envelope import EnvelopeError, Sender, decode

#: Topics named in one ctl.behind message (the rest are counted by its span alone).
MAX_BEHIND_TOPICS = 100


class UnknownOp(EnvelopeError):
    """A request whose ``op`` the receiver does not serve."""


def _get(payload: dict[str, Any], key: str) -> Any:
    try:
        return payload[key]
    except KeyError as exc:
        raise EnvelopeError(str(exc)) from None


def _float(x: Any) -> float:
    try:
        return float(x)
    except (TypeError, ValueError, OverflowError) as exc:
        raise EnvelopeError(str(exc)) from None


def _text(x: Any, what: str) -> str:
    if not isinstance(x, str):
        raise EnvelopeError(f"{what} is not text: {type(x).__name__}")
    return x


def _texts(x: Any, what: str) -> list[str]:
    if not isinstance(x, list) or not all(isinstance(v, str) for v in x):
        raise EnvelopeError(f"{what} is not a list of text")
    return x


def _object(x: Any, what: str) -> dict[str, Any]:
    if not isinstance(x, dict):
        raise EnvelopeError(f"{what} is not an object")
    return x


@dataclass
class After:
    """Answer only once the listener's message ``seq`` of ``sender`` has reached the cache."""

    sender: str
    seq: int

    def encode(self) -> dict[str, Any]:
        return {"sender": self.sender, "seq": self.seq}

    @classmethod
    def decode(cls, x: Any) -> After | None:
        if not x:
            return None
        x = _object(x, "after")
        seq = x.get("seq", 0)
        if isinstance(seq, bool) or not isinstance(seq, (int, float)) or not math.isfinite(seq):
            raise EnvelopeError(f"after.seq is not a sequence number: {seq!r}")
        return cls(str(x.get("sender", "")), int(seq))


@dataclass
class Request:
    """A request to a ROUTER; ``after`` is read by the cache alone."""

    op: ClassVar[str] = ""
    after: After | None = field(default=None, kw_only=True)

    def topic(self) -> str:
        return f"ctl.request.{self.op}"

    def _body(self) -> dict[str, Any]:
        return {}

    def encode(self) -> dict[str, Any]:
        body = {"op": self.op, **self._body()}
        if self.after is not None:
            body["after"] = self.after.encode()
        return body

    @classmethod
    def _fields(cls, payload: dict[str, Any]) -> dict[str, Any]:
        return {}

    @classmethod
    def decode(cls, payload: Any) -> Request:
        payload = _object(payload, "request payload")
        return cls(**cls._fields(payload), after=After.decode(payload.get("after")))


@dataclass
class Window:
    """Every sample of ``key`` between ``t0`` and ``t1`` (a monitored topic)."""

    key: str
    t0: float
    t1: float

    def encode(self) -> dict[str, Any]:
        return {"key": self.key, "t0": self.t0, "t1": self.t1}

    @classmethod
    def decode(cls, x: Any) -> Window:
        x = _object(x, "window")
        return cls(_text(_get(x, "key"), "window key"), _float(_get(x, "t0")), _float(_get(x, "t1")))


@dataclass
class CollectRequest(Request):
    """One header's telemetry: per collection point (TAI time) its topics' snapshots, the monitored
    topics' windows, and the fields each topic is read for."""

    op: ClassVar[str] = "collect"
    points: dict[str, float]
    topics: dict[str, list[str]]
    windows: list[Window] = field(default_factory=list)
    fields: dict[str, list[str]] = field(default_factory=dict)

    def _body(self) -> dict[str, Any]:
        return {"points": self.points, "topics": self.topics, "windows": [w.encode() for w in self.windows],
                "fields": self.fields}  # fmt: skip

    @classmethod
    def _fields(cls, payload: dict[str, Any]) -> dict[str, Any]:
        points = {str(k): _float(v) for k, v in _object(payload.get("points", {}), "points").items()}
        topics = {str(k): _texts(v, f"topics of {k}") for k, v in _object(payload.get("topics", {}), "topics").items()}
        windows = payload.get("windows") or []
        if not isinstance(windows, list):
            raise EnvelopeError("windows is not a list")
        fields = {str(k): _texts(v, f"fields of {k}") for k, v in _object(payload.get("fields") or {}, "fields").items()}
        return {"points": points, "topics": topics, "windows": [Window.decode(w) for w in windows], "fields": fields}


@dataclass
class RangeRequest(Request):
    """Every sample of one topic key stamped between ``t0`` and ``t1``."""

    op: ClassVar[str] = "range"
    key: str
    t0: float
    t1: float

    def _body(self) -> dict[str, Any]:
        return {"key": self.key, "t0": self.t0, "t1": self.t1}

    @classmethod
    def _fields(cls, payload: dict[str, Any]) -> dict[str, Any]:
        return {"key": _text(_get(payload, "key"), "key"), "t0": _float(_get(payload, "t0")), "t1": _float(_get(payload, "t1"))}


@dataclass
class LatestRequest(Request):
    """The latest sample of each topic key."""

    op: ClassVar[str] = "latest"
    keys: list[str] = field(default_factory=list)

    def _body(self) -> dict[str, Any]:
        return {"keys": self.keys}

    @classmethod
    def _fields(cls, payload: dict[str, Any]) -> dict[str, Any]:
        return {"keys": _texts(payload.get("keys", []), "keys")}


@dataclass
class StatusRequest(Request):
    """A process's counts and state (cache and composer)."""

    op: ClassVar[str] = "status"


@dataclass
class ReplayRequest(Request):
    """The listener's messages after sequence number ``since`` still in its ring."""

    op: ClassVar[str] = "replay"
    since: int

    def _body(self) -> dict[str, Any]:
        return {"since": self.since}

    @classmethod
    def _fields(cls, payload: dict[str, Any]) -> dict[str, Any]:
        since = _get(payload, "since")
        try:
            return {"since": int(since)}
        except (TypeError, ValueError, OverflowError) as exc:
            raise EnvelopeError(str(exc)) from None


@dataclass
class SensorRequest(Request):
    """One sensor's merged header and segment headers of a recent image (composer)."""

    op: ClassVar[str] = "sensor"
    imageName: str
    sensor: str

    def _body(self) -> dict[str, Any]:
        return {"imageName": self.imageName, "sensor": self.sensor}

    @classmethod
    def _fields(cls, payload: dict[str, Any]) -> dict[str, Any]:
        return {"imageName": _text(_get(payload, "imageName"), "imageName"), "sensor": _text(_get(payload, "sensor"), "sensor")}


@dataclass
class RecomposeRequest(Request):
    """Compose these images again from their events (catch-up)."""

    op: ClassVar[str] = "recompose"
    imageNames: list[str]

    def _body(self) -> dict[str, Any]:
        return {"imageNames": self.imageNames}

    @classmethod
    def _fields(cls, payload: dict[str, Any]) -> dict[str, Any]:
        return {"imageNames": _texts(_get(payload, "imageNames"), "imageNames")}


@dataclass
class RefillRequest(Request):
    """Have the listener publish ``t0``..``t1`` again from the Kafka log (hs-catchup refill)."""

    op: ClassVar[str] = "refill"
    t0: float
    t1: float

    def _body(self) -> dict[str, Any]:
        return {"t0": self.t0, "t1": self.t1}

    @classmethod
    def _fields(cls, payload: dict[str, Any]) -> dict[str, Any]:
        return {"t0": _float(_get(payload, "t0")), "t1": _float(_get(payload, "t1"))}


AnyRequest = Union[CollectRequest, RangeRequest, LatestRequest, StatusRequest, ReplayRequest, RefillRequest, SensorRequest, RecomposeRequest]
CACHE_REQUESTS: tuple[type[Request], ...] = (CollectRequest, RangeRequest, LatestRequest, StatusRequest)
COMPOSER_REQUESTS: tuple[type[Request], ...] = (SensorRequest, RecomposeRequest, StatusRequest)


def decode_request(payload: Any, served: tuple[type[Request], ...], default_op: str | None = None) -> Any:
    """The typed request of a payload, among those this receiver ``served``; :class:`UnknownOp`
    for another op, :class:`EnvelopeError` for a malformed one."""
    payload = _object(payload, "request payload")
    op = payload.get("op", default_op)
    for kind in served:
        if kind.op == op:
            return kind.decode(payload)
    raise UnknownOp(f"unknown op {op!r}")


@dataclass
class Acknowledgement:
    """What a receiver of ``ctl.announced`` or ``ctl.rejected`` needs: the header is the
    publisher's now (announced, or set aside and kept)."""

    imageName: str
    version: int

    @classmethod
    def decode(cls, payload: Any) -> Acknowledgement:
        payload = _object(payload, "acknowledgement")
        version = _get(payload, "version")
        if isinstance(version, bool) or not isinstance(version, (int, float)) or not math.isfinite(version):
            raise EnvelopeError(f"version is not a number: {version!r}")
        return cls(_text(_get(payload, "imageName"), "imageName"), int(version))


@dataclass
class Rejected:
    """``ctl.rejected``: a header the publisher set aside (kept in ``path``) and why."""

    imageName: Any  # as the header said, even when it is not a valid name
    version: Any
    reason: str
    path: str

    def encode(self) -> dict[str, Any]:
        return {"imageName": self.imageName, "version": self.version, "reason": self.reason, "path": self.path}


# -- Replies ------------------------------------------------------------------------------------
# What a ROUTER answers a request with (topic ``ctl.reply.<op>``, the composer's sensor headers on
# ``hdr.<instrument>.sensor``): one dataclass each, ``encode`` the payload as it always was, and a
# ``decode`` that validates it (an answer is input from another process like any other).


def _int(x: Any, what: str) -> int:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        raise EnvelopeError(f"{what} is not a number: {x!r:.40}")
    return int(x)


def _list(x: Any, what: str) -> list[Any]:
    if not isinstance(x, list):
        raise EnvelopeError(f"{what} is not a list")
    return x


def _spans(x: Any, what: str) -> list[list[float]]:
    """``[[t0, t1], ...]`` (TAI spans)."""
    return [[_float(v) for v in _list(span, what)] for span in _list(x, what)]


def _counts(x: Any, what: str) -> dict[str, int]:
    return {str(k): _int(v, f"{what} {k}") for k, v in _object(x, what).items()}


@dataclass
class Reply:
    """An answer to a :class:`Request`, on ``ctl.reply.<op>``."""

    op: ClassVar[str] = ""

    def topic(self) -> str:
        return f"ctl.reply.{self.op}"

    def encode(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def decode(cls, payload: Any) -> Any:
        raise NotImplementedError


@dataclass
class ErrorReply(Reply):
    """A request refused, and why (``ctl.reply.error``, or the request's own reply topic when its
    op is unknown or it failed once read)."""

    op: ClassVar[str] = "error"
    error: str

    def encode(self) -> dict[str, Any]:
        return {"error": self.error}

    @classmethod
    def decode(cls, payload: Any) -> ErrorReply:
        return cls(str(_get(_object(payload, "error reply"), "error")))


@dataclass
class CollectReply(Reply):
    """The cache's answer to :class:`CollectRequest`: per point the topics' snapshots (a sample or
    None), per monitored topic its window's samples, whether the cache had caught up with the
    listener, and the spans the bus was not observed near the points (None: not said, a request
    without points)."""

    op: ClassVar[str] = "collect"
    snapshots: dict[str, dict[str, Any]]
    windows: dict[str, list[Any]]
    caught_up: bool = True
    outages: list[list[float]] | None = None

    def encode(self) -> dict[str, Any]:
        body: dict[str, Any] = {"snapshots": self.snapshots, "windows": self.windows, "caught_up": self.caught_up}
        if self.outages is not None:
            body["outages"] = self.outages
        return body

    @classmethod
    def decode(cls, payload: Any) -> CollectReply:
        p = _object(payload, "collect reply")
        snapshots = {str(k): _object(v, f"snapshots of {k}") for k, v in _object(p.get("snapshots", {}), "snapshots").items()}
        windows = {str(k): _list(v, f"window of {k}") for k, v in _object(p.get("windows", {}), "windows").items()}
        outages = _spans(p["outages"], "outages") if "outages" in p else None
        return cls(snapshots, windows, p.get("caught_up", True) is not False, outages)


@dataclass
class RangeReply(Reply):
    """Every sample of one topic key between two times (the cache)."""

    op: ClassVar[str] = "range"
    samples: list[Any]

    def encode(self) -> dict[str, Any]:
        return {"samples": self.samples}

    @classmethod
    def decode(cls, payload: Any) -> RangeReply:
        return cls(_list(_object(payload, "range reply").get("samples", []), "samples"))


@dataclass
class LatestReply(Reply):
    """The latest sample of each topic key asked for (None: none kept)."""

    op: ClassVar[str] = "latest"
    samples: dict[str, Any]

    def encode(self) -> dict[str, Any]:
        return {"samples": self.samples}

    @classmethod
    def decode(cls, payload: Any) -> LatestReply:
        return cls(_object(_object(payload, "latest reply").get("samples", {}), "samples"))


@dataclass
class CacheStatus(Reply):
    """The cache's outages, counts and samples kept per topic key."""

    op: ClassVar[str] = "status"
    outages: list[list[float]]
    counts: dict[str, int]
    topics: dict[str, int]

    def encode(self) -> dict[str, Any]:
        return {"outages": self.outages, "counts": self.counts, "topics": self.topics}

    @classmethod
    def decode(cls, payload: Any) -> CacheStatus:
        p = _object(payload, "cache status")
        return cls(_spans(p.get("outages", []), "outages"), _counts(p.get("counts", {}), "counts"), _counts(p.get("topics", {}), "topics"))


@dataclass
class ReplayReply(Reply):
    """The listener's messages after the ``since`` asked for still in its ring, as ``[topic, seq,
    base64 of the SAL record]``; ``oldest`` is the first sequence number it still holds."""

    op: ClassVar[str] = "replay"
    sender: str
    oldest: int
    messages: list[tuple[str, int, str]]

    def encode(self) -> dict[str, Any]:
        return {"sender": self.sender, "oldest": self.oldest, "messages": [list(m) for m in self.messages]}

    @classmethod
    def decode(cls, payload: Any) -> ReplayReply:
        p = _object(payload, "replay reply")
        messages = []
        for m in _list(p.get("messages", []), "messages"):
            if not isinstance(m, list) or len(m) != 3:
                raise EnvelopeError("a replayed message is not [topic, seq, record]")
            messages.append((_text(m[0], "replayed topic"), _int(m[1], "replayed seq"), _text(m[2], "replayed record")))
        return cls(_text(p.get("sender", ""), "sender"), _int(p.get("oldest", 0), "oldest"), messages)


@dataclass
class RefillReply(Reply):
    """How many samples the Kafka listener published again from the log."""

    op: ClassVar[str] = "refill"
    published: int

    def encode(self) -> dict[str, Any]:
        return {"published": self.published}

    @classmethod
    def decode(cls, payload: Any) -> RefillReply:
        return cls(_int(_object(payload, "refill reply").get("published", 0), "published"))


@dataclass
class ComposerStatus(Reply):
    """The composer's counts, open exposures, images composed (name -> [version, complete]) and
    headers the publisher has not acknowledged yet."""

    op: ClassVar[str] = "status"
    counts: dict[str, int]
    open: list[str]
    done: dict[str, list[Any]]
    unacked: list[str]

    def encode(self) -> dict[str, Any]:
        return {"counts": self.counts, "open": self.open, "done": self.done, "unacked": self.unacked}

    @classmethod
    def decode(cls, payload: Any) -> ComposerStatus:
        p = _object(payload, "composer status")
        done = {str(k): _list(v, f"done {k}") for k, v in _object(p.get("done", {}), "done").items()}
        return cls(_counts(p.get("counts", {}), "counts"), _texts(p.get("open", []), "open"), done, _texts(p.get("unacked", []), "unacked"))


@dataclass
class Recomposed:
    """One image of a :class:`RecomposeRequest`: the version composed, or why it was not."""

    imageName: str
    version: int | None = None
    complete: bool | None = None
    error: str | None = None

    def encode(self) -> dict[str, Any]:
        if self.error is not None:
            return {"imageName": self.imageName, "error": self.error}
        return {"imageName": self.imageName, "version": self.version, "complete": self.complete}

    @classmethod
    def decode(cls, x: Any) -> Recomposed:
        x = _object(x, "recompose result")
        name = _text(_get(x, "imageName"), "imageName")
        if "error" in x:
            return cls(name, error=str(x["error"]))
        return cls(name, _int(_get(x, "version"), "version"), bool(x.get("complete")))


@dataclass
class RecomposeReply(Reply):
    op: ClassVar[str] = "recompose"
    results: list[Recomposed]

    def encode(self) -> dict[str, Any]:
        return {"results": [r.encode() for r in self.results]}

    @classmethod
    def decode(cls, payload: Any) -> RecomposeReply:
        return cls([Recomposed.decode(r) for r in _list(_object(payload, "recompose reply").get("results", []), "results")])


@dataclass
class SensorReply(Reply):
    """One sensor's header of a recent image: primary cards merged with the sensor's, and its
    segment headers (``[{name, cards}]``); sent on ``hdr.<instrument>.sensor``."""

    op: ClassVar[str] = "sensor"
    sensor: str
    cards: list[str]
    segments: list[dict[str, Any]]
    imageName: str
    version: int

    def encode(self) -> dict[str, Any]:
        return {"sensor": self.sensor, "cards": self.cards, "segments": self.segments, "imageName": self.imageName,
                "version": self.version}  # fmt: skip

    @classmethod
    def decode(cls, payload: Any) -> SensorReply:
        p = _object(payload, "sensor reply")
        segments = [_object(s, "segment") for s in _list(p.get("segments", []), "segments")]
        return cls(_text(_get(p, "sensor"), "sensor"), _texts(_get(p, "cards"), "cards"), segments,
                   _text(_get(p, "imageName"), "imageName"), _int(_get(p, "version"), "version"))  # fmt: skip


@dataclass
class Announced:
    """``ctl.announced``: a header written to the annex and announced, sent as the publisher records
    it in the annex index (``announced``: its TAI, None until the announcement; ``files``: every
    format written, by format). The composer reads it as an :class:`Acknowledgement`."""

    imageName: str
    version: int
    path: str
    url: str
    md5: str
    byteSize: int
    complete: bool = True
    announced: float | None = None
    annex: str = "local"
    files: dict[str, dict[str, Any]] = field(default_factory=dict)

    def encode(self) -> dict[str, Any]:
        return {"imageName": self.imageName, "version": self.version, "path": self.path, "url": self.url,
                "md5": self.md5, "byteSize": self.byteSize, "complete": self.complete, "announced": self.announced,
                "annex": self.annex, "files": self.files}  # fmt: skip

    @classmethod
    def decode(cls, payload: Any) -> Announced:
        p = _object(payload, "ctl.announced payload")
        announced = p.get("announced")
        return cls(
            _text(_get(p, "imageName"), "imageName"), _int(_get(p, "version"), "version"), _text(_get(p, "path"), "path"),
            _text(_get(p, "url"), "url"), _text(_get(p, "md5"), "md5"), _int(_get(p, "byteSize"), "byteSize"),
            p.get("complete", True) is not False, None if announced is None else _float(announced),
            _text(p.get("annex", "local"), "annex"), _object(p.get("files", {}), "files"),
        )  # fmt: skip


@dataclass
class CscState:
    """The CSC's state message (``ctl.csc.<instrument>``, PUB and the REP answer; see
    :mod:`protocols.csc_state`): summary state by name and code, the CSC's name and the operator's
    header-card overrides ``{version, cards: {KEY: {value, comment}}, setAt, by}``."""

    state: str
    stateCode: int
    csc: str = ""
    overrides: dict[str, Any] = field(default_factory=dict)

    def encode(self) -> dict[str, Any]:
        return {"state": self.state, "stateCode": self.stateCode, "csc": self.csc, "overrides": self.overrides}

    @classmethod
    def decode(cls, payload: Any) -> CscState:
        p = _object(payload, "state message")
        if not isinstance(p.get("state"), str) or "stateCode" not in p:
            raise EnvelopeError(f"state message without state/stateCode: {str(p)[:80]}")
        overrides = _object(p.get("overrides", {}), "overrides")
        _object(overrides.get("cards", {}), "override cards")
        _int(overrides.get("version", 0), "overrides version")
        return cls(p["state"], _int(p["stateCode"], "stateCode"), str(p.get("csc", "")), overrides)


def _code(payload: dict[str, Any]) -> int:
    code = _get(payload, "code")
    if not isinstance(code, int) or isinstance(code, bool):
        raise EnvelopeError(f"code {code!r} is not an integer")
    return code


@dataclass
class Fault:
    """``ctl.fault``: a condition that stops composition; the CSC goes to FAULT with ``code``."""

    code: int
    report: str

    def encode(self) -> dict[str, Any]:
        return {"code": int(self.code), "report": str(self.report)}

    @classmethod
    def decode(cls, payload: Any) -> Fault:
        payload = _object(payload, "fault payload")
        return cls(_code(payload), str(_get(payload, "report")))


@dataclass
class OperatorWarning:
    """``ctl.warning``: a condition that costs no header but needs an operator; ``active=False``
    says the condition of ``code`` is over."""

    code: int
    report: str
    active: bool = True

    def encode(self) -> dict[str, Any]:
        return {"code": int(self.code), "report": str(self.report), "active": bool(self.active)}

    @classmethod
    def decode(cls, payload: Any) -> OperatorWarning:
        payload = _object(payload, "warning payload")
        return cls(_code(payload), str(_get(payload, "report")), payload.get("active") is not False)


@dataclass
class Skipped:
    """``ctl.skipped``: an exposure without a header of its own, and why."""

    imageName: str
    reason: str
    duplicate: bool = False  # a second exposure under an imageName already used

    def encode(self) -> dict[str, Any]:
        body: dict[str, Any] = {"imageName": self.imageName, "reason": self.reason}
        if self.duplicate:
            body["duplicate"] = True
        return body

    @classmethod
    def decode(cls, payload: Any) -> Skipped:
        payload = _object(payload, "ctl.skipped payload")
        return cls(_text(_get(payload, "imageName"), "imageName"), _text(_get(payload, "reason"), "reason"),
                   payload.get("duplicate") is True)  # fmt: skip


@dataclass
class ProcessStatus:
    """``ctl.status.<role>.<instrument>``: a process's counters, published every second or ten for
    hs-tap and monitors, with what its role adds: the composer its open exposures and how many it
    composed, the publisher its pending headers (kept for a retry) and its unsynced ones (announced,
    their fsyncs still running: a number that stays up is a disk that hangs), the listener its bad
    records by reason."""

    counts: dict[str, int]
    open: list[str] | None = None
    composed: int | None = None
    pending: int | None = None
    bad: dict[str, int] | None = None
    unsynced: int | None = None

    def encode(self) -> dict[str, Any]:
        body: dict[str, Any] = {"counts": self.counts}
        for name in ("open", "composed", "pending", "unsynced", "bad"):
            if getattr(self, name) is not None:
                body[name] = getattr(self, name)
        return body

    @classmethod
    def decode(cls, payload: Any) -> ProcessStatus:
        p = _object(payload, "ctl.status payload")
        return cls(
            _counts(_get(p, "counts"), "counts"),
            _texts(p["open"], "open") if "open" in p else None,
            _int(p["composed"], "composed") if "composed" in p else None,
            _int(p["pending"], "pending") if "pending" in p else None,
            _counts(p["bad"], "bad") if "bad" in p else None,
            _int(p["unsynced"], "unsynced") if "unsynced" in p else None,
        )


@dataclass
class BusBehind:
    """``ctl.behind.<instrument>``: a camera event published while other topics were still behind
    it on the bus (on Kafka, a backlog the listener could not read within its catch-up): their
    samples stamped between ``t0`` and ``t1`` (TAI) may reach the cache after the header is
    composed. Sent on the listener's sample stream, in order with the samples; the cache records
    the span as one the bus was not observed in, so the header says its telemetry may be missing."""

    t0: float
    t1: float
    topics: list[str]

    def encode(self) -> dict[str, Any]:
        return {"t0": self.t0, "t1": self.t1, "topics": self.topics}

    @classmethod
    def decode(cls, payload: Any) -> BusBehind:
        p = _object(payload, "ctl.behind payload")
        t0, t1 = _float(_get(p, "t0")), _float(_get(p, "t1"))
        if not (math.isfinite(t0) and math.isfinite(t1) and 0 < t0 <= t1):
            raise EnvelopeError(f"ctl.behind span {t0!r} .. {t1!r} is not a span of TAI times")
        return cls(t0, t1, _texts(p.get("topics", []), "topics")[:MAX_BEHIND_TOPICS])


def topic_key(component: str, topic: str, sal_index: int = 0) -> str:
    """Key of one topic instance in the cache: ``Component.topic:salIndex``."""
    return f"{component}.{topic}:{sal_index}"


R = TypeVar("R", bound=Reply)


class CacheUnavailable(RuntimeError):
    """The cache did not answer in time; the caller decides whether to retry or go incomplete."""


class CacheClient:
    """REQ client with a timeout; the socket is rebuilt after a timeout (lazy-pirate pattern).

    Used for the cache's ROUTER and, by the cache, for the listener's replay ROUTER (``peer``).
    """

    def __init__(self, endpoint: str, sender: Sender, timeout_s: float = 2.0, peer: str = "cache"):
        self.endpoint = endpoint
        self.peer = peer
        self.sender = sender
        self.timeout_ms = int(timeout_s * 1000)
        self.ctx = zmq.Context.instance()
        self.sock: zmq.Socket | None = None

    def _socket(self) -> zmq.Socket:
        if self.sock is None:
            self.sock = self.ctx.socket(zmq.REQ)
            self.sock.setsockopt(zmq.LINGER, 0)
            self.sock.connect(self.endpoint)
        return self.sock

    def request(self, req: Request | dict[str, Any], timeout_ms: int | None = None) -> dict[str, Any]:
        sock = self._socket()
        if isinstance(req, Request):
            sock.send_multipart(self.sender.frames(req.topic(), req.encode()))
        else:  # a payload as a test or a foreign tool writes it
            sock.send_multipart(self.sender.frames(f"ctl.request.{req.get('op')}", req))
        if not sock.poll(timeout_ms or self.timeout_ms):
            sock.close()
            self.sock = None
            raise CacheUnavailable(f"no answer from the {self.peer} at {self.endpoint}")
        try:
            msg = decode(sock.recv_multipart())
        except EnvelopeError as exc:
            raise CacheUnavailable(f"unreadable answer from the {self.peer}: {exc}") from None
        if not isinstance(msg.payload, dict):
            raise CacheUnavailable(f"{self.peer} answer is not an object")
        if "error" in msg.payload:
            raise CacheUnavailable(f"{self.peer} refused the request: {ErrorReply.decode(msg.payload).error}")
        return msg.payload

    def ask(self, req: Request, reply: type[R], timeout_ms: int | None = None) -> R:
        """:meth:`request`, the answer decoded as ``reply``: one that is not is
        :class:`CacheUnavailable` (unreadable), like no answer."""
        payload = self.request(req, timeout_ms)
        try:
            return reply.decode(payload)
        except EnvelopeError as exc:
            raise CacheUnavailable(f"unreadable answer from the {self.peer}: {exc}") from None

    def close(self, linger: int = 0) -> None:
        if self.sock is not None:
            self.sock.close(linger=linger)
            self.sock = None
