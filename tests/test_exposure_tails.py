"""Overlapping exposures: an exposure's end is never kept waiting behind the next one's head start."""

from __future__ import annotations

from procs.exposure import Compose
from tests.test_exposure_machine import A, B, T0, Driver, at, ev, exposure_events


def test_the_next_exposures_provisional_composition_waits_for_the_previous_end() -> None:
    d = Driver()
    a_start, a_ro, a_er, a_irp, a_end = exposure_events(A, T0)
    b_start, b_ro = ev("startIntegration", B, T0 + 3.0, exposureTime=1.0, timeout=5.0), ev("startReadout", B, T0 + 4.0)
    for s in (a_start, a_ro):
        d.event(s, at(2.0))
    assert d.machine.precompose_ready() and d.machine.next_precompose().image_name == A
    for s, t in ((b_start, 3.0), (a_er, 4.0), (b_ro, 4.0), (a_irp, 4.01)):
        d.event(s, at(t))
    assert B in d.machine.precompose_due, "due, as at every startReadout"
    assert d.machine.next_precompose().image_name == A, "A's again, with its readout geometry"
    assert d.machine.held(B) and not d.machine.precompose_ready(), "A reads out: its end comes first"
    assert d.machine.next_precompose() is None and B in d.machine.precompose_due
    d.event(a_end, at(4.3))
    assert [c.exp.image_name for c in d.of(Compose)] == [A]
    assert d.machine.precompose_ready() and d.machine.next_precompose().image_name == B


def test_an_exposure_reading_out_later_does_not_hold_an_earlier_one() -> None:
    d = Driver()
    a_start, a_ro, *_ = exposure_events(A, T0)
    b_start, b_ro = ev("startIntegration", B, T0 + 0.5, exposureTime=2.0, timeout=5.0), ev("startReadout", B, T0 + 2.5)
    for s in (a_start, b_start, a_ro, b_ro):
        d.event(s, at(2.5))
    assert not d.machine.held(A) and d.machine.held(B)
    assert d.machine.next_precompose().image_name == A
    assert not d.machine.precompose_ready()


def test_a_held_exposure_that_ends_first_needs_no_provisional_composition() -> None:
    d = Driver()
    a_start, a_ro, *_ = exposure_events(A, T0)
    b = exposure_events(B, T0 + 0.5)
    for s in (a_start, a_ro, *b[:2]):
        d.event(s, at(2.5))
    d.machine.next_precompose()
    for s in b[2:]:
        d.event(s, at(5.0))
    assert [c.exp.image_name for c in d.of(Compose)] == [B]
    assert not d.machine.held(B) and d.machine.next_precompose() is None
