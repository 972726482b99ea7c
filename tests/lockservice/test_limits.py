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
