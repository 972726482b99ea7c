"""AsyncLockClient: one session with a lock-service group, on the caller's event loop.

Theory of operation (Chubby §2.8). `open()` creates a session with a TTL and starts two
tasks: the keepalive loop, which sends KeepAlives (each acknowledges the events seen; its
answer carries the renewed lease and new events), and the watchdog, which wakes at the
next deadline of the local lease (lockservice/lease.py) so that jeopardy and loss are
noticed on time even while a KeepAlive hangs at a stopped member. Callbacks
`on_jeopardy`, `on_safe`, `on_lost` get the `Transition`; they run on the loop and must
not block.

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
member cannot hold up the others) or the grace period ends. LOST is final: every held lock
is invalid, watches end with SessionLost, and later calls that need the session raise it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from lockservice import api_calls as calls
from lockservice.client_errors import ClientError, MembersUnavailable, SessionLost
from lockservice.handles import EntryValue, HeldLock, Watch, event_from_json, parse_mode
from lockservice.lease import LeaseState, LocalLease, Transition
from lockservice.members import Members
from lockservice.sequencer import LockMode, Sequencer

log = logging.getLogger(__name__)

Callback = Callable[[Transition], object]
# An unbounded wait asks again after the longest wait a member accepts (docs/lock-api.md);
# between two asks the lock may go to a later waiter (the server cancels a timed-out wait).
WAIT_CHUNK_MS = 300_000


class AsyncLockClient:
    def __init__(self, members: Sequence[str], *, ttl_ms: int = 10_000,
                 safety_margin_ms: int | None = None, grace_ms: int | None = None,
                 request_timeout_s: float = 10.0, on_jeopardy: Callback | None = None,
                 on_safe: Callback | None = None, on_lost: Callback | None = None) -> None:
        self.members = Members(members)
        self.ttl_ms = ttl_ms
        self.lease = LocalLease.for_ttl(ttl_ms, safety_margin_ms=safety_margin_ms,
                                        grace_ms=grace_ms)
        self.request_timeout_s = request_timeout_s
        self.callbacks = {LeaseState.JEOPARDY: on_jeopardy, LeaseState.HEALTHY: on_safe,
                          LeaseState.LOST: on_lost}
        self.session_id: int | None = None
        self.transitions: list[Transition] = []  # every transition so far, oldest first
        self._ack = 0
        self._watches: list[Watch] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()  # the watchdog's: a deadline moved
        self._poll_now = asyncio.Event()  # the keepalive's: a watch was added, or a transition
        self._closed = False

    # -- session ----------------------------------------------------------------------------

    async def __aenter__(self) -> AsyncLockClient:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> int:
        sent = time.monotonic()
        try:
            body = await calls.ok(self._call("POST", "/lock/v1/sessions",
                                             {"ttl_ms": self.ttl_ms}))
        except BaseException:
            await self.members.close()  # nothing else was started
            raise
        self.session_id = calls.field(body, "session", int)
        self._apply([self.lease.open(sent, calls.field(body, "lease_ms", int),
                                     time.monotonic())])
        await self._prefer_leader()
        self._tasks = [asyncio.create_task(self._keepalive_loop(), name="lock-keepalive"),
                       asyncio.create_task(self._watchdog(), name="lock-watchdog")]
        log.info("opened lock session %d (ttl %d ms)", self.session_id, self.ttl_ms)
        return self.session_id

    async def close(self) -> None:
        """End the session (its locks and ephemerals are freed at once) and the tasks."""
        if self._closed:
            return
        self._closed = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.session_id is not None and self.lease.state is not LeaseState.LOST:
            try:
                await self._call("DELETE", f"/lock/v1/sessions/{self.session_id}",
                                 timeout_s=min(self.request_timeout_s, 2.0))
            except ClientError as exc:
                log.warning("could not close session %d: %s", self.session_id, exc)
        for watch in list(self._watches):
            watch.close()
        await self.members.close()

    @property
    def state(self) -> LeaseState:
        return self.lease.state

    def holding(self) -> bool:
        """Whether this client may act as holder of its locks right now."""
        return self.lease.holding_at(time.monotonic())

    def _session(self) -> int:
        if self.session_id is None:
            raise ClientError("the session is not open; call open() first")
        if self.lease.state is LeaseState.LOST or self._closed:
            raise SessionLost(f"session {self.session_id} is over")
        return self.session_id

    # -- locks --------------------------------------------------------------------------------

    async def acquire(self, name: str, *, mode: str | LockMode = "exclusive",
                      timeout: float | None = None, lock_delay_ms: int | None = None) -> HeldLock:
        """Acquire `name`, waiting up to `timeout` seconds (None: forever; 0: try once).

        Raises LockBusy when the lock is not granted in time, SessionLost, or RequestRejected.
        """
        lock_mode = parse_mode(mode)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = WAIT_CHUNK_MS / 1000 if deadline is None else deadline - time.monotonic()
            wait_ms = max(0, min(WAIT_CHUNK_MS, int(left * 1000)))
            body = {"session": self._session(), "mode": lock_mode.name.lower(),
                    "wait_ms": wait_ms}
            if lock_delay_ms is not None:
                body["lock_delay_ms"] = lock_delay_ms
            reply = await self._call("POST", calls.path("locks", name, "acquire"), body,
                                     timeout_s=self.request_timeout_s + wait_ms / 1000)
            try:
                got = calls.check(reply)
            except calls.LockBusy:
                if deadline is None or deadline - time.monotonic() > 0.001:
                    continue
                raise
            token = calls.field(got, "sequencer", str)
            seq = Sequencer(name, lock_mode, calls.field(got, "generation", int),
                            self.session_id or 0)
            return HeldLock(seq, token, self.holding)

    async def try_acquire(self, name: str, **kw: Any) -> HeldLock | None:
        """Acquire without waiting; None when the lock is busy or under lock-delay."""
        try:
            return await self.acquire(name, timeout=0, **kw)
        except calls.LockBusy:
            return None

    async def release(self, held: HeldLock) -> None:
        if held.released:
            return
        held.released = True
        if self.lease.state is LeaseState.LOST or self._closed:
            return  # the server frees it with the session
        reply = await self._call("POST", calls.path("locks", held.name, "release"),
                                 {"session": held.session})
        if reply.status not in (200, 204) and reply.body.get("error") != "not_holder":
            calls.check(reply)

    def lock(self, name: str, **kw: Any) -> _LockContext:
        """`async with client.lock("name") as held:` acquire, and release on the way out."""
        return _LockContext(self, name, kw)

    async def lock_status(self, name: str, *, stale: bool = False) -> dict[str, Any]:
        return await calls.ok(self._call("GET", calls.path("locks", name), params=_stale(stale)))

    async def check_sequencer(self, token: str) -> bool:
        body = await calls.ok(self._call("POST", "/lock/v1/sequencers/check",
                                         {"sequencer": token}))
        return calls.field(body, "current", bool)

    async def leader(self) -> dict[str, Any]:
        return await calls.ok(self._call("GET", "/lock/v1/leader"))

    # -- entries ------------------------------------------------------------------------------

    async def get(self, name: str, *, stale: bool = False) -> EntryValue | None:
        reply = await self._call("GET", calls.path("entries", name), params=_stale(stale))
        if reply.status == 404 and reply.body.get("error") in ("not_found", None, ""):
            return None
        body = calls.check(reply)
        value = base64.b64decode(calls.field(body, "value", str), validate=True)
        return EntryValue(value, calls.field(body, "version", int))

    async def put(self, name: str, value: bytes, *, expected_version: int | None = None,
                  ephemeral: bool = False) -> int:
        """Write an entry; `expected_version` makes it a compare-and-set (0: must not exist).

        `ephemeral` binds it to this session: it is deleted when the session ends.
        """
        body: dict[str, Any] = {"value": base64.b64encode(bytes(value)).decode()}
        if expected_version is not None:
            body["expected_version"] = expected_version
        if ephemeral:
            body["ephemeral_session"] = self._session()
        got = await calls.ok(self._call("PUT", calls.path("entries", name), body))
        return calls.field(got, "version", int)

    async def cas(self, name: str, value: bytes, expected_version: int) -> int:
        return await self.put(name, value, expected_version=expected_version)

    async def delete(self, name: str, *, expected_version: int | None = None) -> None:
        params = None if expected_version is None else {"expected_version": str(expected_version)}
        await calls.ok(self._call("DELETE", calls.path("entries", name), params=params))

    async def watch(self, prefix: str) -> Watch:
        """Events on names starting with `prefix` from now on (lock and entry changes)."""
        await calls.ok(self._call("POST", f"/lock/v1/sessions/{self._session()}/watches",
                                  {"prefix": prefix}))
        watch = Watch(prefix, self._watches.remove)
        self._watches.append(watch)
        self._poll_now.set()  # hear its events from now on
        return watch

    # -- background ---------------------------------------------------------------------------

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None, *,
                    timeout_s: float | None = None, attempt_timeout_s: float | None = None,
                    params: dict[str, str] | None = None) -> calls.Reply:
        return await self.members.call(method, path, body, params=params,
                                       timeout_s=timeout_s or self.request_timeout_s,
                                       attempt_timeout_s=attempt_timeout_s)

    async def _prefer_leader(self) -> None:
        """Talk to the leader directly when it is one of our members (no forwarding hop)."""
        try:
            got = calls.check(await self._call("GET", "/lock/v1/leader", timeout_s=1.0))
        except ClientError:
            return
        if got.get("address") in self.members.addresses:
            self.members.current = self.members.addresses.index(got["address"])

    async def _keepalive_loop(self) -> None:
        path = f"/lock/v1/sessions/{self.session_id}/keepalive"
        ttl_s, margin = self.ttl_ms / 1000, self.lease.safety_margin_s
        hold_cap = (ttl_s / 3 - margin) / 2
        while self.lease.state is not LeaseState.LOST:
            if self.lease.state is LeaseState.HEALTHY and not self._watches:
                # Nothing to hear early: send when the server will answer at once.
                await self._sleep_until(self.lease.server_end_at_most - ttl_s / 3)
            sent = time.monotonic()
            try:
                if self.lease.state is LeaseState.HEALTHY:
                    left = max(0.05, self.lease.remaining(sent))
                    if self._watches:
                        # A long poll held past `hold_cap` is abandoned (the server extends
                        # nothing for it) and sent again, so that no answer comes too long
                        # after its send time, from which the lease is counted.
                        left = min(left, hold_cap)
                    reply = await self._call("POST", path, {"ack": self._ack}, timeout_s=left,
                                             attempt_timeout_s=left)
                else:  # jeopardy: every member at once, until the grace period ends
                    left = max(0.05, self.lease.grace_ends_at - sent)
                    reply = await self.members.race("POST", path, {"ack": self._ack},
                                                    timeout_s=left)
            except MembersUnavailable as exc:
                log.debug("session %d keepalive: %s", self.session_id, exc)
                self._apply(self.lease.poll(time.monotonic()))
                continue
            if reply.status in (404, 410):
                self._apply(self.lease.ended(time.monotonic(), reply.body.get("error", "ended")))
                return
            try:
                body = calls.check(reply)
                events = [event_from_json(e) for e in calls.field(body, "events", list)]
                lease_ms = calls.field(body, "lease_ms", int)
            except (ClientError, ValueError) as exc:
                log.warning("session %d keepalive answer refused: %s", self.session_id, exc)
                await asyncio.sleep(0.1)
                continue
            self._dispatch(events)
            self._apply(self.lease.renewed(sent, lease_ms, time.monotonic()))

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
            self._apply(self.lease.poll(time.monotonic()))
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
            for watch in self._watches:
                if event.name.startswith(watch.prefix):
                    watch.deliver(event)

    def _apply(self, changes: list[Transition]) -> None:
        for t in changes:
            self.transitions.append(t)
            self._wake.set()
            self._poll_now.set()
            level = logging.INFO if t.new is LeaseState.HEALTHY else logging.WARNING
            log.log(level, "session %s: %s -> %s (%s)", self.session_id, t.old.value,
                    t.new.value, t.reason)
            if t.new is LeaseState.LOST:
                for watch in self._watches:
                    watch.deliver(SessionLost(f"session {self.session_id}: {t.reason}"))
            callback = self.callbacks.get(t.new)
            if t.old is LeaseState.NEW:
                continue  # opening the session is no recovery
            if callback is not None:
                try:
                    callback(t)
                except Exception:
                    log.exception("lock session %s callback failed", self.session_id)


class _LockContext:
    def __init__(self, client: AsyncLockClient, name: str, kw: dict[str, Any]) -> None:
        self.client, self.name, self.kw = client, name, kw
        self.held: HeldLock | None = None

    async def __aenter__(self) -> HeldLock:
        self.held = await self.client.acquire(self.name, **self.kw)
        return self.held

    async def __aexit__(self, *exc: object) -> None:
        if self.held is not None:
            await self.client.release(self.held)


def _stale(stale: bool) -> dict[str, str] | None:
    return {"stale": "1"} if stale else None
