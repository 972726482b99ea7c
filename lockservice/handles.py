"""What the lock client hands out: held locks, entry values, watch streams, and events.

A `HeldLock` is the client's proof of holding a lock, and carries the sequencer to pass
downstream (`held.token`, e.g. as the KV store's `sequencer=`). It is valid only while the
session's local lease is healthy (lockservice/lease.py): from the instant the local lease
runs out without a renewal, `valid` is False and `check()` raises LockLost, before the
server could let anyone else take the lock. If the session recovers within its grace period
the server still holds the lock for it, and `valid` is True again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lockservice.client_errors import LockLost
from lockservice.events import Event, EventKind
from lockservice.sequencer import LockMode, Sequencer


class HeldLock:
    def __init__(self, sequencer: Sequencer, token: str, holding: Callable[[], bool]) -> None:
        self.sequencer = sequencer
        self.token = token  # the opaque sequencer token (lockservice/sequencer.py)
        self.released = False
        self._holding = holding  # the session's "local lease is healthy now"

    name = property(lambda self: self.sequencer.name)
    mode = property(lambda self: self.sequencer.mode)
    generation = property(lambda self: self.sequencer.generation)
    session = property(lambda self: self.sequencer.session)

    @property
    def valid(self) -> bool:
        """True while this client may act as the holder (not released, lease healthy)."""
        return not self.released and self._holding()

    def check(self) -> None:
        """Raise LockLost unless `valid`; call it before each action the lock protects."""
        if self.released:
            raise LockLost(f"lock {self.name!r} was released")
        if not self._holding():
            raise LockLost(f"session {self.session} is in jeopardy or lost: "
                           f"lock {self.name!r} may pass to another holder")

    def __repr__(self) -> str:
        state = "valid" if self.valid else "invalid"
        return (f"HeldLock({self.name!r}, {self.mode.name.lower()}, "
                f"generation={self.generation}, session={self.session}, {state})")


@dataclass(frozen=True, slots=True)
class EntryValue:
    value: bytes
    version: int


def parse_mode(mode: str | LockMode) -> LockMode:
    if isinstance(mode, LockMode):
        return mode
    try:
        return LockMode[str(mode).upper()]
    except KeyError:
        raise ValueError(f"lock mode is 'exclusive' or 'shared', not {mode!r}") from None


def event_from_json(data: Any) -> Event:
    """One event of a KeepAlive answer; raises ValueError for a malformed one."""
    if not isinstance(data, dict):
        raise ValueError("an event is a JSON object")
    kind = data.get("kind")
    try:
        parsed = EventKind[kind.upper()] if isinstance(kind, str) else EventKind(kind)
        fields = [data.get(k, 0) for k in ("seq", "session", "generation", "version")]
        if not all(type(v) is int for v in fields) or not isinstance(data.get("name"), str):
            raise ValueError("event fields have the wrong types")
    except (KeyError, ValueError) as exc:
        raise ValueError(f"not an event: {data!r:.200} ({exc})") from None
    seq, session, generation, version = fields
    return Event(seq, parsed, data["name"], session, generation, version)


class Watch:
    """Events whose name starts with `prefix`, in order; `async for event in watch`.

    Ends with SessionLost when the session ends, and quietly when closed.
    """

    def __init__(self, prefix: str, on_close: Callable[[Watch], None]) -> None:
        self.prefix = prefix
        self._queue: asyncio.Queue[Event | BaseException | None] = asyncio.Queue()
        self._on_close = on_close
        self.closed = False

    def deliver(self, item: Event | BaseException | None) -> None:
        if not self.closed:
            self._queue.put_nowait(item)

    def close(self) -> None:
        if not self.closed:
            self._queue.put_nowait(None)
            self.closed = True
            self._on_close(self)

    def __aiter__(self) -> Watch:
        return self

    async def __anext__(self) -> Event:
        item = await self._queue.get()
        if item is None:
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            self._queue.put_nowait(item)  # every later read fails the same way
            raise item
        return item

    async def next(self, timeout: float | None = None) -> Event | None:
        """The next event, or None after `timeout` seconds without one."""
        try:
            async with asyncio.timeout(timeout):
                return await self.__anext__()
        except TimeoutError:
            return None
