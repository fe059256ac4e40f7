"""Payloads carried in envelopes, and the client side of the cache's request protocol.

- ``sal.<Component>.<topic>``: a SAL sample ``{component, topic, salIndex, sndStamp, srcStamp,
  rcvStamp, data}`` (listener PUB).
- ``hdr.<instrument>.<imageName>``: a finished header ``{imageName, instrument, dayobs, version,
  complete, reasons, hdus: [{name, cards: [80-char card images]}], provenance}`` (composer PUB
  fast path and PUSH to the publisher).
- ``ctl.announced.<imageName>``: ``{imageName, version, path, url, md5, byteSize, announced}``
  (publisher PUB, after the DDS announcement).
- Cache requests (REQ to the cache ROUTER): ``{op: collect|range|latest|status, ...}``.
"""

from __future__ import annotations

from typing import Any

import zmq

from protocols.envelope import EnvelopeError, Sender, decode


def topic_key(component: str, topic: str, sal_index: int = 0) -> str:
    """Key of one topic instance in the cache: ``Component.topic:salIndex``."""
    return f"{component}.{topic}:{sal_index}"


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

    def request(self, req: dict[str, Any], timeout_ms: int | None = None) -> dict[str, Any]:
        sock = self._socket()
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
            raise CacheUnavailable(f"{self.peer} refused the request: {msg.payload['error']}")
        return msg.payload

    def close(self, linger: int = 0) -> None:
        if self.sock is not None:
            self.sock.close(linger=linger)
            self.sock = None
