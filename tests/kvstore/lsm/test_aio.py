"""The asyncio wrapper (aio.py): same results as the engine, and blocking disk work runs
off the event loop (the loop keeps ticking while writers wait for fsync)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from kvstore.lsm import AsyncEngine, EngineClosedError, WriteBatch
from kvstore.lsm.filesystem import FaultInjectionFileSystem


def test_async_engine_reads_writes_scans_and_closes(tmp_path: Path) -> None:
    async def main() -> None:
        async with await AsyncEngine.open(str(tmp_path), sync="always") as db:
            await db.put(b"a", b"1")
            await db.write(WriteBatch().put(b"b", b"2").put(b"c", b"3"))
            await db.delete(b"c")
            assert await db.get(b"a") == b"1"
            assert await db.get(b"c") is None
            snap = db.snapshot()
            await db.put(b"a", b"changed")
            assert [kv async for kv in db.scan(snapshot=snap)] == [(b"a", b"1"), (b"b", b"2")]
            snap.release()
            for i in range(600):
                await db.put(b"k%04d" % i, b"v")
            assert len([kv async for kv in db.scan(b"k", b"l")]) == 600
            await db.flush()
            await db.compact_range()
            assert (await db.stats())["last_seq"] == 605
        with pytest.raises(EngineClosedError):
            await db.put(b"x", b"y")

    asyncio.run(main())


def test_fsync_never_runs_on_the_event_loop_thread(tmp_path: Path) -> None:
    async def main() -> None:
        loop_thread = threading.get_ident()
        sync_threads: list[int] = []

        class RecordingFS(FaultInjectionFileSystem):
            def _synced_to(self, node, size):  # called by the thread that fsynced
                sync_threads.append(threading.get_ident())
                super()._synced_to(node, size)

        db = await AsyncEngine.open(str(tmp_path), sync="always", fs=RecordingFS())
        sync_threads.clear()
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        await asyncio.gather(*(db.put(b"k%d" % i, b"v") for i in range(50)))
        task.cancel()
        await db.close()
        assert sync_threads and loop_thread not in sync_threads
        assert ticks > 0

    asyncio.run(main())
