"""The rules of an exposure's life, tested on the machine alone: no process, socket, file or clock.

A small driver stands in for the composer process: it answers the machine's cache questions from
a dict (or not at all, for a cache that is down), "composes" a header complete exactly when the
machine gave no reason against it, and keeps every action for the assertions.
"""

from __future__ import annotations

import ast
import inspect
from dataclasses import dataclass, field
from typing import Any

import pytest

from procs import exposure
from procs.exposure import (
    ACK_TIMEOUT,
    END_GRACE,
    NEVER_STARTED,
    RESYNC_HOLD,
    Action,
    Compose,
    ExposureMachine,
    FindEvents,
    Journal,
    Now,
    Record,
    Resync,
    Send,
    Skip,
    replay_order,
)

T0 = 1_795_000_000.0  # TAI s
DEADLINE = 10.0  # s after startIntegration's timeout (the instance's end_deadline)
A, B = "AT_O_20261125_000001", "AT_O_20261125_000002"


def ev(topic: str, name: str, t: float, rcv: float | None = None, **data: Any) -> dict[str, Any]:
    """A camera event as the listener publishes it."""
    return {"component": "ATCamera", "topic": topic, "salIndex": 0, "sndStamp": t,
            "rcvStamp": t if rcv is None else rcv, "data": {"imageName": name, **data}}  # fmt: skip


def exposure_events(name: str, t: float) -> list[dict[str, Any]]:
    """One exposure's five camera events, in bus order (2 s exposure, timeout 5 s)."""
    return [
        ev("startIntegration", name, t, exposureTime=2.0, timeout=5.0),
        ev("startReadout", name, t + 2.0),
        ev("endReadout", name, t + 4.0),
        ev("imageReadoutParameters", name, t + 4.01),
        ev("endOfImageTelemetry", name, t + 4.3),
    ]


def at(dt: float) -> Now:
    """``dt`` seconds into the night, on both clocks."""
    return Now(T0 + dt, 1000.0 + dt)


@dataclass
class Driver:
    """Carries the machine's actions out the way the composer does, without sockets."""

    machine: ExposureMachine = field(default_factory=lambda: ExposureMachine("LATISS", "ATHeaderService", DEADLINE))
    cache: dict[str, list[dict[str, Any]]] | None = field(default_factory=dict)  # None: the cache is down
    actions: list[Action] = field(default_factory=list)

    def run(self, actions: list[Action], now: Now) -> None:
        for a in actions:
            self.actions.append(a)
            if isinstance(a, FindEvents):
                replies = {t: None if self.cache is None else list(self.cache.get(t, [])) for t in a.topics}
                self.run(self.machine.found(a, replies, now), now)
            elif isinstance(a, Compose):
                body = f"{a.exp.image_name} v{a.version}".encode()
                self.run(self.machine.composed(a, complete=not a.reasons, body=body, now=now), now)
            elif isinstance(a, Resync):
                if self.cache is None:
                    self.machine.resync_failed(now)
                    continue
                self.machine.resynced()
                samples = [s for topic in self.cache.values() for s in topic]
                for s in replay_order(samples):
                    self.run(self.machine.event(s, "cache", now)[1], now)

    def event(self, sample: dict[str, Any], now: Now, source: str = "listener", csc: str = "ENABLED") -> int:
        new, actions = self.machine.event(sample, source, now, csc, ("listener.LATISS@h:1:0", 1))
        self.run(actions, now)
        return new

    def tick(self, now: Now) -> None:
        for _, actions in self.machine.deadlines(now):
            self.run(actions, now)
        self.run(self.machine.resends(now), now)

    def of(self, kind: type) -> list[Any]:
        return [a for a in self.actions if isinstance(a, kind)]

    def composed(self) -> list[Compose]:
        return self.of(Compose)


