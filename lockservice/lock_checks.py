"""`check()` of the lock table: every rule fsm.py keeps, verified in O(size of the table)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lockservice.errors import InvariantViolation
from lockservice.sequencer import LockMode

if TYPE_CHECKING:
    from lockservice.fsm import LockStateMachine


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise InvariantViolation(message)


def check_table(t: LockStateMachine) -> None:
    for name, lock in t.locks.items():
        _require(lock.name == name, f"lock record {lock.name!r} filed under {name!r}")
        modes = {h.sequencer.mode for h in lock.holders.values()}
        _require(len(modes) <= 1, f"{name!r}: exclusive and shared holders together")
        if LockMode.EXCLUSIVE in modes:
            _require(len(lock.holders) == 1, f"{name!r}: {len(lock.holders)} exclusive holders")
        last = 0
        for sid, h in lock.holders.items():
            seq = h.sequencer
            _require(seq.name == name and seq.session == sid, f"{name!r}: holder {sid} has {seq}")
            _require(
                last < seq.generation <= t.generation,
                f"{name!r}: generation {seq.generation} out of order",
            )
            last = seq.generation
            s = t.sessions.get(sid)
            _require(s is not None and name in s.held, f"{name!r}: holder {sid} is not a session")
        waiting = [w.session for w in lock.waiters]
        _require(len(set(waiting)) == len(waiting), f"{name!r}: a session waits twice")
        for w in lock.waiters:
            s = t.sessions.get(w.session)
            _require(
                s is not None and name in s.waiting,
                f"{name!r}: waiter {w.session} is not a session waiting for it",
            )
            _require(w.session not in lock.holders, f"{name!r}: {w.session} holds and waits")
        delayed = lock.delay_until > t.clock
        _require(delayed == (name in t.delayed), f"{name!r}: delayed set out of date")
        if lock.waiters and not delayed:
            _require(
                not lock.compatible(lock.waiters[0].mode),
                f"{name!r}: the first waiter could be granted (lost wake-up)",
            )
        _require(not lock.idle() or delayed, f"{name!r}: idle record kept")
    _require(t.delayed <= t.locks.keys(), "delayed set names a missing lock")
    for sid, s in t.sessions.items():
        _require(s.id == sid, f"session {s.id} filed under {sid}")
        for name in s.held:
            lock = t.locks.get(name)
            _require(lock is not None and sid in lock.holders, f"session {sid}: held {name!r}")
        for name in s.waiting:
            lock = t.locks.get(name)
            _require(
                lock is not None and any(w.session == sid for w in lock.waiters),
                f"session {sid}: waiting {name!r}",
            )
        for name in s.ephemerals:
            e = t.entries.get(name)
            _require(
                e is not None and e.ephemeral_session == sid, f"session {sid}: ephemeral {name!r}"
            )
        _require(len(set(s.watches)) == len(s.watches), f"session {sid}: duplicate watch")
        _require(len(s.events) <= t.limits.max_events_per_session, f"session {sid}: events")
        seqs = [e.seq for e in s.events]
        _require(
            seqs == sorted(set(seqs)) and all(0 < q <= s.last_event_seq for q in seqs),
            f"session {sid}: event numbers",
        )
    index: dict[str, set[int]] = {}
    for sid, s in t.sessions.items():
        for p in s.watches:
            index.setdefault(p, set()).add(sid)
    _require(index == t.watchers, "watch index out of date")
    per_client: dict[str, int] = {}
    for s in t.sessions.values():
        if s.client:
            per_client[s.client] = per_client.get(s.client, 0) + 1
    _require(per_client == t.client_sessions, "sessions-per-client count out of date")
    for name, e in t.entries.items():
        _require(0 < e.version <= t.revision, f"entry {name!r}: version {e.version}")
        if e.ephemeral_session is not None:
            s = t.sessions.get(e.ephemeral_session)
            _require(
                s is not None and name in s.ephemerals,
                f"entry {name!r}: ephemeral of dead session {e.ephemeral_session}",
            )
