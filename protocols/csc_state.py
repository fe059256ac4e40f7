"""The ZeroMQ contract between an instance's CSC process (hs-csc) and its header processes.

Operators drive each Header Service instance over SAL like any other observatory CSC; the header
processes learn what they decided from the CSC process over ZeroMQ:

- **State**: hs-csc PUBlishes on ``tcp://127.0.0.1:<port_base+6>``, topic ``ctl.csc.<instrument>``
  (envelope of :mod:`protocols.envelope`), on every change and every second (heartbeat)::

      {"state": "ENABLED", "stateCode": 2, "csc": "ATHeaderService",
       "overrides": {"version": 3, "cards": {"OBSERVER": {"value": "Jane Doe", "comment": ""}},
                     "setAt": <TAI unix s>, "by": "<identity of the commander>"}}

  and answers any request on its REP socket ``tcp://127.0.0.1:<port_base+7>`` with the same
  message, so a (re)started process learns the state at once. :class:`CscStateFollower` is the
  client side of both.
- **Faults**: the composer and the publisher report a fault by PUBlishing :func:`fault_frames`
  (topic ``ctl.fault.<instrument>``, payload ``{"code": int, "report": str}``) on their own PUB
  socket; hs-csc SUBscribes to both and goes to FAULT with an errorCode event when ENABLED or
  DISABLED. A fault sent before hs-csc connected is lost (PUB/SUB): resend while the condition lasts.
- **Warnings**: a condition that costs no header but needs an operator (the annex unwritable while
  headers are kept and retried, a header set aside) is PUBlished with :func:`warning_frames` (topic
  ``ctl.warning.<instrument>``, payload ``{"code": int, "report": str, "active": bool}``): hs-csc
  stays in its state and publishes errorCode and logMessage (WARNING) when the condition starts, a
  logMessage reminder while it lasts, and errorCode 0 with a logMessage when ``active`` turns false.
"""

from __future__ import annotations

import time
from enum import IntEnum
from typing import Any

import zmq

from protocols.config import InstanceConfig
from protocols.envelope import EnvelopeError, Sender, decode, sender_id
from protocols.messages import CscState, Fault, OperatorWarning

#: Port offsets from the instance's port_base (listener +0 ... publisher PUB +4, HTTP +9).
STATE_PUB_OFFSET = 6
STATE_REP_OFFSET = 7
#: hs-csc publishes its state at least this often (seconds).
HEARTBEAT_S = 1.0
FAULT_PREFIX = "ctl.fault."
WARNING_PREFIX = "ctl.warning."


class State(IntEnum):
    """SAL summary states (header-facts.md, "CSC behaviour")."""

    DISABLED = 1
    ENABLED = 2
    FAULT = 3
    OFFLINE = 4
    STANDBY = 5


class AckCode(IntEnum):
    """ackcmd ``ack`` values."""

    CMD_ACK = 300
    CMD_INPROGRESS = 301
    CMD_STALLED = 302
    CMD_COMPLETE = 303
    CMD_NOPERM = -300
    CMD_NOACK = -301
    CMD_FAILED = -302
    CMD_ABORTED = -303
    CMD_TIMEOUT = -304


class ErrorCode(IntEnum):
    """errorCode values of the Header Service CSCs (the ``code`` of a fault message)."""

    ANNEX_UNWRITABLE = 1  # publisher cannot write header files to the annex
    CACHE_UNREACHABLE = 2  # composer gets no answer from the cache
    TEMPLATE_UNREADABLE = 3  # composer cannot load its templates or keyword map
    LISTENER_SILENT = 4  # no camera events / telemetry from the listener for too long
    ANNOUNCE_FAILED = 5  # publisher cannot announce on DDS (largeFileObjectAvailable)
    HEADER_DEADLINE = 6  # headers repeatedly written incomplete at their deadline
    OVERRIDES_UNUSABLE = 7  # the CSC's header-card overrides cannot be applied
    HEADER_SET_ASIDE = 8  # a header can never be written (bad name): set aside with its reason
    INTERNAL = 99  # unexpected exception in a header process


def state_pub_endpoint(cfg: InstanceConfig) -> str:
    return f"tcp://127.0.0.1:{cfg.port_base + STATE_PUB_OFFSET}"


def state_rep_endpoint(cfg: InstanceConfig) -> str:
    return f"tcp://127.0.0.1:{cfg.port_base + STATE_REP_OFFSET}"


def state_topic(instrument: str) -> str:
    return f"ctl.csc.{instrument}"


def fault_topic(instrument: str) -> str:
    return f"{FAULT_PREFIX}{instrument}"


def fault_frames(sender: Sender, instrument: str, code: int, report: str) -> list[bytes]:
    """The message a header process PUBlishes on its own PUB socket to put the CSC in FAULT."""
    return sender.frames(fault_topic(instrument), Fault(int(code), str(report)).encode())


