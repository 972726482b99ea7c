"""AsyncLockClient: one session with a lock-service group, on the caller's event loop.

Theory of operation (Chubby §2.8). `open()` creates a session with a TTL and starts two
tasks: the keepalive loop, which sends KeepAlives (each acknowledges the events seen; its
answer carries the renewed lease and new events), and the watchdog, which wakes at the
next deadline of the local lease (lockservice/lease.py) so that jeopardy and loss are
noticed on time even while a KeepAlive hangs at a stopped member. Callbacks
`on_jeopardy`, `on_safe`, `on_lost` get the `Transition`; they run on the loop and must
not block.

The KeepAlive timing and jeopardy: lockservice/keepalive.py. LOST is final: every held
lock is invalid, watches end with SessionLost, and later calls that need the session
raise it.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any

from lockservice import api_calls as calls
from lockservice.client_errors import ClientError, SessionLost
from lockservice.handles import EntryValue, HeldLock, Watch, parse_mode
from lockservice.keepalive import Callback, SessionKeeper
from lockservice.lease import LeaseState, LocalLease, Transition
from lockservice.members import Members, client_context
from lockservice.sequencer import LockMode, Sequencer

log = logging.getLogger(__name__)

# An unbounded wait asks again after the longest wait a member accepts (docs/lock-api.md);
# between two asks the lock may go to a later waiter (the server cancels a timed-out wait).
WAIT_CHUNK_MS = 300_000


class AsyncLockClient:
    def __init__(self, members: Sequence[str], *, ttl_ms: int = 10_000,
                 safety_margin_ms: int | None = None, grace_ms: int | None = None,
                 request_timeout_s: float = 10.0, on_jeopardy: Callback | None = None,
                 on_safe: Callback | None = None, on_lost: Callback | None = None,
                 token: str | None = None,
                 tls_ca: str | None = None, tls_cert: str | None = None,
                 tls_key: str | None = None) -> None:
        # TLS (lockservice/members.py): https:// members, or any of the CA / client cert
        tls = client_context(tls_ca, tls_cert, tls_key) if (tls_ca or tls_cert or tls_key) else None
        self.members = Members(members, token=token, tls=tls)
        self.ttl_ms = ttl_ms
        self.lease = LocalLease.for_ttl(ttl_ms, safety_margin_ms=safety_margin_ms,
                                        grace_ms=grace_ms)
        if self.lease.safety_margin_s * 3000 >= ttl_ms:
            raise ValueError("the safety margin must be under a third of the TTL: the leader "
                             "renews a lease when a third of it is left")
        self.request_timeout_s = request_timeout_s
        self.callbacks = {LeaseState.JEOPARDY: on_jeopardy, LeaseState.HEALTHY: on_safe,
                          LeaseState.LOST: on_lost}
        self.session_id: int | None = None
        self.keeper = SessionKeeper(self.members, self.lease, ttl_ms, self.callbacks)
        self._closed = False

    # -- session ----------------------------------------------------------------------------

    async def __aenter__(self) -> AsyncLockClient:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> int:
        """Create the session and start keeping it alive; returns its id. Once per client."""
        if self.session_id is not None or self._closed:
            raise ClientError("a client opens one session; make a new client for another")
        sent = time.monotonic()
        try:
            body = await calls.ok(self._call("POST", "/lock/v1/sessions",
                                             {"ttl_ms": self.ttl_ms}))
        except BaseException:
            await self.members.close()  # nothing else was started
            raise
        self.session_id = calls.field(body, "session", int)
        self.keeper.apply([self.lease.open(sent, calls.field(body, "lease_ms", int),
                                           time.monotonic())])
        await self._prefer_leader()
        self.keeper.start(self.session_id)
        log.info("opened lock session %d (ttl %d ms)", self.session_id, self.ttl_ms)
        return self.session_id

    async def close(self) -> None:
        """End the session (its locks and ephemerals are freed at once) and the tasks."""
        if self._closed:
            return
        self._closed = True
        await self.keeper.stop()
        if self.session_id is not None and self.lease.state is not LeaseState.LOST:
            try:
                await self._call("DELETE", f"/lock/v1/sessions/{self.session_id}",
                                 timeout_s=min(self.request_timeout_s, 2.0))
            except ClientError as exc:
                log.warning("could not close session %d: %s", self.session_id, exc)
        await self.members.close()

    @property
    def transitions(self) -> list[Transition]:
        """Every transition of the session so far, oldest first."""
        return self.keeper.transitions

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
        """Release `held` (invalid from now on). Quiet when the session already ended: the
        server freed the lock with it. Raises MembersUnavailable if no member answered (the
        lock is then freed when the session ends)."""
        if held.released:
            return
        held.released = True
        if self.lease.state is LeaseState.LOST or self._closed:
            return
        reply = await self._call("POST", calls.path("locks", held.name, "release"),
                                 {"session": held.session})
        if reply.status in (200, 204) or reply.body.get("error") == "not_holder":
            return
        with contextlib.suppress(SessionLost):  # expired meanwhile: freed with the session
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
        return self.keeper.add_watch(prefix)

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
