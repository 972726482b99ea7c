"""Chubby §2.4: exclusive and shared locks, sequencers, lock-delay; plus FIFO waiting."""

from __future__ import annotations

from lockservice import commands as c
from lockservice.results import (
    Granted,
    Queued,
    Reason,
    Refused,
    Released,
    SequencerStatus,
    SessionsExpired,
    WaitCancelled,
)
from lockservice.sequencer import LockMode, Sequencer

from .harness import Log

X, S = LockMode.EXCLUSIVE, LockMode.SHARED


def granted(result: object) -> Sequencer:
    assert isinstance(result, Granted), result
    return result.sequencer


def test_exclusive_lock_has_one_holder_and_refuses_or_queues_the_rest() -> None:
    log = Log()
    a, b, d = log.session(), log.session(), log.session()
    seq = granted(log(c.Acquire(a, "L", X, False, now=0)))
    assert seq == Sequencer("L", X, 1, a)
    assert log(c.Acquire(b, "L", X, False, now=0)) == Refused(
        Reason.LOCK_BUSY, "'L' is held or has waiters"
    )
    assert log(c.Acquire(b, "L", S, True, now=0)) == Queued(0)
    assert log(c.Acquire(d, "L", X, True, now=0)) == Queued(1)
    assert log.fsm.holders("L") == (seq,)


def test_shared_holders_together_never_with_an_exclusive_one() -> None:
    log = Log()
    a, b, d = log.session(), log.session(), log.session()
    granted(log(c.Acquire(a, "L", S, False, now=0)))
    granted(log(c.Acquire(b, "L", S, False, now=0)))
    assert log(c.Acquire(d, "L", X, False, now=0)).reason is Reason.LOCK_BUSY  # type: ignore[union-attr]
    assert len(log.fsm.holders("L")) == 2


def test_shared_request_behind_a_queued_exclusive_waits_fifo_no_starvation() -> None:
    log = Log()
    a, b, d, e = (log.session() for _ in range(4))
    granted(log(c.Acquire(a, "L", S, False, now=0)))
    assert log(c.Acquire(b, "L", X, True, now=0)) == Queued(0)
    # Compatible with the shared holder, but b came first.
    assert log(c.Acquire(d, "L", S, True, now=0)) == Queued(1)
    assert log(c.Acquire(e, "L", S, True, now=0)) == Queued(2)
    log(c.Release(a, "L"))
    assert [h.session for h in log.fsm.holders("L")] == [b]
    log(c.Release(b, "L"))
    assert [h.session for h in log.fsm.holders("L")] == [d, e]  # both shared, in order


def test_cancel_wait_of_the_head_lets_compatible_waiters_in() -> None:
    log = Log()
    a, b, d = log.session(), log.session(), log.session()
    granted(log(c.Acquire(a, "L", S, False, now=0)))
    log(c.Acquire(b, "L", X, True, now=0))
    log(c.Acquire(d, "L", S, True, now=0))
    assert log(c.CancelWait(b, "L")) == WaitCancelled("L")
    assert [h.session for h in log.fsm.holders("L")] == [a, d]
    assert log(c.CancelWait(b, "L")).reason is Reason.NOT_WAITING  # type: ignore[union-attr]


def test_sequencer_generations_strictly_increase_per_lock_and_go_stale() -> None:
    log = Log()
    a, b = log.session(), log.session()
    first = granted(log(c.Acquire(a, "L", X, False, now=0)))
    assert log(c.CheckSequencer(first)) == SequencerStatus(True)
    assert log(c.Release(a, "L")) == Released("L")
    assert log(c.CheckSequencer(first)) == SequencerStatus(False)
    second = granted(log(c.Acquire(b, "L", X, False, now=0)))
    third = granted(log(c.Acquire(a, "M", X, False, now=0)))
    assert first.generation < second.generation < third.generation
    assert log.fsm.check_sequencer(second)
    # A forged sequencer with the right generation but another session is not current.
    assert not log.fsm.check_sequencer(Sequencer("L", X, second.generation, a))


