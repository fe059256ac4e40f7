"""The one sequence follower (protocols.envelope.GapTracker) every receiver uses: gaps, duplicates
and restarted peers, with totals per role; resumed from a journal after the receiver's own restart."""

from __future__ import annotations

from protocols.envelope import Envelope, GapTracker, sender_role
from tools.tap import RateStats

A = "listener.LATISS@host:10:1.000"
B = "listener.LATISS@host:11:2.000"  # the same role, restarted
C = "composer.LATISS@host:12:3.000"


def env(sender: str, seq: int) -> Envelope:
    return Envelope(1, seq, 0.0, sender)


def test_gaps_duplicates_and_restarts_are_reported_and_counted_per_role() -> None:
    t = GapTracker()
    statuses = [t.check(env(s, n)) for s, n in ((A, 1), (A, 2), (A, 5), (A, 5), (C, 1), (B, 1), (B, 3), (A, 6))]
    assert [(s.gap, s.restarted, s.duplicate) for s in statuses] == [
        (0, False, False), (0, False, False), (2, False, False), (0, False, True),
        (0, False, False), (0, True, False), (1, False, False), (0, True, False),
    ]  # fmt: skip
    assert (t.gaps, t.restarts, t.duplicates) == (3, 2, 1)
    assert t.gaps_by_role == {"listener.LATISS": 3}
    assert t.restarts_by_role == {"listener.LATISS": 2}


def test_resumed_from_a_journal_a_new_incarnation_is_a_restart_and_old_messages_duplicates() -> None:
    t = GapTracker()
    t.resume(A, 41)
    assert t.check(env(A, 41)).duplicate
    st = t.check(env(A, 44))
    assert st.gap == 2 and not st.restarted
    assert t.check(env(B, 1)).restarted


def test_sender_role_drops_the_incarnation() -> None:
    assert sender_role(A) == "listener.LATISS" and sender_role("plain") == "plain"


def test_hs_tap_reports_the_trackers_counts() -> None:
    from protocols.envelope import Message

    stats = RateStats(0.0)
    for s, n in ((A, 1), (A, 4), (A, 4), (B, 1)):
        stats.record(Message("sal.X.y", env(s, n), {}))
    assert (stats.gaps, stats.restarts, stats.duplicates) == (2, 1, 1)
    assert stats.gaps_by_sender == {"listener.LATISS": 2} and stats.restarts_by_sender == {"listener.LATISS": 1}
    assert "2 messages lost, 1 sender restarts, 1 duplicates" in stats.summary(1.0)
