"""Chubby §2.8: sessions, leases, KeepAlive, and a new master's fresh leases."""

from __future__ import annotations

from lockservice import commands as c
from lockservice.results import (
    FreshLeases,
    Granted,
    LeaseExtended,
    Reason,
    Refused,
    SessionClosed,
    SessionOpened,
    SessionsExpired,
)
from lockservice.sequencer import LockMode

from .harness import Log

X = LockMode.EXCLUSIVE


def test_session_id_is_the_log_index_of_its_open() -> None:
    log = Log()
    log(c.Put("a", b"1"))
    assert log(c.OpenSession(1000, now=5)) == SessionOpened(session=2, expires_at=1005)


def test_keepalive_extends_the_lease_from_the_leaders_now() -> None:
    log = Log()
    s = log.session(ttl_ms=1000, now=0)
    assert log(c.KeepAlive(s, now=600)) == LeaseExtended(1600)
    assert log(c.ExpireSessions(now=1200)) == SessionsExpired(())
    assert log(c.ExpireSessions(now=1600)) == SessionsExpired((s,))
    assert log.fsm.lease_end(s) is None


def test_lease_ended_session_keeps_its_locks_until_expired_but_cannot_act() -> None:
    log = Log()
    s = log.session(ttl_ms=1000, now=0)
    assert isinstance(log(c.Acquire(s, "L", X, False, now=0)), Granted)
    assert log(c.KeepAlive(s, now=1000)) == Refused(
        Reason.LEASE_ENDED, f"session {s}'s lease ended at 1000"
    )
    assert log.fsm.holders("L")[0].session == s  # jeopardy: still the holder
    assert isinstance(log(c.Acquire(s, "M", X, False, now=1000)), Refused)
    assert log(c.ExpireSessions(now=1000)) == SessionsExpired((s,))
    assert log.fsm.holders("L") == ()


def test_expire_session_refuses_a_lease_that_has_not_ended() -> None:
    log = Log()
    s = log.session(ttl_ms=1000, now=0)
    log(c.ExpireSessions(now=999))  # the clock is at 999, nothing to expire
    before = log.fsm.snapshot()
    refused = log(c.ExpireSession(s, now=999))
    assert isinstance(refused, Refused) and refused.reason is Reason.LEASE_NOT_ENDED
    assert log.fsm.snapshot() == before
    assert log(c.ExpireSession(s, now=1000)) == SessionsExpired((s,))


def test_new_leader_grants_fresh_leases_before_expiring_any() -> None:
    """A leader change (with a gap longer than the TTL) never kills a healthy session."""
    log = Log()
    s = log.session(ttl_ms=1000, now=0)
    log(c.Acquire(s, "L", X, False, now=0))
    # The old leader died at t=500; the new one is elected at t=5000.
    assert log(c.GrantFreshLeases(now=5000)) == FreshLeases(1)
    assert log(c.ExpireSessions(now=5000)) == SessionsExpired(())
    assert log.fsm.holders("L")[0].session == s
    assert log(c.KeepAlive(s, now=5500)) == LeaseExtended(6500)


def test_clock_never_moves_backwards_under_a_leader_with_a_slow_clock() -> None:
    log = Log()
    s = log.session(ttl_ms=1000, now=10_000)
    assert log(c.KeepAlive(s, now=3)) == LeaseExtended(11_000)
    assert log.fsm.clock == 10_000


def test_close_releases_locks_at_once_without_lock_delay() -> None:
    log = Log()
    a, b = log.session(), log.session()
    log(c.Acquire(a, "L", X, False, now=0))
    assert log(c.CloseSession(a)) == SessionClosed(a)
    assert isinstance(log(c.Acquire(b, "L", X, False, now=0)), Granted)


def test_unknown_and_bad_ttl_sessions_are_refused() -> None:
    log = Log()
    assert log(c.KeepAlive(99, now=0)).reason is Reason.UNKNOWN_SESSION  # type: ignore[union-attr]
    assert log(c.OpenSession(0, now=0)).reason is Reason.BAD_TTL  # type: ignore[union-attr]
    assert log(c.OpenSession(10**12, now=0)).reason is Reason.BAD_TTL  # type: ignore[union-attr]
    assert log.fsm.sessions == {}
