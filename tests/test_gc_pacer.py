"""The processes' garbage-collection pacing: nothing collected mid-work, cycles freed when quiet."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from procs.common import GcPacer


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


@pytest.fixture
def restore_gc() -> Iterator[None]:
    yield
    gc.unfreeze()
    gc.enable()


def test_cycles_wait_for_a_quiet_step_then_are_freed(restore_gc: None) -> None:
    pacer = GcPacer(young_s=0.0, busy_s=3600.0, full_s=3600.0)
    assert not gc.isenabled()
    n = Node()
    ref = weakref.ref(n)
    del n
    for _ in range(5):
        [Node() for _ in range(2000)]  # enough allocations to trigger an automatic collection
    pacer.step(quiet=False)  # busy: nothing collected yet
    assert ref() is not None
    pacer.step(quiet=True)
    assert ref() is None


def test_busy_process_still_collects_after_busy_s(restore_gc: None) -> None:
    pacer = GcPacer(young_s=3600.0, busy_s=0.0, full_s=3600.0)
    n = Node()
    ref = weakref.ref(n)
    del n
    pacer.step(quiet=False)
    assert ref() is None
