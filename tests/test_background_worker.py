"""procs.background.BackgroundWorker: jobs run in order on a thread of their own, and the owner
learns of each finished job on a ZeroMQ socket it polls, with the exception a job raised."""

from __future__ import annotations

import threading

import pytest
import zmq

from procs.background import BackgroundWorker


def test_jobs_run_in_order_and_the_owner_is_signalled() -> None:
    ran: list[int] = []
    worker: BackgroundWorker[int] = BackgroundWorker(ran.append, "test-order")
    try:
        for i in range(100):
            worker.submit(i)
        poller = zmq.Poller()
        poller.register(worker.signal, zmq.POLLIN)
        assert dict(poller.poll(5000)), "no signal from the worker"
        collected = worker.finished() + worker.wait()
        assert [item for item, _ in collected] == list(range(100)) == ran
        assert all(error is None for _, error in collected)
        assert worker.busy == 0 and worker.finished() == []
    finally:
        worker.close()


def test_a_failing_job_is_handed_back_and_the_next_ones_still_run() -> None:
    def work(item: str) -> None:
        if item == "bad":
            raise OSError(5, "Input/output error")

    worker: BackgroundWorker[str] = BackgroundWorker(work, "test-errors")
    try:
        for item in ("a", "bad", "b"):
            worker.submit(item)
        done = worker.wait()
        assert [item for item, _ in done] == ["a", "bad", "b"]
        assert done[0][1] is None and done[2][1] is None
        assert isinstance(done[1][1], OSError) and done[1][1].errno == 5
    finally:
        worker.close()


def test_the_owner_never_waits_for_a_held_job_and_close_finishes_the_queue() -> None:
    release = threading.Event()
    started = threading.Event()
    ran: list[int] = []

    def work(item: int) -> None:
        if item == 0:
            started.set()
            assert release.wait(10)
        ran.append(item)

    worker: BackgroundWorker[int] = BackgroundWorker(work, "test-held")
    worker.submit(0)
    assert started.wait(5)
    worker.submit(1)  # returns at once although the worker is held
    assert worker.finished() == [] and worker.busy == 2
    release.set()
    left = worker.close()
    assert ran == [0, 1] and [item for item, _ in left] == [0, 1]
    assert worker.thread.is_alive() is False and worker.signal.closed
    with pytest.raises(RuntimeError, match="closed"):
        worker.submit(2)
