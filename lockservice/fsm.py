"""The replicated lock table: Chubby's sessions, locks, sequencers, entries and events.

Theory of operation. `LockStateMachine` is the `raft.statemachine.StateMachine` the Raft
driver applies committed commands into. It is deterministic: the same log gives the same
state and the same results on every replica. It reads no clock: time enters only as the
`now` (ms, the proposing leader's clock) of the commands that carry one, and the table keeps
`clock = max(clock, now)` so a new leader whose clock is behind never moves time backwards.
Rules it keeps:

- Sessions (Chubby §2.8): the id is the log index of the OpenSession that made it. A lease
  ends at `expires_at`; KeepAlive extends it. A session whose lease ended keeps its locks
  (its client is in jeopardy) until the leader proposes its expiry, and may not acquire,
  keep alive or write. A new leader proposes GrantFreshLeases before any expiry; it also
  tells every session, with a LEADER_CHANGED event (Chubby §2.9's master fail-over event).
- CloseSession releases locks and ephemeral entries at once; expiry releases them with the
  holder's lock-delay (Chubby §2.4): no grant of that lock before `clock >= delay_until`.
- Locks: EXCLUSIVE or SHARED; waiters are served in FIFO order, a request queues behind any
  earlier waiter even if it is compatible with the holders, so nobody starves.
  `_promote` runs whenever holders, waiters or the lock-delay of a lock change.
- Every grant takes the next value of one table-wide generation counter: generations
  strictly increase per lock name.
- Entries: `version` is the table-wide revision of the write that made it; versions never
  repeat, so compare-and-set has no ABA. Version 0 means "must not exist".
- `apply()` never raises; see lockservice/results.py for the refusal rule.

Complexity: each command is O(size of what it touches); routing an event costs
O(min(distinct watched prefixes, len(name))) dictionary look-ups plus one append per
receiving session, so idle sessions that watch nothing cost nothing.
`check()` is O(size of the table).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from lockservice import commands as c
from lockservice import snapshot_format
from lockservice.errors import CommandDecodeError, InvariantViolation, SnapshotError
from lockservice.events import Event, EventKind, PendingEvents
from lockservice.limits import Limits
from lockservice.lock_checks import check_table
from lockservice.records import EntryRecord, Holder, LockRecord, SessionRecord, Waiter
from lockservice.results import (
    Deleted,
    Entry,
    EntryValue,
    FreshLeases,
    Granted,
    LeaseExtended,
    Queued,
    Reason,
    Refused,
    Released,
    Result,
    SequencerStatus,
    SessionClosed,
    SessionOpened,
    SessionsExpired,
    Unwatched,
    WaitCancelled,
    Watching,
    Written,
)
from lockservice.sequencer import LockMode, Sequencer

log = logging.getLogger(__name__)


class LockStateMachine:
    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self.clock = 0  # Invariant: never decreases
        self.generation = 0  # the last generation granted
        self.revision = 0  # the last entry version written
        self.sessions: dict[int, SessionRecord] = {}
        self.locks: dict[str, LockRecord] = {}  # Invariant: idle records only while delayed
        self.entries: dict[str, EntryRecord] = {}
        self.delayed: set[str] = set()  # Invariant: locks with delay_until > clock
        # Invariant: watchers[p] is the set of sessions whose watches include p (derived).
        self.watchers: dict[str, set[int]] = {}
        # Invariant: client_sessions[c] is the number of sessions whose client is c (derived;
        # clients with none are absent).
        self.client_sessions: dict[str, int] = {}
        # Not state: the lock server's hook, told of every event queued for a session while
        # it is being applied (it wakes long-polls and waiting acquires). It must not raise.
        self.event_listener: Callable[[int, Event], None] | None = None
        # Not state either: told of every event of the table as it is emitted, watched or
        # not (kind, name): a fencing cache forgets what it knew about a lock. Must not raise.
        self.change_listener: Callable[[EventKind, str], None] | None = None

    # -- the StateMachine protocol ------------------------------------------------------

    def apply(self, index: int, command: bytes) -> Result:
        """Decode and execute one committed command; never raises."""
        try:
            cmd = c.decode(command)
        except CommandDecodeError as exc:
            log.warning("refused undecodable command at index %d: %s", index, exc)
            return Refused(Reason.BAD_COMMAND, str(exc))
        return self.execute(index, cmd)

    def snapshot(self) -> bytes:
        return snapshot_format.dump(self)

    def restore(self, data: bytes) -> None:
        """Replace the state with the snapshot's; raises SnapshotError and keeps the old one."""
        fresh = LockStateMachine(self.limits)
        snapshot_format.load_into(fresh, data)
        try:
            fresh.check()
        except InvariantViolation as exc:
            raise SnapshotError(f"snapshot breaks a rule of the lock table: {exc}") from None
        for attr in (
            "clock",
            "generation",
            "revision",
            "sessions",
            "locks",
            "entries",
            "delayed",
            "watchers",
            "client_sessions",
        ):
            setattr(self, attr, getattr(fresh, attr))

    def check(self) -> None:
        """Raise InvariantViolation if a rule of the table is broken. O(size of the table)."""
        check_table(self)

    # -- reads (linearizable when the caller waited for a ReadIndex) ----------------------

    def get(self, name: str) -> Entry | None:
        e = self.entries.get(name)
        return None if e is None else Entry(name, e.value, e.version, e.ephemeral_session)

    def check_sequencer(self, sequencer: Sequencer) -> bool:
        """Whether `sequencer` is still the grant its session holds (Chubby §2.4)."""
        lock = self.locks.get(sequencer.name)
        holder = None if lock is None else lock.holders.get(sequencer.session)
        return holder is not None and holder.sequencer == sequencer

    def holders(self, name: str) -> tuple[Sequencer, ...]:
        lock = self.locks.get(name)
        return () if lock is None else tuple(h.sequencer for h in lock.holders.values())

    def waiters(self, name: str) -> tuple[tuple[int, LockMode], ...]:
        lock = self.locks.get(name)
        return () if lock is None else tuple((w.session, w.mode) for w in lock.waiters)

    def pending_events(self, session: int) -> PendingEvents | None:
        """The events not yet acknowledged by a KeepAlive; None for an unknown session."""
        s = self.sessions.get(session)
        return None if s is None else PendingEvents(tuple(s.events), s.dropped)

    def lease_end(self, session: int) -> int | None:
        s = self.sessions.get(session)
        return None if s is None else s.expires_at

    # -- commands -----------------------------------------------------------------------

    def execute(self, index: int, cmd: c.Command) -> Result:
        """Execute a decoded command committed at `index`; returns a result, never raises.

        Requires: `cmd` came from `commands.decode`, or its fields have the kinds documented
        in lockservice/commands.py (the codec is where types are checked).
        """
        now = getattr(cmd, "now", None)
        if now is not None:
            self._advance(now)
        match cmd:
            case c.OpenSession():
                return self._open_session(index, cmd.ttl_ms, "")
            case c.OpenClientSession():
                return self._open_session(index, cmd.ttl_ms, cmd.client)
            case c.KeepAlive():
                return self._keep_alive(cmd)
            case c.CloseSession():
                s = self.sessions.get(cmd.session)
                if s is None:
                    return _unknown(cmd.session)
                self._drop_sessions([s], expired=False)
                return SessionClosed(s.id)
            case c.ExpireSessions():
                ended = sorted(s.id for s in self.sessions.values() if s.expires_at <= self.clock)
                self._drop_sessions([self.sessions[sid] for sid in ended], expired=True)
                return SessionsExpired(tuple(ended))
            case c.ExpireSession():
                s = self.sessions.get(cmd.session)
                if s is None:
                    return _unknown(cmd.session)
                if s.expires_at > self.clock:
                    return Refused(
                        Reason.LEASE_NOT_ENDED, f"session {s.id}'s lease ends at {s.expires_at}"
                    )
                self._drop_sessions([s], expired=True)
                return SessionsExpired((s.id,))
            case c.GrantFreshLeases():
                for s in self.sessions.values():
                    s.expires_at = max(s.expires_at, self.clock + s.ttl_ms)
                    self._queue_event(s, EventKind.LEADER_CHANGED, "", 0, 0, 0)
                return FreshLeases(len(self.sessions))
            case c.Acquire():
                return self._acquire(cmd)
            case c.Release():
                return self._release(cmd)
            case c.CancelWait():
                return self._cancel_wait(cmd)
            case c.CheckSequencer():
                return SequencerStatus(self.check_sequencer(cmd.sequencer))
            case c.Put():
                return self._put(cmd)
            case c.Delete():
                return self._delete(cmd)
            case c.Get():
                return EntryValue(self.get(cmd.name))
            case c.Watch():
                return self._watch(cmd)
            case c.Unwatch():
                return self._unwatch(cmd)
        return Refused(Reason.BAD_COMMAND, f"not a command: {type(cmd).__name__}")

    def _advance(self, now: int) -> None:
        """Time passes: move the clock and grant waiters whose lock-delay ended."""
        if now <= self.clock:
            return
        self.clock = now
        for name in sorted(n for n in self.delayed if self.locks[n].delay_until <= now):
            self.delayed.discard(name)
            lock = self.locks[name]
            self._promote(lock)
            self._forget_if_idle(lock)

    def _live(self, session: int) -> SessionRecord | Refused:
        s = self.sessions.get(session)
        if s is None:
            return _unknown(session)
        if s.expires_at <= self.clock:
            return Refused(Reason.LEASE_ENDED, f"session {session}'s lease ended at {s.expires_at}")
        return s

    def _open_session(self, index: int, ttl_ms: int, client: str) -> Result:
        lim = self.limits
        if not lim.min_ttl_ms <= ttl_ms <= lim.max_ttl_ms:
            return Refused(Reason.BAD_TTL, f"ttl_ms must be in {lim.min_ttl_ms}..{lim.max_ttl_ms}")
        if len(client.encode("utf-8", "surrogatepass")) > lim.max_client_bytes:
            return Refused(Reason.BAD_COMMAND,
                           f"a client id is at most {lim.max_client_bytes} bytes")
        if index < 1 or index in self.sessions:
            return Refused(Reason.SESSION_EXISTS, f"index {index} cannot name a new session")
        if len(self.sessions) >= lim.max_sessions:
            return Refused(Reason.TOO_MANY_SESSIONS, f"at most {lim.max_sessions} sessions")
        if client and self.client_sessions.get(client, 0) >= lim.max_sessions_per_client:
            return Refused(Reason.TOO_MANY_CLIENT_SESSIONS,
                           f"client {client!r} has {lim.max_sessions_per_client} sessions open, "
                           "the most one client may have; close one first")
        s = SessionRecord(index, ttl_ms, self.clock + ttl_ms, client=client)
        self.sessions[index] = s
        if client:
            self.client_sessions[client] = self.client_sessions.get(client, 0) + 1
        return SessionOpened(index, s.expires_at)

    def _keep_alive(self, cmd: c.KeepAlive) -> Result:
        s = self._live(cmd.session)
        if isinstance(s, Refused):
            return s
        while s.events and s.events[0].seq <= cmd.ack:
            s.events.popleft()
        s.expires_at = max(s.expires_at, self.clock + s.ttl_ms)
        return LeaseExtended(s.expires_at)

    def _drop_sessions(self, ended: list[SessionRecord], *, expired: bool) -> None:
        """Close or expire `ended`: free their locks (lock-delay if expired), waits, ephemerals.

        All of them leave before any waiter is promoted, so a lock freed here is never granted
        to a session that this same command expires.
        """
        touched: set[str] = set()
        for s in ended:
            del self.sessions[s.id]
            if s.client:
                left = self.client_sessions[s.client] - 1
                if left:
                    self.client_sessions[s.client] = left
                else:
                    del self.client_sessions[s.client]
            for prefix in s.watches:
                self._unindex_watch(prefix, s.id)
            for name in sorted(s.waiting):
                lock = self.locks[name]
                lock.waiters = [w for w in lock.waiters if w.session != s.id]
            touched |= s.waiting | s.held
        for s in ended:
            for name in sorted(s.held):
                lock = self.locks[name]
                holder = lock.holders.pop(s.id)
                gen = holder.sequencer.generation
                if expired:
                    lock.delay_until = max(lock.delay_until, self.clock + holder.lock_delay_ms)
                    if lock.delay_until > self.clock:
                        self.delayed.add(name)
                    self._emit(EventKind.SESSION_EXPIRED, name, session=s.id, generation=gen)
                else:
                    self._emit(EventKind.LOCK_RELEASED, name, session=s.id, generation=gen)
            for name in sorted(s.ephemerals):
                del self.entries[name]
                self._emit(EventKind.ENTRY_DELETED, name, session=s.id)
            log.info("session %d %s", s.id, "expired" if expired else "closed")
        for name in sorted(touched):
            lock = self.locks[name]
            self._promote(lock)
            self._forget_if_idle(lock)

    def _acquire(self, cmd: c.Acquire) -> Result:
        lim = self.limits
        s = self._live(cmd.session)
        if isinstance(s, Refused):
            return s
        bad = self._bad_name(cmd.name)
        if bad is not None:
            return bad
        delay = lim.default_lock_delay_ms if cmd.lock_delay_ms is None else cmd.lock_delay_ms
        if delay > lim.max_lock_delay_ms:
            return Refused(
                Reason.BAD_LOCK_DELAY, f"lock_delay_ms must be at most {lim.max_lock_delay_ms}"
            )
        lock = self.locks.get(cmd.name)
        if lock is not None and s.id in lock.holders:
            held = lock.holders[s.id].sequencer
            if held.mode is cmd.mode:
                return Granted(held)  # a retried Acquire gets the same grant
            return Refused(
                Reason.ALREADY_HOLDER, f"session {s.id} holds {cmd.name!r} {held.mode.name}"
            )
        if lock is not None and cmd.name in s.waiting:
            pos = next(i for i, w in enumerate(lock.waiters) if w.session == s.id)
            if lock.waiters[pos].mode is cmd.mode:
                return Queued(pos)
            return Refused(Reason.ALREADY_WAITING, f"session {s.id} waits for {cmd.name!r}")
        if len(s.held) + len(s.waiting) >= lim.max_locks_per_session:
            return Refused(Reason.TOO_MANY_LOCKS, f"at most {lim.max_locks_per_session} locks")
        if lock is None:
            lock = self.locks[cmd.name] = LockRecord(cmd.name)
        delayed = lock.delay_until > self.clock
        if not delayed and not lock.waiters and lock.compatible(cmd.mode):
            return Granted(self._grant(lock, s, cmd.mode, delay, from_queue=False))
        if not cmd.wait:
            if delayed:
                return Refused(
                    Reason.LOCK_DELAY, f"{cmd.name!r} is under lock-delay until {lock.delay_until}"
                )
            return Refused(Reason.LOCK_BUSY, f"{cmd.name!r} is held or has waiters")
        if len(lock.waiters) >= lim.max_waiters_per_lock:
            return Refused(Reason.TOO_MANY_WAITERS, f"at most {lim.max_waiters_per_lock} waiters")
        lock.waiters.append(Waiter(s.id, cmd.mode, delay))
        s.waiting.add(cmd.name)
        return Queued(len(lock.waiters) - 1)

    def _grant(
        self, lock: LockRecord, s: SessionRecord, mode: LockMode, delay: int, *, from_queue: bool
    ) -> Sequencer:
        self.generation += 1
        seq = Sequencer(lock.name, mode, self.generation, s.id)
        lock.holders[s.id] = Holder(seq, delay)
        s.held.add(lock.name)
        self._emit(EventKind.LOCK_ACQUIRED, lock.name, session=s.id, generation=seq.generation)
        if from_queue:
            self._queue_event(s, EventKind.LOCK_GRANTED, lock.name, s.id, seq.generation, 0)
        return seq

    def _promote(self, lock: LockRecord) -> None:
        """Grant the head of the FIFO while it is compatible and no lock-delay is running."""
        if lock.delay_until > self.clock:
            return
        while lock.waiters and lock.compatible(lock.waiters[0].mode):
            w = lock.waiters.pop(0)
            s = self.sessions[w.session]
            s.waiting.discard(lock.name)
            self._grant(lock, s, w.mode, w.lock_delay_ms, from_queue=True)

    def _forget_if_idle(self, lock: LockRecord) -> None:
        if lock.idle() and lock.delay_until <= self.clock:
            del self.locks[lock.name]

    def _release(self, cmd: c.Release) -> Result:
        if cmd.session not in self.sessions:
            return _unknown(cmd.session)
        lock = self.locks.get(cmd.name)
        if lock is None or cmd.session not in lock.holders:
            return Refused(Reason.NOT_HOLDER, f"session {cmd.session} does not hold {cmd.name!r}")
        holder = lock.holders.pop(cmd.session)
        self.sessions[cmd.session].held.discard(cmd.name)
        self._emit(
            EventKind.LOCK_RELEASED,
            cmd.name,
            session=cmd.session,
            generation=holder.sequencer.generation,
        )
        self._promote(lock)
        self._forget_if_idle(lock)
        return Released(cmd.name)

    def _cancel_wait(self, cmd: c.CancelWait) -> Result:
        s = self.sessions.get(cmd.session)
        if s is None:
            return _unknown(cmd.session)
        if cmd.name not in s.waiting:
            return Refused(Reason.NOT_WAITING, f"session {s.id} does not wait for {cmd.name!r}")
        lock = self.locks[cmd.name]
        lock.waiters = [w for w in lock.waiters if w.session != s.id]
        s.waiting.discard(cmd.name)
        self._promote(lock)  # a shared waiter behind a cancelled exclusive one may go now
        self._forget_if_idle(lock)
        return WaitCancelled(cmd.name)

    def _put(self, cmd: c.Put) -> Result:
        lim = self.limits
        bad = self._bad_name(cmd.name)
        if bad is not None:
            return bad
        if len(cmd.value) > lim.max_value_bytes:
            return Refused(Reason.BAD_VALUE, f"a value is at most {lim.max_value_bytes} bytes")
        entry = self.entries.get(cmd.name)
        mismatch = _version_mismatch(cmd.name, entry, cmd.expected_version)
        if mismatch is not None:
            return mismatch
        owner = None
        if cmd.ephemeral_session is not None:
            owner = self._live(cmd.ephemeral_session)
            if isinstance(owner, Refused):
                return owner
        if entry is None and len(self.entries) >= lim.max_entries:
            return Refused(Reason.TOO_MANY_ENTRIES, f"at most {lim.max_entries} entries")
        self.revision += 1
        if entry is not None and entry.ephemeral_session is not None:
            self.sessions[entry.ephemeral_session].ephemerals.discard(cmd.name)
        if owner is not None:
            owner.ephemerals.add(cmd.name)
        self.entries[cmd.name] = EntryRecord(cmd.value, self.revision, cmd.ephemeral_session)
        self._emit(EventKind.ENTRY_CHANGED, cmd.name, version=self.revision)
        return Written(self.revision)

    def _delete(self, cmd: c.Delete) -> Result:
        entry = self.entries.get(cmd.name)
        if entry is None:
            return Refused(Reason.NOT_FOUND, f"no entry {cmd.name!r}")
        mismatch = _version_mismatch(cmd.name, entry, cmd.expected_version)
        if mismatch is not None:
            return mismatch
        if entry.ephemeral_session is not None:
            self.sessions[entry.ephemeral_session].ephemerals.discard(cmd.name)
        del self.entries[cmd.name]
        self._emit(EventKind.ENTRY_DELETED, cmd.name)
        return Deleted(cmd.name)

    def _watch(self, cmd: c.Watch) -> Result:
        s = self.sessions.get(cmd.session)
        if s is None:
            return _unknown(cmd.session)
        if cmd.prefix and (bad := self._bad_name(cmd.prefix)) is not None:
            return bad
        if cmd.prefix in s.watches:
            return Watching(cmd.prefix)
        if len(s.watches) >= self.limits.max_watches_per_session:
            return Refused(
                Reason.TOO_MANY_WATCHES, f"at most {self.limits.max_watches_per_session} watches"
            )
        s.watches.append(cmd.prefix)
        self.watchers.setdefault(cmd.prefix, set()).add(s.id)
        return Watching(cmd.prefix)

    def _unwatch(self, cmd: c.Unwatch) -> Result:
        s = self.sessions.get(cmd.session)
        if s is None:
            return _unknown(cmd.session)
        if cmd.prefix not in s.watches:
            return Refused(Reason.NOT_WATCHING, f"session {s.id} does not watch {cmd.prefix!r}")
        s.watches.remove(cmd.prefix)
        self._unindex_watch(cmd.prefix, s.id)
        return Unwatched(cmd.prefix)

    # -- events -------------------------------------------------------------------------

    def _emit(
        self, kind: EventKind, name: str, *, session: int = 0, generation: int = 0, version: int = 0
    ) -> None:
        """Queue an event for every session watching a prefix of `name`."""
        if self.change_listener is not None:
            self.change_listener(kind, name)
        if not self.watchers:
            return
        if len(self.watchers) <= len(name) + 1:
            prefixes = [p for p in self.watchers if name.startswith(p)]
        else:
            prefixes = [name[:i] for i in range(len(name) + 1) if name[:i] in self.watchers]
        receivers: set[int] = set()
        for p in prefixes:
            receivers |= self.watchers[p]
        for sid in sorted(receivers):
            self._queue_event(self.sessions[sid], kind, name, session, generation, version)

    def _unindex_watch(self, prefix: str, session: int) -> None:
        sids = self.watchers[prefix]
        sids.discard(session)
        if not sids:
            del self.watchers[prefix]

    def _queue_event(
        self,
        s: SessionRecord,
        kind: EventKind,
        name: str,
        session: int,
        generation: int,
        version: int,
    ) -> None:
        s.last_event_seq += 1
        event = Event(s.last_event_seq, kind, name, session, generation, version)
        s.events.append(event)
        if self.event_listener is not None:
            self.event_listener(s.id, event)
        if len(s.events) > self.limits.max_events_per_session:
            s.events.popleft()
            s.dropped += 1

    def _bad_name(self, name: str) -> Refused | None:
        try:
            size = len(name.encode("utf-8"))
        except UnicodeEncodeError:
            return Refused(Reason.BAD_NAME, "a name is valid UTF-8")
        if not 0 < size <= self.limits.max_name_bytes or "\x00" in name:
            return Refused(
                Reason.BAD_NAME, f"a name is 1..{self.limits.max_name_bytes} bytes without NUL"
            )
        return None


def _unknown(session: int) -> Refused:
    return Refused(Reason.UNKNOWN_SESSION, f"no session {session}")


def _version_mismatch(name: str, entry: EntryRecord | None, expected: int | None) -> Refused | None:
    if expected is None:
        return None
    actual = 0 if entry is None else entry.version
    if actual != expected:
        return Refused(
            Reason.VERSION_MISMATCH, f"{name!r} is at version {actual}, expected {expected}"
        )
    return None


__all__ = ["LockStateMachine"]
