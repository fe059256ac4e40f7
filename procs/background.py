"""Work a process loop hands to a thread of its own, so that the loop never waits on a slow disk.

The publisher makes each announced header durable (fsync of the file, its folder, the provenance
side-car and the annex index) before acknowledging it. On a disk shared with the cache and other
instances one fsync can take tens of milliseconds, and a header arriving meanwhile would wait for
it. A :class:`BackgroundWorker` runs such jobs one at a time, in the order they were submitted;
the owner learns that jobs finished on an inproc ZeroMQ socket (:attr:`BackgroundWorker.signal`)
it polls beside its others, and collects them with :meth:`BackgroundWorker.finished`, so whatever
must follow a job (a message on the owner's sockets, which are not shared between threads) is
done from the owner's thread.
"""

from __future__ import annotations

import collections
import queue
import threading
from typing import Callable, Generic, TypeVar

import zmq

T = TypeVar("T")


class BackgroundWorker(Generic[T]):
    """Runs ``work(item)`` for each submitted item, in order, on one thread; a job's exception is
    handed back with its item, never raised in the thread."""

    def __init__(self, work: Callable[[T], None], name: str, ctx: zmq.Context | None = None):
        self.work = work
        self.ctx = ctx or zmq.Context.instance()
        self.endpoint = f"inproc://{name}-{id(self):x}"
        self.signal = self.ctx.socket(zmq.PULL)  # readable when jobs finished since the last finished()
        self.signal.setsockopt(zmq.LINGER, 0)
        self.signal.bind(self.endpoint)
        self.jobs: queue.Queue[T | None] = queue.Queue()
        self.done: collections.deque[tuple[T, Exception | None]] = collections.deque()
        self.submitted = self.collected = 0
        self.closed = False
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def submit(self, item: T) -> None:
        if self.closed:
            raise RuntimeError("background worker closed")
        self.submitted += 1
        self.jobs.put(item)

    @property
    def busy(self) -> int:
        """Jobs submitted and not yet collected by :meth:`finished`."""
        return self.submitted - self.collected

    def finished(self) -> list[tuple[T, Exception | None]]:
        """The jobs finished since the last call, in order, each with the exception it raised or None."""
        while not self.signal.closed and self.signal.poll(0):
            self.signal.recv()
        out = []
        while self.done:
            out.append(self.done.popleft())
        self.collected += len(out)
        return out

    def wait(self) -> list[tuple[T, Exception | None]]:
        """Every job submitted so far run, and collected."""
        self.jobs.join()
        return self.finished()

    def close(self) -> list[tuple[T, Exception | None]]:
        """Run what is queued, stop the thread; the jobs not collected yet."""
        if not self.closed:
            self.closed = True
            self.jobs.put(None)
            self.thread.join()
        out = self.finished()
        self.signal.close(linger=0)
        return out

    def _run(self) -> None:
        push = self.ctx.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 0)
        push.connect(self.endpoint)
        try:
            while True:
                item = self.jobs.get()
                if item is None:
                    self.jobs.task_done()
                    return
                error: Exception | None = None
                try:
                    self.work(item)
                except Exception as exc:  # handed to the owner with its item
                    error = exc
                self.done.append((item, error))
                try:
                    push.send(b"", zmq.NOBLOCK)
                except zmq.Again:
                    pass  # signals already queued: the owner collects every finished job at once
                self.jobs.task_done()
        finally:
            push.close(linger=0)
