"""Per-follower flow control (raft/progress.py): probe, replicate, snapshot."""

from __future__ import annotations

from raft.messages import SnapshotMeta
from raft.progress import Progress, ProgressState


def test_probe_sends_one_at_a_time_until_answered() -> None:
    pr = Progress(next=5)
    assert not pr.is_paused(8)
    pr.sent(4)
    assert pr.is_paused(8)
    assert pr.maybe_update(4) and not pr.is_paused(8)


def test_replicate_pipelines_up_to_max_inflight_and_acks_free_slots() -> None:
    pr = Progress(match=4, next=5)
    pr.become_replicate()
    for last in (6, 8, 10):
        pr.sent(last)
    assert pr.next == 11 and pr.is_paused(3) and not pr.is_paused(4)
    pr.maybe_update(8)  # cumulative ack frees both slots it covers
    assert list(pr.inflight) == [10] and pr.match == 8


def test_duplicate_or_stale_acks_never_move_match_back() -> None:
    pr = Progress(match=9, next=10)
    assert not pr.maybe_update(5)
    assert (pr.match, pr.next) == (9, 10)
    pr.check()


def test_stale_rejections_are_ignored() -> None:
    """A rejection for an index we already know matches, or for a probe that is not the
    one in flight, must not move next backwards (messages arrive late and twice)."""
    pr = Progress(match=5, next=9)
    pr.become_replicate()
    assert not pr.maybe_decr_to(rejected=4, match_hint=2)
    probe = Progress(match=0, next=7)
    assert not probe.maybe_decr_to(rejected=3, match_hint=1)  # we probed at 6, not 3
    assert probe.maybe_decr_to(rejected=6, match_hint=2)
    assert probe.next == 3


def test_rejection_hint_never_goes_below_match() -> None:
    pr = Progress(match=4, next=9)
    assert pr.maybe_decr_to(rejected=8, match_hint=1)
    assert pr.next == 5


def test_snapshot_state_pauses_until_installed_then_probes_after_it() -> None:
    pr = Progress(match=2, next=3)
    pr.become_snapshot(SnapshotMeta(10, 3))
    assert pr.is_paused(100) and pr.state == ProgressState.SNAPSHOT
    pr.become_probe()
    assert pr.next == 11 and pr.state == ProgressState.PROBE