def test_the_machine_reads_no_socket_file_or_clock() -> None:
    """The rules stay testable without a process: the module imports nothing that does I/O."""
    tree = ast.parse(inspect.getsource(exposure))
    imported = {n.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for n in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert not imported & {"zmq", "socket", "time", "os", "pathlib", "io", "datetime", "threading", "select"}


def test_normal_exposure_start_readout_end() -> None:
    d = Driver()
    for i, sample in enumerate(exposure_events(A, T0)):
        assert d.event(sample, at(i)) == 1
        if sample["topic"] == "startReadout":
            assert A in d.machine.precompose_due, "the provisional composition is due at startReadout"
    (job,) = d.composed()
    assert job.version == 1 and job.reasons == []
    assert job.points == {"start": T0, "readout": T0 + 2.0, "end": T0 + 4.3}
    assert job.after == ("listener.LATISS@h:1:0", 1)
    assert not d.of(FindEvents), "every event was seen: the cache's history is not searched"
    assert [type(a) for a in d.actions[-3:]] == [Send, Record, Journal]
    assert d.of(Record)[-1].entry == {"done": A, "v": 1, "complete": True, "t": T0}
    assert d.machine.done[A] == [1, True] and A not in d.machine.open and A in d.machine.unacked
    assert d.machine.next_precompose() is None, "no provisional composition once the header is written"
    assert d.machine.bus_time == T0 + 4.3


def test_missed_events_are_looked_up_in_the_cache_before_composing() -> None:
    events = exposure_events(A, T0)
    d = Driver(cache={"startReadout": [events[1]], "endReadout": [ev("endReadout", B, T0), events[2]]})
    d.event(events[0], at(0))
    d.event(events[4], at(5))
    (ask,) = d.of(FindEvents)
    assert ask.topics == ("startReadout", "endReadout", "imageReadoutParameters") and ask.t1 == T0 + 4.3
    (job,) = d.composed()
    assert set(job.exp.events) == {"startIntegration", "startReadout", "endReadout", "endOfImageTelemetry"}
    assert job.exp.events["endReadout"]["sndStamp"] == T0 + 4.0, "the image's own event, not another's"
    assert job.reasons == [] and d.machine.done[A] == [1, True]


def test_end_before_start_waits_for_the_start_within_the_grace() -> None:
    start, *_, end = exposure_events(A, T0)
    d = Driver()
    d.event(end, at(5))
    assert d.of(FindEvents)[0].topics == ("startIntegration",) and not d.composed()
    assert d.machine.open[A].grace_wall == at(5).mono + END_GRACE
    d.tick(at(5 + END_GRACE / 2))
    assert not d.composed()
    d.event(start, at(5 + END_GRACE / 2))
    (job,) = d.composed()
    assert job.reasons == [] and d.machine.done[A] == [1, True]


def test_end_before_start_finds_the_start_in_the_cache() -> None:
    start, *_, end = exposure_events(A, T0)
    d = Driver(cache={"startIntegration": [start]})
    d.event(end, at(5))
    (job,) = d.composed()
    assert job.exp.events["startIntegration"] == start and job.reasons == []


def test_spoofed_end_of_an_image_never_started_is_set_aside() -> None:
    d = Driver()
    d.event(ev("endOfImageTelemetry", A, T0), at(0))
    d.tick(at(END_GRACE + 0.5))
    assert not d.composed() and not d.of(Send)
    (skip,) = d.of(Skip)
    assert skip.image_name == A and skip.reason == NEVER_STARTED
    assert d.of(Record)[-1].entry == {"skipped": A, "reason": NEVER_STARTED, "t": T0}
    assert A not in d.machine.open and d.machine.skipped[A] == NEVER_STARTED
    assert d.event(ev("startIntegration", A, T0 + 1), at(3)) == 0, "later events of a set-aside name are ignored"


def test_lone_end_gets_its_header_when_the_cache_cannot_be_asked() -> None:
    d = Driver(cache=None)
    d.event(ev("endOfImageTelemetry", A, T0), at(0))
    d.tick(at(END_GRACE + 0.5))
    (job,) = d.composed()
    assert job.reasons == ["startIntegration not received"] and not d.of(Skip)


def test_overlapping_exposures_are_independent() -> None:
    a, b = exposure_events(A, T0), exposure_events(B, T0 + 3.0)
    d = Driver()
    for i, sample in enumerate(sorted(a + b, key=lambda s: s["sndStamp"])):
        d.event(sample, at(i * 0.1))
        if sample is a[4]:
            assert [j.exp.image_name for j in d.composed()] == [A] and B in d.machine.open
    assert [(j.exp.image_name, j.version, j.reasons) for j in d.composed()] == [(A, 1, []), (B, 1, [])]
    assert d.composed()[1].points["start"] == T0 + 3.0


def test_late_end_writes_incomplete_then_reissues_version_2() -> None:
    start, ro, er, irp, end = exposure_events(A, T0)
    d = Driver()
    for s in (start, ro, er, irp):
        d.event(s, at(0))
    d.tick(at(5.0 + DEADLINE - 0.5))
    assert not d.composed(), "not late before the deadline"
    d.tick(at(5.0 + DEADLINE + 0.5))
    (late,) = d.composed()
    assert late.version == 1 and late.reasons == ["endOfImageTelemetry late beyond the deadline"]
    assert d.machine.done[A] == [1, False] and A in d.machine.without_end
    assert d.of(Record)[-1].entry["noend"] is True
    assert d.machine.counts["late"] == 1
    d.tick(at(5.0 + DEADLINE + 5))
    assert len(d.composed()) == 1, "a late exposure is written once"
    assert d.event(end, at(30.0)) == 1
    reissue = d.composed()[1]
    assert reissue.version == 2 and reissue.reasons == [] and reissue.exp.events["endOfImageTelemetry"] == end
    assert d.machine.done[A] == [2, True] and A not in d.machine.without_end
    assert d.event(end, at(31.0)) == 0 and len(d.composed()) == 2, "the end again reissues nothing"


def test_deadline_on_the_bus_clock_of_a_replayed_night() -> None:
    """Events replayed fast: the bus's event time passes the deadline long before the wall clock does."""
    d = Driver()
    d.event(ev("startIntegration", A, T0, exposureTime=2.0, timeout=5.0), at(0))
    d.event(ev("startIntegration", B, T0 + 60.0, exposureTime=2.0, timeout=5.0), at(0.1))
    d.tick(at(0.2))
    (late,) = d.composed()
    assert late.exp.image_name == A and "late" in late.reasons[0] and B in d.machine.open


def test_an_incomplete_header_for_another_reason_is_not_reissued_by_a_replayed_end() -> None:
    d = Driver()
    *_, end = events = exposure_events(A, T0)
    for s in events:
        d.event(s, at(1))
    d.machine.done[A] = [1, False]  # written incomplete because the bus was not observed
    d.machine.done_events.clear()  # then the composer restarted: the cache replays the end
    assert d.event(end, at(2), source="cache") == 0 and len(d.composed()) == 1


def test_duplicate_events_and_events_after_the_header_are_ignored() -> None:
    start, *rest = exposure_events(A, T0)
    d = Driver()
    assert d.event(start, at(0)) == 1
    assert d.event(start, at(0.1)) == 0 and d.machine.counts["duplicate_events"] == 1
    assert d.event(start, at(0.1), source="cache") == 0 and d.machine.counts["duplicate_events"] == 1
    for s in rest:
        d.event(s, at(1))
    assert d.event(rest[0], at(2)) == 0 and d.machine.counts["events_after_done"] == 1
    assert len(d.composed()) == 1


def test_reused_image_name_is_reported_once_and_keeps_the_first_header() -> None:
    d = Driver()
    for s in exposure_events(A, T0):
        d.event(s, at(0))
    again = ev("startIntegration", A, T0 + 100.0, exposureTime=2.0, timeout=5.0)
    assert d.event(again, at(100)) == 0
    (skip,) = d.of(Skip)
    assert skip.duplicate and "used again by a second exposure" in skip.reason
    assert d.of(Record)[-1].entry["duplicate"] == A and d.of(Record)[-1].entry["t"] == T0 + 100.0
    assert d.event(again, at(101)) == 0 and len(d.of(Skip)) == 1, "reported once"
    assert d.machine.done[A] == [1, True] and A not in d.machine.skipped and A not in d.machine.open
    assert d.event(exposure_events(A, T0)[0], at(102)) == 0 and len(d.of(Skip)) == 1, "its own start again is no reuse"


def test_reused_image_name_while_the_first_is_open() -> None:
    d = Driver()
    d.event(ev("startIntegration", A, T0, timeout=5.0), at(0))
    d.event(ev("startIntegration", A, T0 + 7.0, timeout=5.0), at(7))
    assert len(d.of(Skip)) == 1 and d.machine.open[A].events["startIntegration"]["sndStamp"] == T0


def test_csc_not_enabled_skips_with_the_reason() -> None:
    start, *rest = exposure_events(A, T0)
    d = Driver()
    assert d.event(start, at(0), csc="DISABLED") == 0
    (skip,) = d.of(Skip)
    assert skip.reason == "CSC ATHeaderService is DISABLED, not ENABLED"
    assert d.of(Record)[-1].entry == {"skipped": A, "reason": skip.reason}
    for s in rest:
        assert d.event(s, at(1)) == 0
    assert not d.composed() and A not in d.machine.open


def test_csc_disabled_mid_exposure_still_finishes_it() -> None:
    start, *rest = exposure_events(A, T0)
    d = Driver()
    d.event(start, at(0))
    for s in rest:
        d.event(s, at(1), csc="STANDBY")
    assert len(d.composed()) == 1 and not d.of(Skip)


@pytest.mark.parametrize(
    "stamp, why",
    [(T0 + 40 * 365 * 86400.0, "after its reception"), (T0 - 2 * 366 * 86400.0, "before its reception"),
     (float("nan"), "is not a time"), (float("inf"), "is not a time")],
)  # fmt: skip
def test_absurd_event_times_count_at_their_reception(stamp: float, why: str) -> None:
    d = Driver()
    d.event(ev("startIntegration", A, stamp, rcv=T0, exposureTime=2.0, timeout=5.0), at(0))
    assert d.machine.bus_time == T0, "the deadline clock is not moved by a broken stamp"
    for s in exposure_events(A, T0)[1:]:
        d.event(s, at(5))
    (job,) = d.composed()
    assert job.points["start"] == T0
    assert len(job.reasons) == 1 and job.reasons[0].startswith("startIntegration: private_sndStamp") and why in job.reasons[0]
    assert d.machine.counts["event_times_not_believed"] == 1


@pytest.mark.parametrize(
    "sample, counter",
    [({"topic": "startIntegration", "sndStamp": T0, "data": {}}, "events_without_image"),
     ({"topic": "startIntegration", "sndStamp": T0, "data": {"imageName": "../../etc/passwd"}}, "bad_events"),
     ({"topic": "startIntegration", "sndStamp": "soon", "data": {"imageName": A}}, "bad_events"),
     ({"topic": "startIntegration", "sndStamp": True, "data": {"imageName": A}}, "bad_events")],
)  # fmt: skip
def test_events_that_name_no_image_are_counted_and_dropped(sample: dict[str, Any], counter: str) -> None:
    d = Driver()
    assert d.event(sample, at(0)) == 0 and not d.actions and d.machine.counts[counter] == 1
    assert d.event({"topic": "notACameraEvent"}, at(0)) == 0 and not d.actions


def test_resync_after_restart_restores_the_journal_and_replays_in_time_order() -> None:
    before = Driver()
    start, ro, er, irp, end = exposure_events(A, T0)
    before.event(start, at(0))
    done = exposure_events(B, T0 - 60)
    for s in done:
        before.event(s, at(0))
    journal = before.machine.snapshot()
    history = [a.entry for a in before.of(Record)]
    assert set(journal["open"]) == {A} and journal["bus_time"] == T0
    # Killed; later exposures were seen (the bus clock is past A's deadline); restarted while the
    # cache is down.
    journal["bus_time"] = T0 + 60.0
    after = Driver(cache=None)
    now = at(60)
    actions = after.machine.restore(journal, history, now)
    assert isinstance(actions[-1], Resync) and actions[-1].since == T0 + 60.0 - exposure.RESYNC_MARGIN
    assert after.machine.done[B] == [1, True] and after.machine.start_stamps[B] == T0 - 60
    after.run(actions, now)
    after.tick(at(61))
    assert not after.composed(), "not judged late while a resync from the cache is pending"
    assert A in after.machine.open
    # The cache is back, holding the events published while the composer was down (out of order).
    after.cache = {"endOfImageTelemetry": [end], "startReadout": [ro], "endReadout": [er],
                   "imageReadoutParameters": [irp], "startIntegration": [start]}  # fmt: skip
    after.run([after.machine.resync(at(62))], at(62))
    (job,) = after.composed()
    assert job.exp.image_name == A and job.reasons == [] and after.machine.done[A] == [1, True]
    assert after.machine.counts["duplicate_events"] == 0, "replayed events already known are not duplicates"


def test_resync_hold_ends_after_its_limit() -> None:
    d = Driver(cache=None)
    d.event(ev("startIntegration", A, T0, timeout=5.0), at(0))
    d.run([d.machine.resync(at(1))], at(1))
    d.tick(at(1 + RESYNC_HOLD - 1))
    assert not d.composed()
    d.tick(at(1 + RESYNC_HOLD + 1))
    assert d.composed()[0].reasons[0] == "endOfImageTelemetry late beyond the deadline"


def test_restart_resends_headers_awaiting_acknowledgement_at_the_same_version() -> None:
    before = Driver()
    for s in exposure_events(A, T0):
        before.event(s, at(0))
    journal, history = before.machine.snapshot(), [a.entry for a in before.of(Record)]
    assert journal["unacked"] == [A]
    after = Driver(cache={s["topic"]: [s] for s in exposure_events(A, T0)})
    after.run(after.machine.restore(journal, history, at(10)), at(10))
    (job,) = after.composed()
    assert job.version == 1 and job.reasons == [] and after.machine.done[A] == [1, True]


def test_journaled_open_exposure_with_an_absurd_deadline_is_bounded() -> None:
    state = {"open": {A: {"events": {"startIntegration": ev("startIntegration", A, T0)}, "deadline_tai": 4e9}},
             "bus_time": 5e9, "unacked": []}  # fmt: skip
    m = ExposureMachine("LATISS", "ATHeaderService", DEADLINE)
    m.restore(state, [], at(0))
    assert m.bus_time <= T0 + exposure.FUTURE_SLACK
    assert m.open[A].deadline_tai <= max(m.bus_time, T0) + exposure.DEFAULT_TIMEOUT_EXTRA + DEADLINE


def test_acknowledgement_and_resend_after_ack_timeout() -> None:
    d = Driver()
    for s in exposure_events(A, T0):
        d.event(s, at(0))
    d.tick(at(ACK_TIMEOUT - 0.5))
    assert len(d.of(Send)) == 1
    d.tick(at(ACK_TIMEOUT + 0.5))
    resent = d.of(Send)[1]
    assert resent.resend and resent.version == 1 and resent.body == d.of(Send)[0].body
    d.tick(at(ACK_TIMEOUT + 1.0))
    assert len(d.of(Send)) == 2, "the resend restarts the timer"
    assert d.machine.acked(A, 0) == [] and A in d.machine.unacked, "an older version's acknowledgement is not this one's"
    assert d.machine.acked(A, 1) == [Journal()] and A not in d.machine.unacked
    assert d.machine.acked(A, 1) == []
    d.tick(at(3 * ACK_TIMEOUT))
    assert len(d.of(Send)) == 2


def test_a_header_set_aside_by_the_publisher_is_not_resent() -> None:
    """ctl.rejected carries the imageName and version like ctl.announced: the header is kept by the
    publisher (set aside), so the composer stops sending it."""
    d = Driver()
    for s in exposure_events(A, T0):
        d.event(s, at(0))
    d.machine.acked(A, 1)
    d.tick(at(10 * ACK_TIMEOUT))
    assert len(d.of(Send)) == 1


def test_abandoned_exposure_is_reported_and_closed() -> None:
    d = Driver()
    d.event(ev("startIntegration", A, T0, timeout=5.0), at(0))
    d.run(d.machine.abandon(A), at(30))
    assert A not in d.machine.open and d.of(Skip)[0].reason.startswith("its header could not be written")


def test_recompose_for_catch_up_fills_from_the_cache_and_bumps_the_version() -> None:
    events = exposure_events(A, T0)
    d = Driver(cache={s["topic"]: [s] for s in events})
    for s in events:
        d.event(s, at(0))
    d.machine.done_events.clear()  # a restarted composer: only the cache remembers the events
    d.run(d.machine.recompose(A, at(10)), at(10))
    job = d.composed()[-1]
    assert job.version == 2 and set(job.exp.events) == set(exposure.REPLAYED) and job.reasons == []
    d.run(d.machine.recompose("AT_O_20261125_000099", at(11)), at(11))
    assert d.machine.recompose_errors["AT_O_20261125_000099"].startswith("no camera event")


def test_provisional_composition_snapshots_are_reused_only_at_the_same_points() -> None:
    d = Driver()
    start, ro, er, irp, end = exposure_events(A, T0)
    for s in (start, ro):
        d.event(s, at(0))
    exp = d.machine.next_precompose()
    assert exp is not None and exp.image_name == A
    d.machine.keep_early(exp, {"start": {"k": 1}, "readout": {"k": 2}, "end": {"k": 3}},
                         {"start": T0, "readout": T0 + 2.0, "end": T0 + 2.0})  # fmt: skip
    for s in (er, irp, end):
        d.event(s, at(5))
    assert d.composed()[0].known == {"start": {"k": 1}, "readout": {"k": 2}}


def test_history_compaction_keeps_what_restore_needs() -> None:
    d = Driver()
    for s in exposure_events(A, T0):
        d.event(s, at(0))
    d.event(ev("startIntegration", A, T0 + 100.0), at(100))
    lines = d.machine.compacted()
    m = ExposureMachine("LATISS", "ATHeaderService", DEADLINE)
    m.restore({}, lines, at(200))
    assert m.done == {A: [1, True]} and m.start_stamps == {A: T0} and (A, T0 + 100.0) in m.duplicates
