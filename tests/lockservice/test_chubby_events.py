"""Chubby §2.5: events for watched names, delivered per session through KeepAlive."""

from __future__ import annotations

from lockservice import commands as c
from lockservice.events import EventKind
from lockservice.limits import Limits
from lockservice.results import Reason
from lockservice.sequencer import LockMode

from .harness import Log

X = LockMode.EXCLUSIVE


def kinds(log: Log, session: int) -> list[tuple[EventKind, str]]:
    pending = log.fsm.pending_events(session)
    assert pending is not None
    return [(e.kind, e.name) for e in pending.events]


def test_watchers_see_lock_and_entry_events_for_their_prefix_only() -> None:
    log = Log()
    w, other, h = log.session(), log.session(), log.session()
    log(c.Watch(w, "jobs/"))
    log(c.Watch(other, "else/"))
    log(c.Acquire(h, "jobs/master", X, False, now=0))
    log(c.Put("jobs/config", b"v1"))
    log(c.Release(h, "jobs/master"))
    log(c.Delete("jobs/config"))
    log(c.Put("unwatched", b"x"))
    assert kinds(log, w) == [
        (EventKind.LOCK_ACQUIRED, "jobs/master"),
        (EventKind.ENTRY_CHANGED, "jobs/config"),
        (EventKind.LOCK_RELEASED, "jobs/master"),
        (EventKind.ENTRY_DELETED, "jobs/config"),
    ]
    assert kinds(log, other) == []


def test_keepalive_ack_forgets_delivered_events() -> None:
    log = Log()
    w = log.session()
    log(c.Watch(w, ""))
    log(c.Put("a", b"1"))
    log(c.Put("b", b"2"))
    first = log.fsm.pending_events(w).events[0]  # type: ignore[union-attr]
    log(c.KeepAlive(w, now=1, ack=first.seq))
    assert kinds(log, w) == [(EventKind.ENTRY_CHANGED, "b")]


def test_waiter_is_told_of_its_grant_without_watching() -> None:
    log = Log()
    a, b = log.session(), log.session()
    log(c.Acquire(a, "L", X, False, now=0))
    log(c.Acquire(b, "L", X, True, now=0))
    log(c.Release(a, "L"))
    [event] = log.fsm.pending_events(b).events  # type: ignore[union-attr]
    assert (event.kind, event.name, event.session) == (EventKind.LOCK_GRANTED, "L", b)
    assert event.generation == log.fsm.holders("L")[0].generation


def test_session_expiry_is_an_event_for_watchers_of_its_locks_and_ephemerals() -> None:
    log = Log()
    w, h = log.session(ttl_ms=100_000), log.session(ttl_ms=1000)
    log(c.Watch(w, "svc/"))
    log(c.Acquire(h, "svc/lock", X, False, now=0))
    log(c.Put("svc/leader", b"h", ephemeral_session=h))
    log(c.KeepAlive(w, now=0, ack=10))
    log(c.ExpireSessions(now=1000))
    assert kinds(log, w) == [
        (EventKind.SESSION_EXPIRED, "svc/lock"),
        (EventKind.ENTRY_DELETED, "svc/leader"),
    ]
    assert log.fsm.get("svc/leader") is None


def test_event_queue_is_bounded_oldest_dropped_and_counted() -> None:
    log = Log(Limits(max_events_per_session=3))
    w = log.session()
    log(c.Watch(w, ""))
    for i in range(5):
        log(c.Put(f"k{i}", b""))
    pending = log.fsm.pending_events(w)
    assert pending is not None and pending.dropped == 2
    assert [e.name for e in pending.events] == ["k2", "k3", "k4"]
    assert [e.seq for e in pending.events] == [3, 4, 5]


def test_watch_limits_and_unknown_sessions() -> None:
    log = Log(Limits(max_watches_per_session=2))
    w = log.session()
    log(c.Watch(w, "a"))
    log(c.Watch(w, "a"))  # idempotent
    log(c.Watch(w, "b"))
    assert log(c.Watch(w, "c")).reason is Reason.TOO_MANY_WATCHES  # type: ignore[union-attr]
    assert log(c.Unwatch(w, "c")).reason is Reason.NOT_WATCHING  # type: ignore[union-attr]
    assert log(c.Watch(42, "a")).reason is Reason.UNKNOWN_SESSION  # type: ignore[union-attr]
    assert log.fsm.pending_events(42) is None


def test_a_session_watching_overlapping_prefixes_gets_each_event_once() -> None:
    log = Log()
    w, other = log.session(), log.session()
    for prefix in ("", "a", "a/b"):
        log(c.Watch(w, prefix))
    log(c.Watch(other, "a/b/c/d"))
    log(c.Put("a/b/c", b"1"))
    assert kinds(log, w) == [(EventKind.ENTRY_CHANGED, "a/b/c")]
    assert kinds(log, other) == []
    log(c.Unwatch(w, ""))
    log(c.CloseSession(other))
    assert log.fsm.watchers == {"a": {w}, "a/b": {w}}
