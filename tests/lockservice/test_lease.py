"""Chubby §2.8 (sessions and KeepAlives), client side: the local lease, jeopardy, grace.

Pure: the lease takes the time as an argument, so these tests pass instants, not sleeps.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lockservice.lease import LeaseState, LocalLease

H, J, L = LeaseState.HEALTHY, LeaseState.JEOPARDY, LeaseState.LOST


def opened(margin: float = 0.5, grace: float = 3.0, sent_at: float = 100.0,
           lease_ms: int = 5000) -> LocalLease:
    lease = LocalLease(safety_margin_s=margin, grace_s=grace)
    lease.open(sent_at, lease_ms)
    return lease


def test_local_lease_ends_a_margin_before_the_earliest_server_end() -> None:
    # §2.8: the server's lease ends no earlier than send time + lease_ms; ours ends sooner.
    lease = opened(margin=0.5, sent_at=100.0, lease_ms=5000)
    assert lease.state is H
    assert lease.expires_at == pytest.approx(104.5)
    assert lease.holding_at(104.49)
    assert not lease.holding_at(104.5)


def test_jeopardy_when_the_local_lease_runs_out_then_lost_after_grace() -> None:
    lease = opened(margin=0.5, grace=3.0)
    assert lease.poll(104.0) == []
    (t,) = lease.poll(105.0)
    assert (t.old, t.new, t.at) == (H, J, pytest.approx(104.5))
    assert not lease.holding_at(105.0)
    assert lease.next_deadline() == pytest.approx(107.5)
    (t,) = lease.poll(107.5)
    assert (t.old, t.new, t.at) == (J, L, pytest.approx(107.5))
    assert lease.next_deadline() is None


def test_a_poll_long_after_sees_both_transitions_in_order() -> None:
    lease = opened()
    changes = lease.poll(1000.0)
    assert [(c.old, c.new) for c in changes] == [(H, J), (J, L)]
    assert changes[0].at < changes[1].at <= 1000.0


def test_renewal_in_grace_returns_to_healthy() -> None:
    lease = opened(margin=0.5, grace=3.0)
    lease.poll(105.0)
    assert lease.state is J
    (t,) = lease.renewed(sent_at=105.5, lease_ms=5000, now=105.6)
    assert (t.old, t.new) == (J, H)
    assert lease.holding_at(105.6)
    assert lease.expires_at == pytest.approx(110.0)


def test_a_late_answer_that_is_already_over_leaves_jeopardy_in_place() -> None:
    # A KeepAlive sent long ago comes back so late that its lease already ran out here.
    lease = opened(margin=0.5, grace=3.0)
    lease.poll(105.0)
    assert lease.renewed(sent_at=100.2, lease_ms=4000, now=105.0) == []
    assert lease.state is J


def test_renewal_never_shortens_the_lease() -> None:
    lease = opened(margin=0.5, sent_at=100.0, lease_ms=5000)
    lease.renewed(sent_at=100.1, lease_ms=1000, now=100.2)
    assert lease.expires_at == pytest.approx(104.5)


def test_lost_is_final() -> None:
    lease = opened()
    (t,) = lease.ended(101.0, "session_expired")
    assert (t.old, t.new, t.reason) == (H, L, "session_expired")
    assert lease.renewed(sent_at=101.0, lease_ms=5000, now=101.1) == []
    assert lease.state is L and not lease.holding_at(101.1)
    assert lease.ended(102.0, "again") == []


def test_server_end_in_jeopardy_is_lost_at_once() -> None:
    lease = opened()
    lease.poll(105.0)
    (t,) = lease.ended(105.1, "unknown_session")
    assert (t.old, t.new) == (J, L)


def test_for_ttl_defaults_and_refusals() -> None:
    lease = LocalLease.for_ttl(10_000)
    assert lease.safety_margin_s == pytest.approx(1.0) and lease.grace_s == pytest.approx(10.0)
    assert LocalLease.for_ttl(100).safety_margin_s == pytest.approx(0.05)
    for bad in ({"ttl_ms": 0}, {"ttl_ms": 100, "safety_margin_ms": 100},
                {"ttl_ms": 100, "safety_margin_ms": -1}):
        with pytest.raises(ValueError):
            LocalLease.for_ttl(**bad)
    with pytest.raises(ValueError):
        LocalLease(safety_margin_s=-1, grace_s=0)


def test_misuse_is_refused() -> None:
    lease = LocalLease(safety_margin_s=0.1, grace_s=1)
    with pytest.raises(ValueError):
        lease.renewed(sent_at=0, lease_ms=1000, now=0)
    assert lease.state is LeaseState.NEW and lease.next_deadline() is None
    assert lease.poll(5.0) == [] and not lease.holding_at(0.0)
    lease.open(0.0, 1000)
    with pytest.raises(ValueError):
        lease.open(0.0, 1000)
    with pytest.raises(ValueError):
        lease.renewed(sent_at=0.1, lease_ms=-1, now=0.2)


@given(st.lists(st.tuples(st.floats(0, 3), st.integers(0, 4000), st.booleans()), max_size=30))
def test_holding_implies_the_server_lease_has_not_ended(steps) -> None:
    """Whatever the order of answers, holding_at(now) implies now < earliest server end."""
    lease = LocalLease(safety_margin_s=0.2, grace_s=1.0)
    now = 0.0
    lease.open(now, 2000)
    server_end = 2.0  # the earliest the server's lease can end, from what the client saw
    for delay, lease_ms, answered in steps:
        sent_at = now
        now += delay
        if answered:
            lease.renewed(sent_at, lease_ms, now)
            server_end = max(server_end, sent_at + lease_ms / 1000)
        else:
            lease.poll(now)
        if lease.holding_at(now):
            assert now < server_end - 0.2 + 1e-9
        if lease.state is L:
            assert not lease.holding_at(now)


def test_the_latest_server_end_follows_the_answers_arrival() -> None:
    lease = LocalLease(safety_margin_s=0.5, grace_s=1.0)
    lease.open(100.0, 5000, now=100.3)
    assert lease.server_end_at_most == pytest.approx(105.305)
    lease.renewed(sent_at=101.0, lease_ms=5000, now=102.0)  # held for a while, say
    assert lease.expires_at == pytest.approx(105.5)  # safety counts from the send
    assert lease.server_end_at_most == pytest.approx(107.005)  # scheduling from arrival


def test_the_lease_module_reads_no_clock_and_does_no_io() -> None:
    import ast
    from pathlib import Path

    import lockservice.lease

    tree = ast.parse(Path(lockservice.lease.__file__).read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
                for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree)
                 if isinstance(n, ast.ImportFrom) and n.module}
    assert imported <= {"__future__", "enum", "dataclasses"}


def test_a_held_answer_counts_the_lease_from_send_time_plus_the_hold() -> None:
    """The server held the KeepAlive 3 s before answering: its answer was made at least
    3 s (less the rate slack) after the send, so the lease counts from there."""
    lease = opened(margin=0.5, sent_at=100.0, lease_ms=5000)
    lease.renewed(101.0, 5000, now=104.2, held_ms=3000)
    assert lease.expires_at == pytest.approx(101.0 + 3.0 * (1 - 0.001) + 5.0 - 0.5)
    lease.renewed(105.0, 5000, now=105.1, held_ms=0)  # a quick answer counts from its send
    assert lease.expires_at == pytest.approx(109.5)


def test_a_held_ms_longer_than_the_round_trip_counts_only_the_round_trip() -> None:
    lease = opened(margin=0.5, sent_at=100.0, lease_ms=5000)
    lease.renewed(101.0, 5000, now=102.0, held_ms=60_000)  # impossible: answered in 1 s
    assert lease.expires_at == pytest.approx(101.0 + 1.0 + 5.0 - 0.5)
    with pytest.raises(ValueError):
        lease.renewed(103.0, 5000, now=103.1, held_ms=-1)


@given(st.floats(0, 1e6), st.floats(0, 100), st.integers(0, 10**7), st.integers(0, 10**7))
def test_the_local_lease_never_ends_after_the_server_could_have_ended_it(
        sent: float, rtt: float, held_ms: int, lease_ms: int) -> None:
    """Whatever held_ms says, the local end is before answer arrival + lease_ms (the latest
    the server's lease can end) minus the margin."""
    lease = LocalLease(safety_margin_s=0.5, grace_s=1.0)
    lease.open(sent, 1000)
    now = sent + rtt
    lease.renewed(sent, lease_ms, now, held_ms)
    assert lease.expires_at <= max(sent + 0.5, now + lease_ms / 1000 - 0.5) + 1e-6
