"""librdkafka's own log, through Python logging, with repeats folded.

Left to itself librdkafka writes to stderr, and while a broker is down each client says so at every
reconnection attempt (``Connect to ipv4#127.0.0.1:9092 failed: Connection refused``, several times a
second): a ten-minute outage buried an operator's log under thousands of identical lines. Our
consumers and producers hand their log to the ``librdkafka`` logger instead (served by their poll
calls), where :class:`RepeatFolder` lets a message through the first time, then at most once per
``every_s`` with how many times it came meanwhile. Messages that differ only in numbers (ports,
milliseconds, offsets) count as one."""

from __future__ import annotations

import logging
import re
import time
from typing import Any

_NUMBERS = re.compile(r"\d+")


class RepeatFolder(logging.Filter):
    """First occurrence passes; repeats pass once per ``every_s``, saying how many were folded."""

    MAX_KEYS = 1000  # distinct messages remembered (the oldest forgotten first)

    def __init__(self, every_s: float = 60.0, clock: Any = time.monotonic):
        super().__init__()
        self.every_s = every_s
        self.clock = clock
        self.seen: dict[str, tuple[float, int]] = {}  # message shape -> (last passed, folded since)

    def filter(self, record: logging.LogRecord) -> bool:
        key = _NUMBERS.sub("#", record.getMessage())
        now = self.clock()
        last = self.seen.get(key)
        if last is not None and now - last[0] < self.every_s:
            self.seen[key] = (last[0], last[1] + 1)
            return False
        if last is not None and last[1]:
            record.msg = f"{record.getMessage()} (and {last[1]} more like it in {now - last[0]:.0f} s)"
            record.args = None
        self.seen.pop(key, None)
        self.seen[key] = (now, 0)
        while len(self.seen) > self.MAX_KEYS:
            self.seen.pop(next(iter(self.seen)))
        return True


LOG = logging.getLogger("librdkafka")
LOG.addFilter(RepeatFolder())


def with_log(conf: dict[str, Any]) -> dict[str, Any]:
    """A client's settings with its log going to :data:`LOG` (folded) instead of stderr."""
    return {**conf, "logger": LOG}