def test_retried_acquire_returns_the_same_grant() -> None:
    log = Log()
    a = log.session()
    seq = granted(log(c.Acquire(a, "L", X, False, now=0)))
    assert granted(log(c.Acquire(a, "L", X, False, now=0))) == seq
    assert log(c.Acquire(a, "L", S, False, now=0)).reason is Reason.ALREADY_HOLDER  # type: ignore[union-attr]


def test_lock_delay_after_the_holders_session_expires() -> None:
    """The lock stays unavailable for lock_delay_ms after its holder's session expired."""
    log = Log()
    a, b = log.session(ttl_ms=1000), log.session(ttl_ms=100_000)
    log(c.Acquire(a, "L", X, False, now=0, lock_delay_ms=5000))
    assert log(c.ExpireSessions(now=1000)) == SessionsExpired((a,))
    refused = log(c.Acquire(b, "L", X, False, now=5999))
    assert isinstance(refused, Refused) and refused.reason is Reason.LOCK_DELAY
    assert isinstance(log(c.Acquire(b, "L", X, False, now=6000)), Granted)


def test_lock_delay_ends_by_time_passing_and_grants_the_waiter() -> None:
    log = Log()
    a, b = log.session(ttl_ms=1000), log.session(ttl_ms=100_000)
    log(c.Acquire(a, "L", X, False, now=0, lock_delay_ms=5000))
    log(c.ExpireSessions(now=1000))
    assert log(c.Acquire(b, "L", X, True, now=1000)) == Queued(0)
    log(c.KeepAlive(b, now=5999))
    assert log.fsm.holders("L") == ()
    log(c.KeepAlive(b, now=6000))  # any command carrying now moves time
    assert [h.session for h in log.fsm.holders("L")] == [b]


def test_no_lock_delay_after_a_clean_release_and_default_applies() -> None:
    log = Log()
    a, b = log.session(ttl_ms=1000), log.session(ttl_ms=100_000)
    log(c.Acquire(a, "L", X, False, now=0))
    log(c.Release(a, "L"))
    granted(log(c.Acquire(b, "L", X, False, now=0)))
    log(c.Release(b, "L"))
    log(c.Acquire(a, "M", X, False, now=0))  # default lock-delay
    log(c.ExpireSessions(now=1000))
    delay = log.fsm.limits.default_lock_delay_ms
    assert log(c.Acquire(b, "M", X, False, now=1000 + delay - 1)).reason is Reason.LOCK_DELAY  # type: ignore[union-attr]
    granted(log(c.Acquire(b, "M", X, False, now=1000 + delay)))


def test_expiry_frees_exactly_the_expired_sessions_locks() -> None:
    log = Log()
    a, b = log.session(ttl_ms=1000), log.session(ttl_ms=100_000)
    log(c.Acquire(a, "A", X, False, now=0, lock_delay_ms=0))
    log(c.Acquire(b, "B", X, False, now=0))
    log(c.Acquire(a, "S", S, False, now=0, lock_delay_ms=0))
    log(c.Acquire(b, "S", S, False, now=0))
    log(c.ExpireSessions(now=1000))
    assert log.fsm.holders("A") == ()
    assert [h.session for h in log.fsm.holders("B")] == [b]
    assert [h.session for h in log.fsm.holders("S")] == [b]


def test_release_by_a_non_holder_is_refused_and_changes_nothing() -> None:
    log = Log()
    a, b = log.session(), log.session()
    log(c.Acquire(a, "L", X, False, now=0))
    before = log.fsm.snapshot()
    assert log(c.Release(b, "L")).reason is Reason.NOT_HOLDER  # type: ignore[union-attr]
    assert log(c.Release(b, "nope")).reason is Reason.NOT_HOLDER  # type: ignore[union-attr]
    assert log.fsm.snapshot() == before


def test_a_lock_freed_by_expiry_is_not_granted_to_a_waiter_expiring_with_it() -> None:
    log = Log()
    a, b = log.session(ttl_ms=1000), log.session(ttl_ms=1000)
    log(c.Acquire(a, "L", X, False, now=0, lock_delay_ms=0))
    log(c.Acquire(b, "L", X, True, now=0))
    assert log(c.ExpireSessions(now=1000)) == SessionsExpired((a, b))
    assert log.fsm.generation == 1  # no grant to b on its way out
    assert "L" not in log.fsm.locks
