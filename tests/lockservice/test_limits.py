"""Limits against abuse: each is a deterministic refusal with a clear reason, state unchanged."""

from __future__ import annotations

import pytest

from lockservice import commands as c
from lockservice.limits import Limits
from lockservice.results import Reason, Refused
from lockservice.sequencer import LockMode

from .harness import Log

X = LockMode.EXCLUSIVE
LIMITS = Limits(
    max_name_bytes=8,
    max_value_bytes=4,
    max_sessions=3,
    max_waiters_per_lock=1,
    max_locks_per_session=2,
    max_entries=1,
    max_lock_delay_ms=100,
    default_lock_delay_ms=50,
)


def refused(log: Log, cmd: c.Command, reason: Reason) -> None:
    before = log.fsm.snapshot()
    result = log(cmd)
    assert isinstance(result, Refused) and result.reason is reason, result
    assert result.detail
    assert log.fsm.snapshot() == before


@pytest.mark.parametrize("name", ["", "x" * 9, "é" * 5, "a\x00b"])
def test_bad_names_are_refused(name: str) -> None:
    log = Log(LIMITS)
    s = log.session()
    refused(log, c.Acquire(s, name, X, False, now=0), Reason.BAD_NAME)
    refused(log, c.Put(name, b""), Reason.BAD_NAME)


def test_each_limit_refuses() -> None:
    log = Log(LIMITS)
    a, b, d = log.session(), log.session(), log.session()
    refused(log, c.OpenSession(1000, now=0), Reason.TOO_MANY_SESSIONS)
    refused(log, c.Put("k", b"12345"), Reason.BAD_VALUE)
    log(c.Put("k", b"1234"))
    refused(log, c.Put("k2", b""), Reason.TOO_MANY_ENTRIES)
    refused(log, c.Acquire(a, "L", X, False, now=0, lock_delay_ms=101), Reason.BAD_LOCK_DELAY)
    log(c.Acquire(a, "L", X, False, now=0))
    log(c.Acquire(b, "L", X, True, now=0))
    refused(log, c.Acquire(d, "L", X, True, now=0), Reason.TOO_MANY_WAITERS)
    log(c.Acquire(a, "M", X, False, now=0))
    refused(log, c.Acquire(a, "N", X, False, now=0), Reason.TOO_MANY_LOCKS)


def test_a_name_that_is_not_utf8_is_refused_by_the_table_itself() -> None:
    """The codec cannot carry a lone surrogate; a caller using execute() directly is refused."""
    log = Log(LIMITS)
    s = log.session()
    before = log.fsm.snapshot()
    result = log.fsm.execute(99, c.Acquire(s, "\ud800", X, False, now=0))
    assert isinstance(result, Refused) and result.reason is Reason.BAD_NAME
    assert log.fsm.snapshot() == before


def test_limits_that_contradict_each_other_are_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="default_lock_delay_ms"):
        Limits(default_lock_delay_ms=10, max_lock_delay_ms=5)
    with pytest.raises(ValueError, match="min_ttl_ms"):
        Limits(min_ttl_ms=0)


def test_sessions_per_client_are_counted_and_freed_on_close_and_expiry() -> None:
    log = Log(Limits(max_sessions_per_client=2))
    opened = [log(c.OpenClientSession(1000, 0, "address:10.0.0.1")) for _ in range(2)]
    refused(log, c.OpenClientSession(1000, 0, "address:10.0.0.1"),
            Reason.TOO_MANY_CLIENT_SESSIONS)
    log(c.OpenClientSession(1000, 0, "address:10.0.0.2"))  # another client is not counted
    log(c.OpenSession(1000, now=0))  # nor is a session opened without a client
    assert log.fsm.client_sessions == {"address:10.0.0.1": 2, "address:10.0.0.2": 1}
    log(c.CloseSession(opened[0].session))  # type: ignore[union-attr]
    log(c.OpenClientSession(5000, 0, "address:10.0.0.1"))
    refused(log, c.OpenClientSession(1000, 0, "address:10.0.0.1"),
            Reason.TOO_MANY_CLIENT_SESSIONS)
    log(c.ExpireSessions(now=1000))  # all but the 5 s session end
    assert log.fsm.client_sessions == {"address:10.0.0.1": 1}
    log(c.OpenClientSession(1000, 1000, "address:10.0.0.1"))


def test_a_client_id_longer_than_the_limit_is_refused() -> None:
    log = Log(Limits(max_client_bytes=8))
    refused(log, c.OpenClientSession(1000, 0, "x" * 9), Reason.BAD_COMMAND)
    log(c.OpenClientSession(1000, 0, "x" * 8))