def warning_frames(sender: Sender, instrument: str, code: int, report: str, active: bool = True) -> list[bytes]:
    """The message a header process PUBlishes to warn operators through the CSC (no state change);
    ``active=False`` says the condition of ``code`` is over."""
    return sender.frames(f"{WARNING_PREFIX}{instrument}", OperatorWarning(int(code), str(report), bool(active)).encode())


def empty_overrides() -> dict[str, Any]:
    return {"version": 0, "cards": {}, "setAt": None, "by": ""}


def state_payload(state: State, overrides: dict[str, Any], csc: str = "") -> dict[str, Any]:
    """The state message of the contract (built by hs-csc)."""
    return CscState(state.name, int(state), csc, overrides).encode()


class CscStateFollower:
    """What a header process knows of its CSC: state and header-card overrides.

    ``refresh(timeout_s)`` asks the CSC (REQ) and waits at most ``timeout_s``; ``poll()`` applies
    whatever the CSC published since, without blocking. Until the CSC is heard the state is
    ``"UNKNOWN"`` and :attr:`enabled` is False. Messages of one CSC incarnation are applied in
    sequence order (a late PUB message never undoes a newer REQ answer).
    """

    UNKNOWN = "UNKNOWN"

    def __init__(self, cfg: InstanceConfig, role: str = "follower", ctx: zmq.Context | None = None):
        self.instrument = cfg.instrument
        self.topic = state_topic(cfg.instrument)
        self.pub_endpoint = state_pub_endpoint(cfg)
        self.rep_endpoint = state_rep_endpoint(cfg)
        self.ctx = ctx or zmq.Context.instance()
        self.sender = Sender(sender_id(role, cfg.instrument))
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.SUBSCRIBE, self.topic.encode())
        self.sub.connect(self.pub_endpoint)
        self._req: zmq.Socket | None = None
        self.payload: dict[str, Any] | None = None
        self.last_heard: float | None = None  # time.monotonic() of the last message applied
        self._last: tuple[str, int] = ("", 0)  # (CSC sender identity, envelope seq) last applied
        self.bad_messages = 0

    # -- state -------------------------------------------------------------------------------
    @property
    def state(self) -> str:
        return str(self.payload["state"]) if self.payload else self.UNKNOWN

    @property
    def state_code(self) -> int | None:
        return int(self.payload["stateCode"]) if self.payload else None

    @property
    def enabled(self) -> bool:
        return self.state == State.ENABLED.name

    @property
    def overrides(self) -> dict[str, dict[str, Any]]:
        """KEY -> {"value": ..., "comment": str}: the operator's cards (empty until heard)."""
        if not self.payload:
            return {}
        return dict(self.payload.get("overrides", {}).get("cards", {}))

    @property
    def overrides_version(self) -> int:
        return int(self.payload.get("overrides", {}).get("version", 0)) if self.payload else 0

    @property
    def age(self) -> float:
        """Seconds since the CSC was last heard (infinite if never); the CSC speaks every second."""
        return time.monotonic() - self.last_heard if self.last_heard is not None else float("inf")

    # -- transport -------------------------------------------------------------------------------
    def _apply(self, frames: list[bytes]) -> bool:
        try:
            msg = decode(frames)
            if msg.topic != self.topic:
                return False
            CscState.decode(msg.payload)  # checked: the properties below read it
        except EnvelopeError:
            self.bad_messages += 1
            return False
        sender, seq = msg.envelope.sender, msg.envelope.seq
        if sender == self._last[0] and seq <= self._last[1]:
            return False  # older than what we already know (a PUB message queued behind a REQ answer)
        self._last = (sender, seq)
        self.payload = msg.payload
        self.last_heard = time.monotonic()
        return True

    def refresh(self, timeout_s: float = 1.0) -> bool:
        """Ask the CSC for its state now; True if it answered within ``timeout_s``."""
        if self._req is None:
            self._req = self.ctx.socket(zmq.REQ)
            self._req.setsockopt(zmq.LINGER, 0)
            self._req.connect(self.rep_endpoint)
        self._req.send_multipart(self.sender.frames(f"{self.topic}.get", {}))
        if self._req.poll(int(max(timeout_s, 0.0) * 1000)):
            frames = self._req.recv_multipart()
            self._apply(frames)
            self.poll()
            return True
        # No answer: a REQ socket cannot send again before it receives, so start afresh next time.
        self._req.close(linger=0)
        self._req = None
        return False

    def poll(self) -> bool:
        """Apply every state message published since the last call; True if anything new arrived."""
        changed = False
        while True:
            try:
                frames = self.sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return changed
            changed = self._apply(frames) or changed

    def close(self) -> None:
        self.sub.close(linger=0)
        if self._req is not None:
            self._req.close(linger=0)
            self._req = None
