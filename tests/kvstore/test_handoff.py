"""Handoff (kvstore/handoff.py): hints reach their owner once it is back (Dynamo §4.6).

The receiver is always a real second ReplicaStore (deliver = its merge_many); an owner
that fails is one whose store is closed, so its merge_many raises.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from kvstore import quorum, vclock
from kvstore.handoff import Handoff
from kvstore.hints import HintStore
from kvstore.lsm import Engine, EngineClosedError
from kvstore.replica import ReplicaStore
from kvstore.ring import Ring
from kvstore.vclock import SiblingSet, VersionVector
from tests.waiting import async_wait_until

EMPTY = VersionVector()
OWNER, OTHER, FALLBACK = "127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7004"


def _write(value: bytes, node: str = FALLBACK, base: SiblingSet | None = None) -> SiblingSet:
    base = base or SiblingSet()
    return vclock.update(base, base.clock, node, value, timestamp=1)


async def _owner_store(path: Path, node: str = OWNER) -> ReplicaStore:
    return await ReplicaStore.open(path, node=node, ring_size=8, sync="none")


def test_4_6_hints_reach_the_owner_when_it_is_back_and_are_then_deleted(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        hints = await HintStore.open(tmp_path / "hints", sync="none")
        owner = await _owner_store(tmp_path / "owner")
        alive: set[str] = set()
        handoff = Handoff(hints, deliver=lambda o, items: owner.merge_many(items),
                          is_alive=lambda o: o in alive, interval_s=0.01, batch=16)
        try:
            states = {b"h%d" % i: _write(b"v%d" % i) for i in range(100)}
            for key, state in states.items():
                await hints.add(OWNER, key, state)
            assert await handoff.run_once() == 0  # owner down: nothing moves
            assert hints.count(OWNER) == 100
            alive.add(OWNER)
            with caplog.at_level(logging.INFO, logger="kvstore.handoff"):
                await handoff.start()
                assert await async_wait_until(lambda: hints.count() == 0)
                await handoff.stop()
            for key, state in states.items():
                assert await owner.get(key) == state
            stats = handoff.stats()
            assert (stats["delivered"], stats["failed"], stats["pending"]) == (100, 0, 0)
            assert owner.stats()["batches"] == 7  # 100 hints in batches of 16
            text = caplog.text
            assert f"handoff to {OWNER} started: 100 hints pending" in text
            assert f"handoff to {OWNER} ended: 100 delivered, 0 failed, 0 still" in text
        finally:
            await handoff.stop()
            await hints.close()
            await owner.close()

    asyncio.run(main())


def test_4_6_a_failing_owner_keeps_its_hints_and_backs_off(tmp_path: Path) -> None:
    async def main() -> None:
        hints = await HintStore.open(tmp_path / "hints", sync="none")
        target = {"store": await _owner_store(tmp_path / "owner")}
        await target["store"].close()  # the owner "fails": merge_many raises

        async def deliver(owner: str, items: list[tuple[bytes, SiblingSet]]) -> None:
            await target["store"].merge_many(items)

        handoff = Handoff(hints, deliver=deliver, is_alive=lambda o: True,
                          interval_s=0.01, max_backoff_s=0.05, batch=8)
        try:
            for i in range(20):
                await hints.add(OWNER, b"f%d" % i, _write(b"%d" % i))
            assert await handoff.run_once() == 0
            stats = handoff.stats()
            assert (stats["delivered"], stats["failed"], stats["pending"]) == (0, 8, 20)
            assert stats["errors"] == 1
            assert stats["owners"][OWNER]["retry_in_s"] > 0
            assert await handoff.run_once() == 0  # backing off: not even tried
            assert handoff.stats()["failed"] == 8
            with pytest.raises(EngineClosedError):  # the failure was real
                await target["store"].get(b"f0")
            target["store"] = await _owner_store(tmp_path / "owner")  # the owner is back
            await handoff.start()
            assert await async_wait_until(lambda: hints.count() == 0)
            await handoff.stop()
            for i in range(20):
                assert (await target["store"].get(b"f%d" % i)).values == [b"%d" % i]
            assert handoff.stats()["delivered"] == 20
        finally:
            await handoff.stop()
            await hints.close()
            await target["store"].close()

    asyncio.run(main())


def test_4_6_a_hint_that_grows_during_delivery_stays_for_the_next_round(
        tmp_path: Path) -> None:
    async def main() -> None:
        hints = await HintStore.open(tmp_path / "hints", sync="none")
        owner = await _owner_store(tmp_path / "owner")
        first = _write(b"first")
        late = _write(b"late", node=OTHER)  # concurrent with `first`
        raced = []

        async def deliver(o: str, items: list[tuple[bytes, SiblingSet]]) -> None:
            if not raced:  # a new write for the key reaches the fallback mid-delivery
                raced.append(await hints.add(OWNER, b"k", late))
            await owner.merge_many(items)

        handoff = Handoff(hints, deliver=deliver, is_alive=lambda o: True, batch=10)
        try:
            await hints.add(OWNER, b"k", first)
            assert await handoff.run_once() == 1  # a batch that removed nothing ends it
            assert hints.count(OWNER) == 1
            assert await hints.get(b"k") == raced[0]
            assert (await owner.get(b"k")).values == [b"first"]
            assert await handoff.run_once() == 1
            assert hints.count() == 0
            assert sorted((await owner.get(b"k")).values) == [b"first", b"late"]
        finally:
            await hints.close()
            await owner.close()

    asyncio.run(main())


def test_only_live_owners_get_their_hints_and_each_gets_only_its_own(tmp_path: Path) -> None:
    async def main() -> None:
        hints = await HintStore.open(tmp_path / "hints", sync="none")
        stores = {OWNER: await _owner_store(tmp_path / "a", OWNER),
                  OTHER: await _owner_store(tmp_path / "b", OTHER)}
        alive = {OWNER}
        handoff = Handoff(hints, deliver=lambda o, items: stores[o].merge_many(items),
                          is_alive=lambda o: o in alive)
        try:
            await hints.add(OWNER, b"mine", _write(b"a"))
            await hints.add(OTHER, b"theirs", _write(b"b"))
            assert await handoff.run_once() == 1
            assert hints.owners() == {OTHER}
            assert (await stores[OWNER].get(b"mine")).values == [b"a"]
            assert await stores[OWNER].get(b"theirs") == SiblingSet()
            assert await stores[OTHER].get(b"theirs") == SiblingSet()
            alive.add(OTHER)
            assert await handoff.run_once() == 1
            assert (await stores[OTHER].get(b"theirs")).values == [b"b"]
            assert await stores[OTHER].get(b"mine") == SiblingSet()
        finally:
            await hints.close()
            for s in stores.values():
                await s.close()

    asyncio.run(main())


def test_stop_during_a_delivery_keeps_the_hints(tmp_path: Path) -> None:
    async def main() -> None:
        hints = await HintStore.open(tmp_path / "hints", sync="none")
        entered = asyncio.Event()

        async def deliver(o: str, items: list[tuple[bytes, SiblingSet]]) -> None:
            entered.set()
            await asyncio.Event().wait()  # an owner that never answers

        handoff = Handoff(hints, deliver=deliver, is_alive=lambda o: True)
        try:
            await hints.add(OWNER, b"k", _write(b"v"))
            await handoff.start()
            await entered.wait()
            await handoff.stop()
            assert hints.count(OWNER) == 1 and handoff.stats()["delivered"] == 0
            assert not handoff.stats()["running"]
        finally:
            await handoff.stop()
            await hints.close()

    asyncio.run(main())


def test_a_deliver_that_hangs_times_out_as_a_failure(tmp_path: Path) -> None:
    async def main() -> None:
        hints = await HintStore.open(tmp_path / "hints", sync="none")

        async def deliver(o: str, items: list[tuple[bytes, SiblingSet]]) -> None:
            await asyncio.Event().wait()

        handoff = Handoff(hints, deliver=deliver, is_alive=lambda o: True,
                          deliver_timeout_s=0.05)
        try:
            await hints.add(OWNER, b"k", _write(b"v"))
            assert await handoff.run_once() == 0
            assert handoff.stats()["failed"] == 1 and hints.count() == 1
            with pytest.raises(ValueError):
                Handoff(hints, deliver=deliver, is_alive=lambda o: True, batch=0)
        finally:
            await hints.close()

    asyncio.run(main())


def test_a_damaged_hint_stops_only_its_owner_and_is_never_delivered(tmp_path: Path) -> None:
    async def main() -> None:
        hints = await HintStore.open(tmp_path / "hints", sync="none")
        await hints.add(OWNER, b"bad", _write(b"v"))
        await hints.close()
        with Engine.open(str(tmp_path / "hints"), sync="always") as db:
            db.put(b"k\x00\x03bad" + OWNER.encode(), b"\x01\x92\x90\x91")  # damaged state
        hints = await HintStore.open(tmp_path / "hints", sync="none")
        stores = {OWNER: await _owner_store(tmp_path / "a", OWNER),
                  OTHER: await _owner_store(tmp_path / "b", OTHER)}
        handoff = Handoff(hints, deliver=lambda o, items: stores[o].merge_many(items),
                          is_alive=lambda o: True)
        try:
            await hints.add(OTHER, b"good", _write(b"g"))
            assert await handoff.run_once() == 1
            stats = handoff.stats()
            assert stats["owners"][OWNER]["errors"] == 1
            assert stats["owners"][OWNER]["failed"] == 0 and hints.count(OWNER) == 1
            assert stats["owners"][OTHER]["delivered"] == 1 and hints.count(OTHER) == 0
            assert await stores[OWNER].get(b"bad") == SiblingSet()
        finally:
            await hints.close()
            for s in stores.values():
                await s.close()

    asyncio.run(main())


def test_4_6_hints_for_a_node_no_longer_in_the_ring_go_to_the_keys_current_primaries(
        tmp_path: Path) -> None:
    """A removed (or departed) owner never comes back for its hints, and the write they
    hold may be on no current replica: they go to each key's live primaries instead, and
    a key with no live primary keeps its hint."""
    async def main() -> None:
        members = ["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003", "127.0.0.1:7005"]
        ring = Ring.new(8)
        for m in members:
            ring = ring.join(m)
        gone = "127.0.0.1:7009"  # held hints, then was removed: not in `ring`
        hints = await HintStore.open(tmp_path / "hints", sync="none")
        stores = {m: await _owner_store(tmp_path / m.replace(":", "_"), m) for m in members}
        alive = set(members)
        handoff = Handoff(hints, deliver=lambda o, items: stores[o].merge_many(items),
                          is_alive=lambda o: o in alive, ring=lambda: ring, n=2)
        try:
            states = {b"k%d" % i: _write(b"v%d" % i) for i in range(40)}
            for key, state in states.items():
                await hints.add(gone, key, state)
            primaries = {key: quorum.plan(ring, key, 2).primaries for key in states}
            down = set(members[:2])
            alive -= down
            stranded = {k for k, p in primaries.items() if set(p) <= down}
            assert 0 < len(stranded) < len(states)  # both kinds of key are exercised
            assert await handoff.run_once() == len(states) - len(stranded)
            for key, state in states.items():
                for m in members:
                    copy = await stores[m].get(key)
                    wanted = m in primaries[key] and m not in down and key not in stranded
                    assert copy == (state if wanted else SiblingSet()), (key, m)
            assert hints.count(gone) == len(stranded)
        finally:
            await hints.close()
            for s in stores.values():
                await s.close()

    asyncio.run(main())
