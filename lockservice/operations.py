"""The lock service's requests, as the leader serves them (a mixin of `LockServer`).

Each write first waits for `lead()` (this member leads and has granted fresh leases), then
proposes one command; a refusal raises `RequestRefused` carrying the state machine's
`Refused`. Answers are plain dicts, exactly the JSON bodies of docs/openapi.yaml (tag lock).

KeepAlive is a long poll (Chubby §2.8): with no event pending beyond `ack` the request is
held until the lease has a third of its TTL left (at most `max_hold_s`), then the lease is
extended and the answer carries the new `lease_ms`; a pending event answers at once, and so
does the first KeepAlive of a session at a new leader (`hold_ms`). A held request whose
client went away extends nothing. A waiting Acquire is queued in the table and
answered when its LOCK_GRANTED event is applied, or at `wait_ms` with CancelWait.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from lockservice import commands as c
from lockservice.errors import RequestRefused
from lockservice.events import Event
from lockservice.results import Granted, Queued, Reason, Refused
from lockservice.sequencer import LockMode, Sequencer

if TYPE_CHECKING:
    from lockservice.server import LockServer

    _Base = LockServer
else:
    _Base = object


def _now() -> int:
    from lockservice.server import now_ms

    return now_ms()


def event_json(e: Event) -> dict[str, Any]:
    return {"seq": e.seq, "kind": e.kind.name.lower(), "name": e.name, "session": e.session,
            "generation": e.generation, "version": e.version}


def grant_json(seq: Sequencer, granted_at: int) -> dict[str, Any]:
    return {"sequencer": seq.to_token(), "name": seq.name, "mode": seq.mode.name.lower(),
            "generation": seq.generation, "session": seq.session, "granted_at": granted_at}


def hold_ms(expires_at: int, ttl_ms: int, now: int, max_hold_ms: int, *, fresh: bool) -> int:
    """How long the leader holds a KeepAlive that has no event to deliver (ms, >= 0).

    Until the lease has a third of its TTL left, at most `max_hold_ms`. Not at all when
    `fresh`: the session's lease is still the one a new leader's GrantFreshLeases gave every
    session at the same instant. Holding those would make all their renewals fall due
    together, a third of a TTL before the shared end, and a loaded leader then renewed some
    too late (sessions expired across a fail-over); a client in jeopardy also needs its
    answer now, not when the fresh lease runs low.
    """
    if fresh:
        return 0
    return max(0, min(expires_at - ttl_ms // 3 - now, max_hold_ms))


class Operations(_Base):
    def no_session(self, session: int) -> RequestRefused:
        if session in self.signals.expired:
            return RequestRefused(Refused(Reason.LEASE_ENDED, f"session {session} expired"))
        return RequestRefused(Refused(Reason.UNKNOWN_SESSION, f"no session {session}"))

    async def refuse_unless(self, ok: Callable[[], bool], refusal: Callable[[], Exception]
                            ) -> None:
        """Refuse, proposing nothing, a request the table would refuse anyway.

        The local table decides only in the request's favour: a refusal is confirmed after a
        ReadIndex (a deposed leader's stale table must not call a live session unknown), so
        it is as linearizable as the state machine's own refusal, and it costs no log entry.
        """
        if ok():
            return
        await self.read_barrier()
        if not ok():
            raise refusal()

    async def require_session(self, session: int) -> None:
        await self.refuse_unless(lambda: session in self.fsm.sessions,
                                 lambda: self.no_session(session))

    async def _wait(self, session: int, until: Callable[[], bool], timeout_s: float) -> None:
        """Wait until `until()` holds, the wait times out, or this member stops leading.

        Woken only by the session's events, its end, a change of leadership and the timer:
        an idle long poll costs nothing until its time comes."""
        ev = self.signals.subscribe(session)
        loop = asyncio.get_running_loop()
        expired: list[bool] = []

        def expire() -> None:
            expired.append(True)
            ev.set()

        timer = loop.call_later(timeout_s, expire)
        try:
            while not until() and self.is_ready_leader() and not expired:
                ev.clear()
                await ev.wait()
        finally:
            timer.cancel()
            self.signals.unsubscribe(session, ev)

    # -- sessions ------------------------------------------------------------------------

    async def open_session(self, ttl_ms: int, client: str = "") -> dict[str, Any]:
        """Open a session; with `client`, counted under it (Limits.max_sessions_per_client)."""
        await self.lead()
        a = await self.propose(c.OpenClientSession(ttl_ms, _now(), client) if client
                               else c.OpenSession(ttl_ms, _now()))
        r = a.result
        return {"session": r.session, "ttl_ms": ttl_ms, "lease_ms": max(0, r.expires_at - _now()),
                "expires_at": r.expires_at}

    async def keepalive(self, session: int, ack: int,
                        gone: Callable[[], bool] = lambda: False) -> dict[str, Any] | None:
        """Extend the lease (long poll). None when the client went away while held.

        The answer's `held_ms` is how long this member had the request before it answered
        (lower bound; a relaying member's time is not in it): the client counts the lease from
        its send time plus that, instead of from its send time alone."""
        arrived = time.monotonic()
        await self.lead()
        await self.require_session(session)
        s = self.fsm.sessions[session]

        def pending() -> bool:
            s = self.fsm.sessions.get(session)
            return s is None or bool(s.events and s.events[-1].seq > ack)

        if not pending():
            hold = hold_ms(s.expires_at, s.ttl_ms, _now(), int(self.max_hold_s * 1000),
                           fresh=session in self.fresh_sessions)
            await self._wait(session, lambda: pending() or gone(), hold / 1000)
        if gone():
            return None
        await self.lead()
        try:
            a = await self.propose(c.KeepAlive(session, _now(), ack))
        except RequestRefused as exc:
            if exc.refused.reason is Reason.UNKNOWN_SESSION:
                raise self.no_session(session) from None
            raise
        self.fresh_sessions.discard(session)
        pe = self.fsm.pending_events(session)
        events = [] if pe is None else [event_json(e) for e in pe.events if e.seq > ack]
        held_ms = int((time.monotonic() - arrived) * 1000)  # before lease_ms: a lower bound
        return {"lease_ms": max(0, a.result.expires_at - _now()), "ttl_ms": s.ttl_ms,
                "expires_at": a.result.expires_at, "events": events,
                "dropped": 0 if pe is None else pe.dropped, "held_ms": held_ms}

    async def close_session(self, session: int) -> None:
        await self.lead()
        await self.require_session(session)
        try:
            await self.propose(c.CloseSession(session))
        except RequestRefused as exc:
            if exc.refused.reason is Reason.UNKNOWN_SESSION:
                raise self.no_session(session) from None
            raise

    # -- locks ---------------------------------------------------------------------------

    async def acquire(self, session: int, name: str, mode: LockMode, wait_ms: int,
                      lock_delay_ms: int | None) -> dict[str, Any]:
        await self.lead()
        await self.require_session(session)
        self.signals.want_grant(session, name)
        try:
            return await self._acquire(session, name, mode, wait_ms, lock_delay_ms)
        finally:
            self.signals.drop_grant(session, name)

    async def _acquire(self, session: int, name: str, mode: LockMode, wait_ms: int,
                       lock_delay_ms: int | None) -> dict[str, Any]:
        try:
            a = await self.propose(c.Acquire(session, name, mode, wait_ms > 0, _now(),
                                             lock_delay_ms))
        except RequestRefused as exc:
            raise self._refusal(exc, session, name) from None
        if isinstance(a.result, Granted):
            return grant_json(a.result.sequencer, a.clock)
        assert isinstance(a.result, Queued)
        key = (session, name)
        try:
            await self._wait(session, lambda: key in self.signals.grants
                             or session not in self.fsm.sessions, wait_ms / 1000)
        except asyncio.CancelledError:  # the client went away: leave the queue behind it
            if key not in self.signals.grants:
                self._background(self.propose(c.CancelWait(session, name)))
            raise
        if key in self.signals.grants:
            gen, at = self.signals.grants[key]
            return grant_json(Sequencer(name, mode, gen, session), at)
        if session not in self.fsm.sessions:
            raise self.no_session(session)
        await self.lead()  # raises NoLeader when leadership was lost: the client retries
        try:
            await self.propose(c.CancelWait(session, name))
        except RequestRefused as exc:
            if exc.refused.reason is not Reason.NOT_WAITING:
                raise
            holder = self.fsm.locks.get(name)
            h = None if holder is None else holder.holders.get(session)
            if h is None:
                raise
            return grant_json(h.sequencer, self.signals.grants.get(key, (0, self.fsm.clock))[1])
        lock = self.fsm.locks.get(name)
        if lock is not None and lock.delay_until > self.fsm.clock:
            raise RequestRefused(Refused(Reason.LOCK_DELAY, f"{name!r} is under lock-delay"),
                                 delay_until=lock.delay_until)
        raise RequestRefused(Refused(Reason.LOCK_BUSY, f"waited {wait_ms} ms for {name!r}"))

    def _refusal(self, exc: RequestRefused, session: int, name: str) -> RequestRefused:
        reason = exc.refused.reason
        if reason is Reason.UNKNOWN_SESSION:
            return self.no_session(session)
        if reason is Reason.LOCK_DELAY:
            lock = self.fsm.locks.get(name)
            return RequestRefused(exc.refused, delay_until=0 if lock is None else lock.delay_until)
        return exc

    async def release(self, session: int, name: str) -> None:
        await self.lead()
        await self.require_session(session)

        def holds() -> bool:
            lock = self.fsm.locks.get(name)
            return lock is not None and session in lock.holders

        await self.refuse_unless(holds, lambda: RequestRefused(Refused(
            Reason.NOT_HOLDER, f"session {session} does not hold {name!r}")))
        try:
            await self.propose(c.Release(session, name))
        except RequestRefused as exc:
            raise self._refusal(exc, session, name) from None

    async def lock_info(self, name: str, *, stale: bool) -> dict[str, Any]:
        if not stale:
            await self.read_barrier()
        fsm = self.fsm
        lock = fsm.locks.get(name)
        holders = [] if lock is None else [
            {**grant_json(h.sequencer, 0), "lease_expires_at": fsm.lease_end(sid)}
            for sid, h in lock.holders.items()]
        for h in holders:
            del h["granted_at"]
        waiters = [] if lock is None else [
            {"session": w.session, "mode": w.mode.name.lower()} for w in lock.waiters]
        delay = 0 if lock is None or lock.delay_until <= fsm.clock else lock.delay_until
        return {"name": name, "holders": holders, "waiters": waiters, "delay_until": delay,
                "clock": fsm.clock}

    # -- entries and watches -------------------------------------------------------------

    async def put_entry(self, name: str, value: bytes, expected_version: int | None,
                        ephemeral_session: int | None) -> dict[str, Any]:
        await self.lead()
        if ephemeral_session is not None:
            await self.require_session(ephemeral_session)
        try:
            a = await self.propose(c.Put(name, value, expected_version, ephemeral_session))
        except RequestRefused as exc:
            if exc.refused.reason is Reason.UNKNOWN_SESSION and ephemeral_session is not None:
                raise self.no_session(ephemeral_session) from None
            raise
        return {"version": a.result.version}

    async def get_entry(self, name: str, *, stale: bool) -> tuple[bytes, int] | None:
        if not stale:
            await self.read_barrier()
        e = self.fsm.get(name)
        return None if e is None else (e.value, e.version)

    async def delete_entry(self, name: str, expected_version: int | None) -> None:
        await self.lead()
        await self.refuse_unless(lambda: name in self.fsm.entries, lambda: RequestRefused(
            Refused(Reason.NOT_FOUND, f"no entry {name!r}")))
        await self.propose(c.Delete(name, expected_version))

    async def watch(self, session: int, prefix: str) -> None:
        await self.lead()
        await self.require_session(session)
        try:
            await self.propose(c.Watch(session, prefix))
        except RequestRefused as exc:
            if exc.refused.reason is Reason.UNKNOWN_SESSION:
                raise self.no_session(session) from None
            raise
