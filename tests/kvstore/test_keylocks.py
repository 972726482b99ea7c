"""KeyLocks and Sections (kvstore/keylocks.py): mutual exclusion per key, bounded memory,
and critical sections that outlive a cancelled caller."""

from __future__ import annotations

import asyncio

import pytest

from kvstore.keylocks import KeyLocks, Sections


def test_one_holder_per_key_and_no_lock_kept_when_idle() -> None:
    async def main() -> None:
        locks = KeyLocks()
        inside: dict[str, int] = {"a": 0, "b": 0}
        peak: dict[str, int] = {"a": 0, "b": 0}

        async def worker(key: str) -> None:
            async with locks.hold(key):
                inside[key] += 1
                peak[key] = max(peak[key], inside[key])
                await asyncio.sleep(0)
                inside[key] -= 1

        await asyncio.gather(*(worker("ab"[i % 2]) for i in range(40)))
        assert peak == {"a": 1, "b": 1}
        assert len(locks) == 0

    asyncio.run(main())


def test_hold_all_in_sorted_order_never_deadlocks_and_frees_waiters_on_cancel() -> None:
    async def main() -> None:
        locks = KeyLocks()
        order: list[int] = []

        async def batch(i: int, keys: list[str]) -> None:
            async with locks.hold_all(keys):
                order.append(i)
                await asyncio.sleep(0)

        await asyncio.gather(*(batch(i, ["x", "y", "z"][::1 - 2 * (i % 2)])
                               for i in range(20)))
        assert sorted(order) == list(range(20)) and len(locks) == 0
        async with locks.hold("x"):
            waiter = asyncio.ensure_future(batch(99, ["x", "y"]))
            await asyncio.sleep(0)
            assert len(locks) == 1  # the waiter holds an entry for x only
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
        assert len(locks) == 0

    asyncio.run(main())


def test_a_section_finishes_after_its_caller_is_cancelled() -> None:
    async def main() -> None:
        sections = Sections()
        gate = asyncio.Event()
        done: list[str] = []

        async def section() -> str:
            await gate.wait()
            done.append("written")
            return "ok"

        async def failing() -> None:
            await gate.wait()
            raise RuntimeError("boom")

        caller = asyncio.ensure_future(sections.run(section()))
        loser = asyncio.ensure_future(sections.run(failing()))
        await asyncio.sleep(0)
        caller.cancel()
        loser.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        assert len(sections) == 2 and done == []
        gate.set()
        await sections.drain()  # the failure is retrieved, not reported as unhandled
        assert done == ["written"] and len(sections) == 0
        assert await sections.run(section()) == "ok"

    asyncio.run(main())
