"""The background of a lock session: KeepAlives, the watchdog, events, transitions.

`SessionKeeper` runs two tasks for an open session. The keepalive loop sends KeepAlives
(each acknowledges the events seen; its answer carries the renewed lease and new events,
which go to the watches whose prefix they match). The watchdog wakes at the next deadline
of the local lease (lockservice/lease.py), so jeopardy and loss are noticed on time even
while a KeepAlive hangs at a stopped member. Each transition is logged and given to the
callback registered for its new state (`callbacks`; they run on the loop, must not block;
opening the session calls none).

When the keepalive sends. The leader holds a KeepAlive until the lease has a third of its
TTL left (or an event is pending), then extends the lease and answers with `lease_ms`, the
lease left at that instant. The client knows only when it sent the request, so it counts
`lease_ms` from the send time (lockservice/lease.py); an answer held for 2/3 of the TTL
would leave little. So a client without watches (nothing to hear early) sleeps until the
server will answer at once: a third of the TTL before the latest the server's lease can
end (`server_end_at_most`), one KeepAlive per cycle. A client with watches keeps a long
poll out for its events but abandons it after `hold_cap` = (TTL/3 - margin)/2 and sends
another (an abandoned poll extends nothing: the server checks that its client is still
there), so every answer arrives at most `hold_cap` after its send. Either way the local
lease stays healthy while a round trip (with the commit) takes under (TTL/3 - margin)/2:
about 230 ms at a 2 s TTL, 1.2 s at the default 10 s (margin TTL/10).
In JEOPARDY the same KeepAlive goes to every member at once until one answers (a stopped
member cannot hold up the others) or the grace period ends. Each attempt gets half the
margin (at least 0.2 s), then goes again on a new connection: a connection that went
silent is not waited on, a member that is back is asked at least twice before the
server's lease (which ends within about a margin, unless a new leader renewed it) runs
out; a new leader answers a session's first KeepAlive at once (it does not hold it on the
fresh lease it granted). Answers carry `held_ms`, which the local lease adds to the send
time (lockservice/lease.py). LOST is final: every held lock
is invalid, watches end with SessionLost, and later calls that need the session raise it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from lockservice import api_calls as calls
from lockservice.client_errors import ClientError, MembersUnavailable, SessionLost
from lockservice.handles import Watch, event_from_json
from lockservice.lease import LeaseState, LocalLease, Transition
from lockservice.members import Members

log = logging.getLogger(__name__)

Callback = Callable[[Transition], object]


class SessionKeeper:
    def __init__(self, members: Members, lease: LocalLease, ttl_ms: int,
                 callbacks: dict[LeaseState, Callback | None]) -> None:
        self.members, self.lease, self.ttl_s = members, lease, ttl_ms / 1000
        self.callbacks = callbacks
        self.session_id: int | None = None
        self.transitions: list[Transition] = []  # every transition so far, oldest first
        self.watches: list[Watch] = []
        self._ack = 0  # the last event seen
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()  # the watchdog's: a deadline moved
        self._poll_now = asyncio.Event()  # the keepalive's: a watch was added, or a transition

    def start(self, session_id: int) -> None:
        self.session_id = session_id
        self._tasks = [asyncio.create_task(self._keepalive_loop(), name="lock-keepalive"),
                       asyncio.create_task(self._watchdog(), name="lock-watchdog")]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for watch in list(self.watches):
            watch.close()

    def add_watch(self, prefix: str) -> Watch:
        watch = Watch(prefix, self.watches.remove)
        self.watches.append(watch)
        self._poll_now.set()  # hear its events from now on
        return watch

    async def _keepalive_loop(self) -> None:
        assert self.session_id is not None
        path = f"/lock/v1/sessions/{self.session_id}/keepalive"
        ttl_s, margin = self.ttl_s, self.lease.safety_margin_s
        hold_cap = (ttl_s / 3 - margin) / 2
        retry_s = max(0.2, min(ttl_s / 3, margin / 2))
        while self.lease.state is not LeaseState.LOST:
            if self.lease.state is LeaseState.HEALTHY and not self.watches:
                # Nothing to hear early: send when the server will answer at once.
                await self._sleep_until(self.lease.server_end_at_most - ttl_s / 3)
            sent = time.monotonic()
            try:
                if self.lease.state is LeaseState.HEALTHY:
                    left = max(0.05, self.lease.remaining(sent))
                    if self.watches:
                        # A long poll held past `hold_cap` is abandoned (the server extends
                        # nothing for it) and sent again, so that no answer comes too long
                        # after its send time, from which the lease is counted.
                        left = min(left, hold_cap)
                    reply = await self.members.call("POST", path, {"ack": self._ack},
                                                   timeout_s=left, attempt_timeout_s=left,
                                                   long_poll=bool(self.watches))
                else:  # jeopardy: every member at once, until the grace period ends
                    left = max(0.05, self.lease.grace_ends_at - sent)
                    reply = await self.members.race("POST", path, {"ack": self._ack},
                                                    timeout_s=left,
                                                    attempt_timeout_s=retry_s)
            except MembersUnavailable as exc:
                log.debug("session %d keepalive: %s", self.session_id, exc)
                self.apply(self.lease.poll(time.monotonic()))
                continue
            if reply.status in (404, 410):
                self.apply(self.lease.ended(time.monotonic(), reply.body.get("error", "ended")))
                return
            try:
                body = calls.check(reply)
                events = [event_from_json(e) for e in calls.field(body, "events", list)]
                lease_ms = calls.field(body, "lease_ms", int)
                held = body.get("held_ms", 0)  # absent from servers before it was added
                held_ms = held if type(held) is int and held >= 0 else 0
            except (ClientError, ValueError) as exc:
                log.warning("session %d keepalive answer refused: %s", self.session_id, exc)
                await asyncio.sleep(0.1)
                continue
            self._dispatch(events)
            self.apply(self.lease.renewed(sent, lease_ms, time.monotonic(), held_ms))

    async def _sleep_until(self, at: float) -> None:
        """Sleep until `at` or until the watchdog or a new watch wakes the loop."""
        self._poll_now.clear()
        delay = at - time.monotonic()
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._poll_now.wait()

    async def _watchdog(self) -> None:
        while True:
            self._wake.clear()
            self.apply(self.lease.poll(time.monotonic()))
            deadline = self.lease.next_deadline()
            if deadline is None:
                return
            try:
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    await self._wake.wait()
            except TimeoutError:
                pass

    def _dispatch(self, events: list[Any]) -> None:
        for event in events:
            if event.seq <= self._ack:
                continue  # delivered again after a failover: the ack did not reach the leader
            self._ack = event.seq
            for watch in self.watches:
                if event.name.startswith(watch.prefix):
                    watch.deliver(event)

    def apply(self, changes: list[Transition]) -> None:
        """Record transitions: log them, wake the tasks, end watches on LOST, call back."""
        for t in changes:
            self.transitions.append(t)
            self._wake.set()
            self._poll_now.set()
            level = logging.INFO if t.new is LeaseState.HEALTHY else logging.WARNING
            log.log(level, "session %s: %s -> %s (%s)", self.session_id, t.old.value,
                    t.new.value, t.reason)
            if t.new is LeaseState.LOST:
                for watch in self.watches:
                    watch.deliver(SessionLost(f"session {self.session_id}: {t.reason}"))
            callback = self.callbacks.get(t.new)
            if t.old is LeaseState.NEW:
                continue  # opening the session is no recovery
            if callback is not None:
                try:
                    callback(t)
                except Exception:
                    log.exception("lock session %s callback failed", self.session_id)


__all__ = ["Callback", "SessionKeeper"]
