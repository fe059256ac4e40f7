"""The ZeroMQ multipart envelope every Header Service socket speaks (format version 1).

Frame 0 is a topic usable as a SUB prefix (``sal.<Component>.<topic>``, ``hdr.<instrument>.<image>``,
``ctl.<...>``); frame 1 the envelope (JSON: format version, per-sender sequence number, TAI send
time, sender identity including its incarnation); frame 2 the payload: JSON, except on ``sal.*``
topics, whose payload is the SAL record of :mod:`protocols.salrecord` (the sample's own CDR bytes
behind a fixed header) or a batch of them (decoded as the list of its samples). Sequence numbers
let receivers detect gaps and restarted peers, as in the ZeroMQ guide's clone pattern.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from protocols import salrecord
from protocols.timescale import tai_now

FORMAT_VERSION = 1
#: Limits every receiver applies before it reads a frame (a frame from outside is hostile until
#: checked): the largest legitimate payload is a listener replay (~64 MB of base64), headers are
#: under 1 MB, and no message of ours nests deeper than a few levels.
MAX_TOPIC_BYTES = 1024
MAX_ENVELOPE_BYTES = 4096
MAX_PAYLOAD_BYTES = 256 * 1024 * 1024
MAX_JSON_DEPTH = 64


class EnvelopeError(ValueError):
    """A message that does not follow the envelope format; the receiver logs and counts it."""


def _nested_deeper(obj: Any, limit: int) -> bool:
    """True if a decoded JSON value nests lists or objects more than ``limit`` levels.

    Iterative (a hostile value cannot exhaust the stack here), and cheap on the largest real
    payloads: a list of strings only (a header's card images) is recognised whole, in C."""
    if type(obj) is not list and type(obj) is not dict:
        return False
    stack: list[tuple[Any, int]] = [(obj, 1)]  # containers and their nesting level
    join = "".join
    while stack:
        node, level = stack.pop()
        if level > limit:
            return True
        if type(node) is list:
            try:
                join(node)
                continue  # strings only: a leaf
            except TypeError:
                values: Any = node
        else:
            values = node.values()
        for v in values:
            if type(v) is list or type(v) is dict:
                stack.append((v, level + 1))
    return False


def loads_bounded(raw: bytes | str, what: str, max_bytes: int = MAX_PAYLOAD_BYTES, **kwargs: Any) -> Any:
    """``json.loads`` for input from outside: size and nesting capped, every failure an
    :class:`EnvelopeError` naming ``what`` (never a RecursionError or MemoryError escaping)."""
    if len(raw) > max_bytes:
        raise EnvelopeError(f"{what} of {len(raw)} bytes is larger than {max_bytes}")
    try:
        value = json.loads(raw, **kwargs)
    except RecursionError:
        raise EnvelopeError(f"{what} nests deeper than {MAX_JSON_DEPTH} levels") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:  # a hook's own ValueError is the caller's
        raise EnvelopeError(f"{what} is not JSON: {str(exc)[:200]}") from None
    if _nested_deeper(value, MAX_JSON_DEPTH):
        raise EnvelopeError(f"{what} nests deeper than {MAX_JSON_DEPTH} levels")
    return value


def check_frames(frames: list[bytes]) -> None:
    """The frame count and sizes of a message, before anything reads it."""
    if len(frames) != 3:
        raise EnvelopeError(f"expected 3 frames (topic, envelope, payload), got {len(frames)}")
    for frame, limit, name in zip(frames, (MAX_TOPIC_BYTES, MAX_ENVELOPE_BYTES, MAX_PAYLOAD_BYTES), ("topic", "envelope", "payload")):
        if len(frame) > limit:
            raise EnvelopeError(f"{name} frame of {len(frame)} bytes is larger than {limit}")


@dataclass(frozen=True)
class Envelope:
    version: int
    seq: int
    sent: float
    sender: str

    def encode(self) -> bytes:
        return json.dumps({"v": self.version, "seq": self.seq, "t": self.sent, "sender": self.sender}).encode()

    @classmethod
    def decode(cls, raw: bytes) -> "Envelope":
        try:
            d = loads_bounded(raw, "envelope", MAX_ENVELOPE_BYTES)
            env = cls(int(d["v"]), int(d["seq"]), float(d["t"]), str(d["sender"]))
        except (ValueError, KeyError, TypeError, OverflowError) as exc:  # EnvelopeError included
            raise EnvelopeError(f"malformed envelope frame: {exc}: {raw[:80]!r}") from None
        if env.version != FORMAT_VERSION:
            raise EnvelopeError(f"unsupported envelope version {env.version} (this build speaks {FORMAT_VERSION})")
        return env


@dataclass(frozen=True)
class Message:
    topic: str
    envelope: Envelope
    payload: Any


def sender_id(role: str, instrument: str) -> str:
    """Identity of one incarnation of a process: role, instrument, host, pid and start time."""
    return f"{role}.{instrument}@{socket.gethostname()}:{os.getpid()}:{time.time():.3f}"


#: Suffix of a sender that resumes from a durable log (a Kafka listener's committed offsets): its
#: restart is not a gap in what the bus delivered.
RESUMING = "+resume"


def resumes(sender: str) -> bool:
    """True for a sender whose restart loses nothing (see :data:`RESUMING`)."""
    return sender.endswith(RESUMING)


class Sender:
    """Numbers and wraps outgoing messages for one socket."""

    def __init__(self, sender: str, first_seq: int = 1):
        self.sender = sender
        self.seq = first_seq - 1
        self._suffix = f',"sender":{json.dumps(sender)}}}'

    def envelope(self) -> bytes:
        """The next envelope frame (the same JSON as :meth:`Envelope.encode`, built cheaply:
        the listener numbers thousands of samples a second)."""
        self.seq += 1
        return f'{{"v":{FORMAT_VERSION},"seq":{self.seq},"t":{tai_now()!r}{self._suffix}'.encode()

    def frames(self, topic: str, payload: Any) -> list[bytes]:
        """Topic, envelope and payload frames; ``payload`` is JSON-encoded unless already bytes."""
        env = self.envelope()
        return [topic.encode(), env, payload if isinstance(payload, bytes) else encode_payload(payload)]


def split_identity(frames: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """A ROUTER message as (identity frames to reply with, the enveloped request)."""
    split = frames.index(b"") + 1 if b"" in frames else 1
    return frames[:split], frames[split:]


def encode_payload(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":"), allow_nan=True).encode()


def decode(frames: list[bytes]) -> Message:
    """Decode a multipart message; raises :class:`EnvelopeError` with a specific reason (frame
    sizes and JSON nesting are capped: no frame makes a receiver fail any other way)."""
    check_frames(frames)
    try:
        topic = frames[0].decode("ascii")
    except UnicodeDecodeError:
        raise EnvelopeError(f"topic frame is not ASCII: {frames[0][:40]!r}") from None
    env = Envelope.decode(frames[1])
    if topic.startswith("sal."):
        try:
            component, name = salrecord.split_topic(topic)
            if frames[2][:4] == salrecord.BATCH_MAGIC:  # a batch: the list of its samples
                return Message(topic, env, [salrecord.decode(component, name, r) for r in salrecord.records(frames[2])])
            return Message(topic, env, salrecord.decode(component, name, frames[2]))
        except (salrecord.RecordError, KeyError) as exc:
            raise EnvelopeError(f"payload of {topic}: {exc}") from None
    return Message(topic, env, loads_bounded(frames[2], f"payload of {topic[:80]}"))


@dataclass
class SeqStatus:
    gap: int = 0
    restarted: bool = False
    duplicate: bool = False


def sender_role(sender: str) -> str:
    """A sender's role without its incarnation: ``composer.LATISS`` from ``composer.LATISS@host:pid:start``."""
    return sender.split("@", 1)[0]


class GapTracker:
    """Per-sender sequence numbers of one receiver: reports gaps (lost messages), duplicates and
    restarted peers (a new incarnation of a role), and keeps their totals, also per role, for the
    receiver's counts and reports. The one sequence follower of every receiver (cache, composer,
    fast path client, hs-tap, the bench probe)."""

    def __init__(self) -> None:
        self.last: dict[str, int] = {}  # sender -> last sequence number seen
        self.current: dict[str, str] = {}  # role -> its current incarnation
        self.gaps = 0
        self.restarts = 0
        self.duplicates = 0
        self.gaps_by_role: Counter[str] = Counter()
        self.restarts_by_role: Counter[str] = Counter()

    def resume(self, sender: str, seq: int) -> None:
        """Carry on from a journal: ``sender`` is its role's current incarnation and its messages
        up to ``seq`` were applied (a receiver restarted after it saw them)."""
        self.current[sender_role(sender)] = sender
        self.last[sender] = seq

    def check(self, env: Envelope) -> SeqStatus:
        st = SeqStatus()
        role = sender_role(env.sender)
        prev_sender = self.current.get(role)
        if prev_sender is not None and prev_sender != env.sender:
            st.restarted = True
            self.restarts += 1
            self.restarts_by_role[role] += 1
        self.current[role] = env.sender
        last = self.last.get(env.sender)
        if last is not None:
            if env.seq <= last:
                st.duplicate = True
                self.duplicates += 1
                return st
            if env.seq > last + 1:
                st.gap = env.seq - last - 1
                self.gaps += st.gap
                self.gaps_by_role[role] += st.gap
        self.last[env.sender] = env.seq
        return st
