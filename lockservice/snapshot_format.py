"""The snapshot encoding of the lock table (msgpack, versioned).

    snapshot := [MAGIC, VERSION, clock, generation, revision, sessions, locks, entries]
    session  := [id, ttl_ms, expires_at, [prefix...], last_event_seq, dropped, [event...],
                 client]                                     (client: VERSION 2 only)
    event    := [seq, kind, name, session, generation, version]
    lock     := [name, delay_until, [holder...], [waiter...]]
    holder   := [session, mode, generation, lock_delay_ms]      (grant order)
    waiter   := [session, mode, lock_delay_ms]                  (FIFO order)
    entry    := [name, value, version, ephemeral_session or nil]

Sessions are sorted by id, locks and entries by name, so equal states give equal bytes.
What a session holds, waits for and owns is derived from locks and entries on load. MAGIC
and VERSION are on disk: do not change; a new layout takes a new VERSION. `dump` writes
VERSION 2 (each session ends with its client id, "" when not counted per client);
`load_into` also reads VERSION 1 (no client: ""). It raises SnapshotError for anything
`dump` never wrote; fsm.restore then runs check().
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

import msgpack

from lockservice.errors import SnapshotError
from lockservice.events import Event, EventKind
from lockservice.records import EntryRecord, Holder, LockRecord, SessionRecord, Waiter
from lockservice.sequencer import LockMode, Sequencer

if TYPE_CHECKING:
    from lockservice.fsm import LockStateMachine

MAGIC = "ringlock-lockfsm"
VERSION = 2
READS = (1, 2)  # the versions load_into accepts
# Times are a leader's now (< 2**63) plus a TTL or lock-delay, so they may pass 2**63.
_U64 = 2**64 - 1


def dump(t: LockStateMachine) -> bytes:
    sessions = [
        [
            s.id,
            s.ttl_ms,
            s.expires_at,
            list(s.watches),
            s.last_event_seq,
            s.dropped,
            [[e.seq, int(e.kind), e.name, e.session, e.generation, e.version] for e in s.events],
            s.client,
        ]
        for s in sorted(t.sessions.values(), key=lambda s: s.id)
    ]
    locks = [
        [
            lock.name,
            lock.delay_until,
            [
                [
                    h.sequencer.session,
                    int(h.sequencer.mode),
                    h.sequencer.generation,
                    h.lock_delay_ms,
                ]
                for h in lock.holders.values()
            ],
            [[w.session, int(w.mode), w.lock_delay_ms] for w in lock.waiters],
        ]
        for _, lock in sorted(t.locks.items())
    ]
    entries = [[n, e.value, e.version, e.ephemeral_session] for n, e in sorted(t.entries.items())]
    return msgpack.packb(
        [MAGIC, VERSION, t.clock, t.generation, t.revision, sessions, locks, entries],
        use_bin_type=True,
    )


def _arr(v: Any, n: int | None, what: str) -> list[Any]:
    if type(v) is not list or (n is not None and len(v) != n):
        raise SnapshotError(f"{what}: expected an array" + (f" of {n}" if n else ""))
    return v


def _u(v: Any, what: str) -> int:
    if type(v) is not int or not 0 <= v <= _U64:
        raise SnapshotError(f"{what}: expected an integer in 0..2**64-1")
    return v


def _s(v: Any, what: str) -> str:
    if type(v) is not str:
        raise SnapshotError(f"{what}: expected a string")
    return v


def _mode(v: Any, what: str) -> LockMode:
    if type(v) is not int or v not in LockMode._value2member_map_:
        raise SnapshotError(f"{what}: expected a lock mode")
    return LockMode(v)


def load_into(t: LockStateMachine, data: bytes) -> None:
    """Fill the empty table `t` from `data`; raises SnapshotError for hostile bytes."""
    if type(data) is not bytes:
        raise SnapshotError("a snapshot is bytes")
    try:
        raw = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    except Exception as exc:  # msgpack raises several types for bad input
        raise SnapshotError(f"snapshot is not msgpack: {type(exc).__name__}") from None
    top = _arr(raw, None, "snapshot")
    if len(top) < 2 or top[0] != MAGIC:
        raise SnapshotError("not a lock table snapshot (bad magic)")
    version = top[1]
    if type(version) is not int or version not in READS:
        raise SnapshotError(f"snapshot version {version!r}, this code reads {READS}")
    _, _, clock, generation, revision, sessions, locks, entries = _arr(top, 8, "snapshot")
    t.clock, t.generation, t.revision = (
        _u(clock, "clock"),
        _u(generation, "generation"),
        _u(revision, "revision"),
    )
    for i, raw_s in enumerate(_arr(sessions, None, "sessions")):
        fields = _arr(raw_s, 7 if version == 1 else 8, f"session {i}")
        sid, ttl, expires, watches, last_seq, dropped, events = fields[:7]
        client = "" if version == 1 else fields[7]
        if type(client) is not str:
            raise SnapshotError(f"session {i}: client is not a string")
        s = SessionRecord(_u(sid, "session id"), _u(ttl, "ttl"), _u(expires, "expires_at"),
                          client=client)
        if s.id in t.sessions:
            raise SnapshotError(f"session {s.id} twice")
        s.watches = [_s(p, "watch") for p in _arr(watches, None, "watches")]
        for p in s.watches:
            t.watchers.setdefault(p, set()).add(s.id)
        s.last_event_seq, s.dropped = _u(last_seq, "last_event_seq"), _u(dropped, "dropped")
        evs: deque[Event] = deque()
        for raw_e in _arr(events, None, "events"):
            seq, kind, name, esid, gen, ver = _arr(raw_e, 6, "event")
            if type(kind) is not int or kind not in EventKind._value2member_map_:
                raise SnapshotError("event kind")
            evs.append(
                Event(
                    _u(seq, "seq"),
                    EventKind(kind),
                    _s(name, "event name"),
                    _u(esid, "event session"),
                    _u(gen, "event generation"),
                    _u(ver, "event version"),
                )
            )
        s.events = evs
        t.sessions[s.id] = s
        if client:
            t.client_sessions[client] = t.client_sessions.get(client, 0) + 1
    for raw_l in _arr(locks, None, "locks"):
        name, delay_until, holders, waiters = _arr(raw_l, 4, "lock")
        lock = LockRecord(_s(name, "lock name"), delay_until=_u(delay_until, "delay_until"))
        if lock.name in t.locks:
            raise SnapshotError(f"lock {lock.name!r} twice")
        for raw_h in _arr(holders, None, "holders"):
            sid, mode, gen, delay = _arr(raw_h, 4, "holder")
            seq = Sequencer(lock.name, _mode(mode, "mode"), _u(gen, "generation"), _u(sid, "sid"))
            if seq.session in lock.holders or seq.session not in t.sessions:
                raise SnapshotError(f"lock {lock.name!r}: bad holder {seq.session}")
            lock.holders[seq.session] = Holder(seq, _u(delay, "lock_delay_ms"))
            t.sessions[seq.session].held.add(lock.name)
        for raw_w in _arr(waiters, None, "waiters"):
            sid, mode, delay = _arr(raw_w, 3, "waiter")
            w = Waiter(_u(sid, "sid"), _mode(mode, "mode"), _u(delay, "lock_delay_ms"))
            if w.session not in t.sessions or lock.name in t.sessions[w.session].waiting:
                raise SnapshotError(f"lock {lock.name!r}: bad waiter {w.session}")
            lock.waiters.append(w)
            t.sessions[w.session].waiting.add(lock.name)
        if lock.delay_until > t.clock:
            t.delayed.add(lock.name)
        t.locks[lock.name] = lock
    for raw_e in _arr(entries, None, "entries"):
        name, value, version, owner = _arr(raw_e, 4, "entry")
        name = _s(name, "entry name")
        if type(value) is not bytes:
            raise SnapshotError(f"entry {name!r}: value is not bytes")
        if name in t.entries:
            raise SnapshotError(f"entry {name!r} twice")
        if owner is not None:
            owner = _u(owner, "ephemeral_session")
            if owner not in t.sessions:
                raise SnapshotError(f"entry {name!r}: owner {owner} is not a session")
            t.sessions[owner].ephemerals.add(name)
        t.entries[name] = EntryRecord(value, _u(version, "version"), owner)
