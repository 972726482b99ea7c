"""Per-key asyncio locks and critical sections a cancelled caller cannot split.

Theory of operation
- `KeyLocks.hold(key)` takes an `asyncio.Lock` for one key. A lock object exists only
  while someone holds or waits on it (a user count per entry), so memory follows the
  keys in flight, not the keys ever seen. `hold_all(keys)` takes several in sorted order,
  so two batches that share keys never deadlock.
- `Sections.run(coro)` runs a read-modify-write as its own task and awaits it shielded.
  If the caller is cancelled it stops waiting, but the section goes on to its end and
  releases its locks itself: a lock is never released while a write it guards is still
  being applied in a worker thread, so the next writer never reads a state older than one
  being written. `drain()` waits for every section in flight (before closing storage).

Used by the replica store and the hint store (kvstore/replica.py, kvstore/hints.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine, Hashable, Iterable
from typing import Any, TypeVar

T = TypeVar("T")


class KeyLocks:
    """One asyncio.Lock per key in use; an entry lives while someone holds or waits on it."""

    def __init__(self) -> None:
        self._locks: dict[Hashable, list[Any]] = {}  # key -> [lock, users]

    def __len__(self) -> int:
        return len(self._locks)

    @contextlib.asynccontextmanager
    async def hold(self, key: Hashable) -> AsyncIterator[None]:
        entry = self._locks.get(key)
        if entry is None:
            entry = self._locks[key] = [asyncio.Lock(), 0]
        entry[1] += 1
        try:
            async with entry[0]:
                yield
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                del self._locks[key]

    @contextlib.asynccontextmanager
    async def hold_all(self, keys: Iterable[Any]) -> AsyncIterator[None]:
        """Hold every key's lock, taken in sorted order (no deadlock between batches)."""
        async with contextlib.AsyncExitStack() as stack:
            for key in sorted(set(keys)):
                await stack.enter_async_context(self.hold(key))
            yield


class Sections:
    """Runs critical sections as tasks the caller's cancellation cannot interrupt."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return await asyncio.shield(task)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # mark it retrieved: a cancelled caller never looks at it

    async def drain(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


__all__ = ["KeyLocks", "Sections"]
