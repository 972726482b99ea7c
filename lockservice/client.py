"""The lock service's client library: `LockClient` (sync) and `AsyncLockClient` (asyncio).

    from lockservice.client import LockClient

    with LockClient(["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"]) as client:
        with client.lock("reports/daily") as held:
            held.check()                       # raises LockLost once the lease is in doubt
            store.put(b"report", data, sequencer=held.token)

`LockClient` runs an `AsyncLockClient` on its own event loop in a background thread, so the
session's keepalive goes on while the caller's thread computes or blocks. Each method waits
for the coroutine of the same name; callbacks (`on_jeopardy`, `on_safe`, `on_lost`) run on
that background thread and must not block. Session states, jeopardy and the grace period:
lockservice/async_client.py and lockservice/lease.py.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator, Sequence
from typing import Any, TypeVar

from lockservice.async_client import AsyncLockClient
from lockservice.client_errors import (
    ClientError,
    EntryNotFound,
    LockBusy,
    LockLost,
    MembersUnavailable,
    RequestRejected,
    SequencerNotCurrent,
    SessionLost,
    VersionMismatch,
)
from lockservice.election import Election, Leader
from lockservice.events import Event
from lockservice.handles import EntryValue, HeldLock, Watch
from lockservice.lease import LeaseState, Transition

T = TypeVar("T")


class LockClient:
    """A session with a lock-service group, for synchronous code. Opens on construction."""

    def __init__(self, members: Sequence[str], **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="lock-client",
                                        daemon=True)
        self._thread.start()
        self._closed = False
        try:
            self.aio: AsyncLockClient = self._run(_make(members, options))
            self._run(self.aio.open())
        except BaseException:
            self._stop_loop()
            raise

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coro.close()
            raise ClientError("the lock client is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def __enter__(self) -> LockClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        try:
            self._run(self.aio.close())
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._closed = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    # -- the session ------------------------------------------------------------------------

    @property
    def session_id(self) -> int | None:
        return self.aio.session_id

    @property
    def state(self) -> LeaseState:
        return self.aio.state

    def holding(self) -> bool:
        return self.aio.holding()

    # -- locks, entries, watches: the AsyncLockClient's methods, waited for ---------------------

    def acquire(self, name: str, **kw: Any) -> HeldLock:
        return self._run(self.aio.acquire(name, **kw))

    def try_acquire(self, name: str, **kw: Any) -> HeldLock | None:
        return self._run(self.aio.try_acquire(name, **kw))

    def release(self, held: HeldLock) -> None:
        self._run(self.aio.release(held))

    def lock(self, name: str, **kw: Any) -> _SyncLock:
        """`with client.lock("name", timeout=..., mode=...) as held:`"""
        return _SyncLock(self, name, kw)

    def lock_status(self, name: str, *, stale: bool = False) -> dict[str, Any]:
        return self._run(self.aio.lock_status(name, stale=stale))

    def check_sequencer(self, token: str) -> bool:
        return self._run(self.aio.check_sequencer(token))

    def leader(self) -> dict[str, Any]:
        return self._run(self.aio.leader())

    def get(self, name: str, *, stale: bool = False) -> EntryValue | None:
        return self._run(self.aio.get(name, stale=stale))

    def put(self, name: str, value: bytes, **kw: Any) -> int:
        return self._run(self.aio.put(name, value, **kw))

    def cas(self, name: str, value: bytes, expected_version: int) -> int:
        return self._run(self.aio.cas(name, value, expected_version))

    def delete(self, name: str, *, expected_version: int | None = None) -> None:
        self._run(self.aio.delete(name, expected_version=expected_version))

    def watch(self, prefix: str) -> SyncWatch:
        """Events on names starting with `prefix`: `for event in client.watch("jobs/")`."""
        return SyncWatch(self, self._run(self.aio.watch(prefix)))

    def election(self, *, lock_delay_ms: int | None = None) -> SyncElection:
        """Elections over this session (lockservice/election.py), for synchronous code."""
        return SyncElection(self, Election(self.aio, lock_delay_ms=lock_delay_ms))


class SyncElection:
    """`Election`'s methods, waited for; `observe` is a plain iterator."""

    def __init__(self, client: LockClient, election: Election) -> None:
        self.client, self.aio = client, election

    def campaign(self, name: str, value: bytes | str, *, timeout: float | None = None) -> Leader:
        return self.client._run(self.aio.campaign(name, value, timeout=timeout))

    def resign(self) -> None:
        self.client._run(self.aio.resign())

    def leader(self, name: str) -> Leader | None:
        return self.client._run(self.aio.leader(name))

    def observe(self, name: str) -> Iterator[Leader | None]:
        changes = self.aio.observe(name)
        try:
            while True:
                try:
                    yield self.client._run(changes.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            if not self.client._closed:
                self.client._run(changes.aclose())

    @property
    def is_leader(self) -> bool:
        return self.aio.is_leader

    @property
    def sequencer(self) -> str:
        return self.aio.sequencer

    def check(self) -> None:
        self.aio.check()


class _SyncLock:
    def __init__(self, client: LockClient, name: str, kw: dict[str, Any]) -> None:
        self.client, self.name, self.kw = client, name, kw
        self.held: HeldLock | None = None

    def __enter__(self) -> HeldLock:
        self.held = self.client.acquire(self.name, **self.kw)
        return self.held

    def __exit__(self, *exc: object) -> None:
        if self.held is not None:
            self.client.release(self.held)


class SyncWatch:
    """A watch read from synchronous code; `next(timeout)` returns None after `timeout`."""

    def __init__(self, client: LockClient, watch: Watch) -> None:
        self.client, self.watch = client, watch
        self.prefix = watch.prefix

    def next(self, timeout: float | None = None) -> Event | None:
        return self.client._run(self.watch.next(timeout))

    def __iter__(self) -> Iterator[Event]:
        while True:
            try:
                yield self.client._run(self.watch.__anext__())
            except StopAsyncIteration:
                return

    def close(self) -> None:
        self.client._loop.call_soon_threadsafe(self.watch.close)


async def _make(members: Sequence[str], options: dict[str, Any]) -> AsyncLockClient:
    return AsyncLockClient(members, **options)  # built on the client's loop


__all__ = [
    "AsyncLockClient",
    "ClientError",
    "EntryNotFound",
    "EntryValue",
    "HeldLock",
    "LockBusy",
    "LockClient",
    "LockLost",
    "MembersUnavailable",
    "RequestRejected",
    "SequencerNotCurrent",
    "SessionLost",
    "SyncElection",
    "SyncWatch",
    "Transition",
    "VersionMismatch",
]
