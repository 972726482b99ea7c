"""Chubby §2.9: a new leader tells every session it took over (pure: the state machine).

The lock server proposes GrantFreshLeases when it becomes leader; applying it extends every
lease and queues a LEADER_CHANGED event for every session, whatever it watches, so each
client's next KeepAlive answers at once and says so.
"""

from __future__ import annotations

from lockservice import commands as c
from lockservice.events import EventKind
from lockservice.fsm import LockStateMachine
from lockservice.results import FreshLeases, SessionOpened


def test_fresh_leases_tell_every_session_the_leader_changed() -> None:
    fsm = LockStateMachine()
    opened = [fsm.execute(i, c.OpenSession(1_000, now=10)) for i in (1, 2)]
    assert all(isinstance(r, SessionOpened) for r in opened)
    fsm.execute(3, c.Watch(2, "jobs/"))
    assert fsm.execute(4, c.GrantFreshLeases(now=5_000)) == FreshLeases(2)
    for sid in (1, 2):
        pending = fsm.pending_events(sid)
        assert pending is not None
        assert [(e.kind, e.name) for e in pending.events] == [(EventKind.LEADER_CHANGED, "")]
        assert fsm.lease_end(sid) == 6_000
    fsm.check()
    restored = LockStateMachine()
    restored.restore(fsm.snapshot())
    assert restored.pending_events(1) == fsm.pending_events(1)
