"""Calls in flight to several nodes (kvstore/fanout.py): replies are taken as they come, a
deadline ends the wait, a cancelled call counts as its node failing, and collect() stops
as soon as the quorum is decided."""

from __future__ import annotations

import asyncio
import time

from kvstore.errors import NodeUnavailable
from kvstore.fanout import Calls, collect
from kvstore.quorum import Tally


async def answer(value, delay: float):
    await asyncio.sleep(delay)
    if isinstance(value, Exception):
        raise value
    return value


def spawn_into(tasks: set):
    def spawn(coro):
        task = asyncio.ensure_future(coro)
        tasks.add(task)
        return task
    return spawn


async def gated(gate: asyncio.Event, value):
    await gate.wait()
    if isinstance(value, Exception):
        raise value
    return value


def test_replies_come_as_they_finish_and_failures_are_values() -> None:
    async def main():
        calls = Calls(spawn_into(set()))
        gates = {n: asyncio.Event() for n in ("slow", "fast", "bad")}
        calls.send("slow", gated(gates["slow"], "s"))
        calls.send("fast", gated(gates["fast"], "f"))
        calls.send("bad", gated(gates["bad"], NodeUnavailable("bad", "refused")))
        seen = []
        for node in ("fast", "bad", "slow"):  # the order in which they answer
            gates[node].set()
            seen += await calls.next(time.monotonic() + 30)
        assert [n for n, _ in seen] == ["fast", "bad", "slow"]
        assert dict(seen)["fast"] == "f" and isinstance(dict(seen)["bad"], NodeUnavailable)
        assert len(calls) == 0 and await calls.next(time.monotonic() + 30) == []
    asyncio.run(main())


def test_a_deadline_ends_the_wait_and_cancelled_calls_count_as_failures() -> None:
    async def main():
        tasks: set = set()
        calls = Calls(spawn_into(tasks))
        calls.send("silent", answer("never", 60))
        assert await calls.next(time.monotonic() + 0.01) == []
        assert len(calls) == 1
        for task in tasks:
            task.cancel()
        [(node, reply)] = await calls.next(time.monotonic() + 30)
        assert node == "silent" and isinstance(reply, NodeUnavailable)
    asyncio.run(main())


def test_collect_stops_once_the_quorum_is_decided() -> None:
    async def main():
        calls = Calls(spawn_into(set()))
        for node, delay in (("a", 0), ("b", 0.01), ("c", 60)):
            calls.send(node, answer(node.upper(), delay))
        tally, replies, failed = Tally(2, ["a", "b", "c"]), {}, []
        await collect(tally, calls, time.monotonic() + 30, replies, on_fail=failed.append)
        assert tally.reached and replies == {"a": "A", "b": "B"} and len(calls) == 1
        spare = Calls(spawn_into(set()))
        spare.send("x", answer(NodeUnavailable("x", "down"), 0))
        t2 = Tally(1, ["x"])
        await collect(t2, spare, time.monotonic() + 30, {}, on_fail=failed.append)
        assert t2.hopeless and failed == ["x"]
    asyncio.run(main())
