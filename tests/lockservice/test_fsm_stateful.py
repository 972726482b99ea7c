"""Hypothesis over random command sequences: the lock table's promises (Chubby §2.4, §2.8).

Three replicas take the same log: A and B from the start, C from a snapshot of A taken at a
random point. After every command: all three return the same result and have the same
snapshot bytes, `check()` passes, there are never two exclusive holders, generations strictly
increase per lock name, waiters are granted in FIFO order, and an expiry frees exactly the
expired sessions' locks (and grants nothing on a lock under lock-delay).
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from lockservice import commands as c
from lockservice.fsm import LockStateMachine
from lockservice.limits import Limits
from lockservice.results import (
    Granted,
    Result,
    SequencerStatus,
    SessionClosed,
    SessionOpened,
    SessionsExpired,
)
from lockservice.sequencer import LockMode, Sequencer

LIMITS = Limits(
    max_waiters_per_lock=3,
    max_locks_per_session=3,
    max_events_per_session=4,
    max_sessions=6,
    max_entries=3,
    max_watches_per_session=2,
    default_lock_delay_ms=300,
)
NAMES = st.sampled_from(["a", "b", "c"])
DT = st.integers(0, 200)
DELAYS = st.sampled_from([None, 0, 50, 500])
TTLS = st.sampled_from([500, 2000, 20000])

Holdings = dict[tuple[str, int], Sequencer]


def holdings(fsm: LockStateMachine) -> Holdings:
    return {(n, s): h.sequencer for n, lock in fsm.locks.items() for s, h in lock.holders.items()}


class LockTableMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = LockStateMachine(LIMITS), LockStateMachine(LIMITS)
        self.c: LockStateMachine | None = None
        self.index = 0
        self.now = 0
        self.ids = [0]  # 0 is never a session: commands naming it are refused
        self.max_gen: dict[str, int] = {}
        self.seen: set[Sequencer] = set()
        self.delay_until: dict[str, int] = {}  # the model of lock-delay (Chubby §2.4)

    # -- the step every rule goes through ----------------------------------------------

    def step(self, cmd: c.Command) -> Result:
        before = holdings(self.a)
        before_waiters = {n: [w.session for w in lock.waiters] for n, lock in self.a.locks.items()}
        before_leases = {sid: s.expires_at for sid, s in self.a.sessions.items()}
        before_delay = {k: self.a.locks[k[0]].holders[k[1]].lock_delay_ms for k in before}
        self.index += 1
        data = c.encode(cmd)
        result = self.a.apply(self.index, data)
        assert self.b.apply(self.index, data) == result
        snap = self.a.snapshot()
        assert self.b.snapshot() == snap
        if self.c is not None:
            assert self.c.apply(self.index, data) == result
            assert self.c.snapshot() == snap
        after = holdings(self.a)
        for sid, s in self.a.sessions.items():  # a lease never shrinks
            assert s.expires_at >= before_leases.get(sid, 0), sid
        self.check_generations(after)
        self.check_fifo(before_waiters, before, after)
        if isinstance(result, SessionsExpired | SessionClosed):
            gone = set(result.sessions) if isinstance(result, SessionsExpired) else {result.session}
            self.check_frees_exactly(
                gone, before, after, before_delay, expired=isinstance(result, SessionsExpired)
            )
        if isinstance(result, Granted):
            seq = result.sequencer
            assert after[(seq.name, seq.session)] == seq
            if (seq.name, seq.session) not in before:  # no queue jumping
                assert not self.a.waiters(seq.name), (seq, before_waiters.get(seq.name))
        for name, sid in after.keys() - before.keys():
            assert self.a.clock >= self.delay_until.get(name, 0), (name, sid)
        return result

    def check_generations(self, after: Holdings) -> None:
        for seq in sorted(set(after.values()) - self.seen, key=lambda s: s.generation):
            assert seq.generation > self.max_gen.get(seq.name, 0), seq
            self.max_gen[seq.name] = seq.generation
            self.seen.add(seq)

    def check_fifo(
        self, before_waiters: dict[str, list[int]], before: Holdings, after: Holdings
    ) -> None:
        for name, old in before_waiters.items():
            lock = self.a.locks.get(name)
            new = [] if lock is None else [w.session for w in lock.waiters]
            granted = [s for s in old if (name, s) in after and (name, s) not in before]
            kept = [s for s in old if s in new or s in granted]
            assert set(kept[: len(granted)]) == set(granted), (name, old, granted)
            assert new[: len(kept) - len(granted)] == kept[len(granted) :], (name, old, new)

    def check_frees_exactly(
        self,
        gone: set[int],
        before: Holdings,
        after: Holdings,
        before_delay: dict[tuple[str, int], int],
        *,
        expired: bool,
    ) -> None:
        for (name, sid), seq in before.items():
            if sid in gone:
                assert (name, sid) not in after
            else:
                assert after.get((name, sid)) == seq, (name, sid)
        for (name, sid), d in before_delay.items():
            if sid in gone and expired:
                self.delay_until[name] = max(self.delay_until.get(name, 0), self.a.clock + d)
        delayed = {n for (n, s), d in before_delay.items() if s in gone and expired and d > 0}
        for name, sid in after.keys() - before.keys():
            assert name not in delayed, f"{name!r} granted to {sid} during lock-delay"

    def pick(self, data: st.DataObject) -> int:
        """Mostly a live session; sometimes any id ever seen, or 0 (never a session)."""
        live = sorted(self.a.sessions)
        if live and data.draw(st.integers(0, 9)) < 8:
            return data.draw(st.sampled_from(live))
        return data.draw(st.sampled_from(self.ids))

    def tick(self, dt: int, backwards: bool = False) -> int:
        self.now += dt
        return max(0, self.now - 1000) if backwards else self.now

    # -- rules --------------------------------------------------------------------------

    @initialize(ttls=st.lists(TTLS, min_size=2, max_size=4))
    def open_sessions(self, ttls: list[int]) -> None:
        for ttl in ttls:
            self.open_session(ttl, 0)

    @rule(ttl=TTLS, dt=DT)
    def open_session(self, ttl: int, dt: int) -> None:
        result = self.step(c.OpenSession(ttl, self.tick(dt)))
        if isinstance(result, SessionOpened):
            assert result.session == self.index
            self.ids.append(result.session)

    @rule(data=st.data(), dt=DT, ack=st.integers(0, 10), backwards=st.booleans())
    def keep_alive(self, data: st.DataObject, dt: int, ack: int, backwards: bool) -> None:
        self.step(c.KeepAlive(self.pick(data), self.tick(dt, backwards), ack))

    @rule(data=st.data())
    def close_session(self, data: st.DataObject) -> None:
        self.step(c.CloseSession(self.pick(data)))

    @rule(dt=st.integers(0, 3000))
    def expire_sessions(self, dt: int) -> None:
        now = self.tick(dt)
        clock = max(self.a.clock, now)
        expected = tuple(sorted(s.id for s in self.a.sessions.values() if s.expires_at <= clock))
        assert self.step(c.ExpireSessions(now)) == SessionsExpired(expected)

    @rule(data=st.data(), dt=DT)
    def expire_session(self, data: st.DataObject, dt: int) -> None:
        self.step(c.ExpireSession(self.pick(data), self.tick(dt)))

    @rule(dt=DT)
    def grant_fresh_leases(self, dt: int) -> None:
        self.step(c.GrantFreshLeases(self.tick(dt)))

    @rule(
        data=st.data(),
        name=NAMES,
        mode=st.sampled_from(LockMode),
        wait=st.booleans(),
        dt=DT,
        delay=DELAYS,
    )
    def acquire(
        self, data: st.DataObject, name: str, mode: LockMode, wait: bool, dt: int, delay: int | None
    ) -> None:
        self.step(c.Acquire(self.pick(data), name, mode, wait, self.tick(dt), delay))

    # Lock traffic is what the properties are about: give it more weight than the rest.
    @rule(data=st.data(), name=NAMES, mode=st.sampled_from(LockMode), dt=DT, delay=DELAYS)
    def acquire_and_wait(
        self, data: st.DataObject, name: str, mode: LockMode, dt: int, delay: int | None
    ) -> None:
        self.step(c.Acquire(self.pick(data), name, mode, True, self.tick(dt), delay))

    @rule(data=st.data(), name=st.sampled_from(["a", "b"]), mode=st.sampled_from(LockMode))
    def acquire_and_wait_now(self, data: st.DataObject, name: str, mode: LockMode) -> None:
        self.step(c.Acquire(self.pick(data), name, mode, True, self.now))

    @rule(data=st.data())
    def release_something(self, data: st.DataObject) -> None:
        held = sorted(holdings(self.a))
        if held:
            name, sid = data.draw(st.sampled_from(held))
            self.step(c.Release(sid, name))

    @rule(data=st.data(), name=NAMES)
    def release(self, data: st.DataObject, name: str) -> None:
        self.step(c.Release(self.pick(data), name))

    @rule(data=st.data(), name=NAMES)
    def cancel_wait(self, data: st.DataObject, name: str) -> None:
        self.step(c.CancelWait(self.pick(data), name))

    @rule(data=st.data())
    def check_sequencer(self, data: st.DataObject) -> None:
        if not self.seen:
            return
        seq = data.draw(st.sampled_from(sorted(self.seen, key=lambda s: s.generation)))
        current = holdings(self.a).get((seq.name, seq.session)) == seq
        assert self.step(c.CheckSequencer(seq)) == SequencerStatus(current)

    @rule(
        data=st.data(), name=NAMES, expected=st.none() | st.integers(0, 5), ephemeral=st.booleans()
    )
    def put(self, data: st.DataObject, name: str, expected: int | None, ephemeral: bool) -> None:
        owner = self.pick(data) if ephemeral else None
        self.step(c.Put("e/" + name, b"v", expected, owner))

    @rule(name=NAMES, expected=st.none() | st.integers(0, 5))
    def delete(self, name: str, expected: int | None) -> None:
        self.step(c.Delete("e/" + name, expected))

    @rule(data=st.data(), prefix=st.sampled_from(["", "a", "e/"]))
    def watch(self, data: st.DataObject, prefix: str) -> None:
        self.step(c.Watch(self.pick(data), prefix))

    @rule()
    def restore_replica_from_snapshot(self) -> None:
        self.c = LockStateMachine(LIMITS)
        self.c.restore(self.a.snapshot())
        assert self.c.snapshot() == self.a.snapshot()

    @invariant()
    def tables_keep_their_rules(self) -> None:
        for fsm in (self.a, self.b, self.c):
            if fsm is not None:
                fsm.check()
                for lock in fsm.locks.values():
                    exclusive = [
                        h for h in lock.holders.values() if h.sequencer.mode is LockMode.EXCLUSIVE
                    ]
                    assert len(exclusive) <= 1 and (not exclusive or len(lock.holders) == 1)


LockTableMachine.TestCase.settings = settings(
    max_examples=120,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_lock_table = LockTableMachine.TestCase
