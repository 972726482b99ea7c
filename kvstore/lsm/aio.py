"""An asyncio face for the engine: every call that may touch the disk (fsync under
sync="always", table reads, flushes, compactions, open and close) runs in a worker
thread, so the event loop never blocks on I/O.

    async with await AsyncEngine.open(path, sync="always") as db:
        await db.put(b"k", b"v")
        async for key, value in db.scan(b"a", b"z"):
            ...
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from itertools import islice
from typing import Any

from .batch import WriteBatch
from .engine import Engine, Scan, Snapshot

_SCAN_CHUNK = 256  # pairs fetched per worker-thread hop during a scan


class AsyncEngine:
    """Wraps an `Engine`; each method awaits the blocking call run in a thread."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    async def open(cls, path: str, sync: str = "always", **options: Any) -> AsyncEngine:
        return cls(await asyncio.to_thread(Engine.open, path, sync, **options))

    async def get(self, key: bytes, *, snapshot: Snapshot | None = None) -> bytes | None:
        return await asyncio.to_thread(self.engine.get, key, snapshot=snapshot)

    async def put(self, key: bytes, value: bytes) -> None:
        await asyncio.to_thread(self.engine.put, key, value)

    async def delete(self, key: bytes) -> None:
        await asyncio.to_thread(self.engine.delete, key)

    async def write(self, batch: WriteBatch) -> None:
        await asyncio.to_thread(self.engine.write, batch)

    def snapshot(self) -> Snapshot:
        """Takes no I/O (a sequence number and a count under the engine's mutex)."""
        return self.engine.snapshot()

    async def scan(self, start: bytes | None = None, end: bytes | None = None, *,
                   snapshot: Snapshot | None = None) -> AsyncIterator[tuple[bytes, bytes]]:
        """(key, value) pairs in [start, end) at one snapshot, read in chunks in a thread."""
        scan: Scan = await asyncio.to_thread(self.engine.scan, start, end, snapshot=snapshot)
        try:
            while True:
                chunk = await asyncio.to_thread(lambda: list(islice(scan, _SCAN_CHUNK)))
                for pair in chunk:
                    yield pair
                if len(chunk) < _SCAN_CHUNK:
                    return
        finally:
            scan.close()

    async def flush(self) -> None:
        await asyncio.to_thread(self.engine.flush)

    async def compact_range(self, start: bytes | None = None, end: bytes | None = None) -> None:
        await asyncio.to_thread(self.engine.compact_range, start, end)

    async def stats(self) -> dict[str, Any]:
        return await asyncio.to_thread(self.engine.stats)

    async def close(self) -> None:
        await asyncio.to_thread(self.engine.close)

    async def __aenter__(self) -> AsyncEngine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
