"""ReplicaStore (kvstore/replica.py): a node's durable sibling sets on the LSM engine.

Named after Dynamo §4.4 (data versioning: siblings, contexts, reconciliation) and §4.5
(a replica's part in get and put); every test runs on a real engine in tmp_path. The
storage side (partitions, damage, crashes, observers) is in test_replica_storage.py.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from kvstore import vclock
from kvstore.errors import InvalidRequest, InvalidSiblingSet, SiblingLimitExceeded
from kvstore.replica import ReplicaStore
from kvstore.ring import partition_of
from kvstore.vclock import Dot, Sibling, SiblingLimits, SiblingSet, VersionVector

EMPTY = VersionVector()
A, B = "127.0.0.1:7001", "127.0.0.1:7002"


async def _open(path: Path, node: str = A, **kw) -> ReplicaStore:
    kw.setdefault("sync", "none")
    return await ReplicaStore.open(path, node=node, ring_size=kw.pop("ring_size", 8), **kw)


def test_4_4_reopen_keeps_every_state_and_partition(tmp_path: Path) -> None:
    async def main() -> None:
        store = await _open(tmp_path, sync="always")
        states = {}
        for i in range(50):
            key = b"key-%d" % i
            states[key] = await store.coordinate(key, EMPTY, b"v%d" % i, deleted=False,
                                                 timestamp=i)
        states[b"key-0"] = await store.coordinate(b"key-0", EMPTY, b"sib", deleted=False,
                                                  timestamp=99)
        states[b"key-1"] = await store.coordinate(b"key-1", states[b"key-1"].clock, b"",
                                                  deleted=True, timestamp=100)
        parts = store.partitions()
        await store.close()
        store = await _open(tmp_path)
        try:
            assert store.partitions() == parts == {partition_of(k, 8) for k in states}
            for key, state in states.items():
                assert await store.get(key) == state
            assert len((await store.get(b"key-0")).siblings) == 2
            assert (await store.get(b"key-1")).is_deleted
            assert await store.get(b"absent") == SiblingSet()
        finally:
            await store.close()

    asyncio.run(main())


def test_4_4_concurrent_writes_become_siblings_and_a_context_resolves_them(
        tmp_path: Path) -> None:
    async def main() -> None:
        store = await _open(tmp_path)
        try:
            await store.coordinate(b"k", EMPTY, b"x", deleted=False, timestamp=1)
            both = await store.coordinate(b"k", EMPTY, b"y", deleted=False, timestamp=2)
            assert sorted(both.values) == [b"x", b"y"]
            one = await store.coordinate(b"k", vclock.decode_context(vclock.context(both)),
                                         b"z", deleted=False, timestamp=3)
            assert one.values == [b"z"]
            assert await store.get(b"k") == one
        finally:
            await store.close()

    asyncio.run(main())


def test_4_4_merge_keeps_concurrent_versions_and_drops_dominated_ones(tmp_path: Path) -> None:
    async def main() -> None:
        a = await _open(tmp_path / "a", A)
        b = await _open(tmp_path / "b", B)
        try:
            first = await a.coordinate(b"k", EMPTY, b"old", deleted=False, timestamp=1)
            assert await b.merge(b"k", first) == first
            concurrent = await b.coordinate(b"k", EMPTY, b"b-side", deleted=False,
                                            timestamp=2)
            newer = await a.coordinate(b"k", first.clock, b"new", deleted=False, timestamp=3)
            merged = await b.merge(b"k", newer)  # "old" is dominated, "b-side" concurrent
            assert sorted(merged.values) == [b"b-side", b"new"]
            assert await a.merge(b"k", concurrent) == merged
            assert await a.get(b"k") == await b.get(b"k") == merged
            writes = b.stats()["merge_writes"]
            seq = b.stats()["engine"]["last_seq"]
            assert await b.merge(b"k", first) == merged  # old news: nothing is written
            assert b.stats()["merge_writes"] == writes
            assert b.stats()["engine"]["last_seq"] == seq
        finally:
            await a.close()
            await b.close()

    asyncio.run(main())


def test_4_4_tombstones_are_versions_with_clocks(tmp_path: Path) -> None:
    async def main() -> None:
        a = await _open(tmp_path / "a", A)
        b = await _open(tmp_path / "b", B)
        try:
            put = await a.coordinate(b"k", EMPTY, b"v", deleted=False, timestamp=1)
            await b.merge(b"k", put)
            gone = await a.coordinate(b"k", put.clock, b"", deleted=True, timestamp=2)
            assert gone.is_deleted and gone.values == []
            # b writes concurrently with the delete (it had not seen it): both stay
            racing = await b.coordinate(b"k", put.clock, b"again", deleted=False, timestamp=3)
            merged = await a.merge(b"k", racing)
            assert merged.values == [b"again"] and not merged.is_deleted
            assert sum(s.deleted for s in merged.siblings) == 1
            assert await b.merge(b"k", gone) == merged
            with pytest.raises(ValueError):
                await a.coordinate(b"k", EMPTY, b"x", deleted=True, timestamp=4)
            assert await a.get(b"k") == merged
        finally:
            await a.close()
            await b.close()

    asyncio.run(main())


def test_lww_prefix_keeps_one_version_and_other_keys_keep_siblings(tmp_path: Path) -> None:
    async def main() -> None:
        a = await _open(tmp_path / "a", A, lww_prefixes=(b"cache/",))
        b = await _open(tmp_path / "b", B, lww_prefixes=(b"cache/",))
        try:
            await a.coordinate(b"cache/x", EMPTY, b"late", deleted=False, timestamp=20)
            s = await a.coordinate(b"cache/x", EMPTY, b"later", deleted=False, timestamp=30)
            assert s.values == [b"later"]
            older = await b.coordinate(b"cache/x", EMPTY, b"lost", deleted=False,
                                       timestamp=10)
            merged = await a.merge(b"cache/x", older)  # concurrent but older: dropped
            assert merged.values == [b"later"] and len(merged.siblings) == 1
            assert (await b.merge(b"cache/x", merged)).values == [b"later"]
            await a.coordinate(b"cachex", EMPTY, b"1", deleted=False, timestamp=1)
            plain = await a.coordinate(b"cachex", EMPTY, b"2", deleted=False, timestamp=0)
            assert sorted(plain.values) == [b"1", b"2"]
            with pytest.raises(ValueError):
                await _open(tmp_path / "c", lww_prefixes=(b"",))
        finally:
            await a.close()
            await b.close()

    asyncio.run(main())


def test_sibling_cap_refuses_and_changes_nothing(tmp_path: Path) -> None:
    async def main() -> None:
        store = await _open(tmp_path, limits=SiblingLimits(warn=1, max=2))
        try:
            await store.coordinate(b"k", EMPTY, b"1", deleted=False, timestamp=1)
            two = await store.coordinate(b"k", EMPTY, b"2", deleted=False, timestamp=2)
            seq = store.stats()["engine"]["last_seq"]
            with pytest.raises(SiblingLimitExceeded) as err:
                await store.coordinate(b"k", EMPTY, b"3", deleted=False, timestamp=3)
            assert err.value.limit == 2 and err.value.key_siblings == 3
            assert await store.get(b"k") == two
            assert store.stats()["engine"]["last_seq"] == seq
            assert store.stats()["refused"] == 1
            resolved = await store.coordinate(b"k", two.clock, b"r", deleted=False,
                                              timestamp=4)
            assert resolved.values == [b"r"]
        finally:
            await store.close()

    asyncio.run(main())


def test_merge_many_equals_merging_one_by_one(tmp_path: Path) -> None:
    async def main() -> None:
        one = await _open(tmp_path / "one")
        many = await _open(tmp_path / "many")
        try:
            items = []
            for i in range(40):
                key = b"m%d" % (i % 15)  # duplicates fold together
                items.append((key, vclock.update(SiblingSet(), EMPTY, f"n{i}", b"%d" % i,
                                                 timestamp=i)))
            for key, state in items:
                await one.merge(key, state)
            await many.merge_many(items)
            for key in {k for k, _ in items}:
                assert await many.get(key) == await one.get(key)
                assert len((await many.get(key)).siblings) in (2, 3)
            assert many.stats()["batches"] == 1
            await many.merge_many([])
            assert many.stats()["batches"] == 1
        finally:
            await one.close()
            await many.close()

    asyncio.run(main())


def test_4_5_concurrent_coordinates_never_repeat_a_counter(tmp_path: Path) -> None:
    """Many writers of one key at once, no context: every write is a distinct sibling."""
    async def main() -> None:
        store = await _open(tmp_path, limits=SiblingLimits(warn=1000, max=1000))
        try:
            results = await asyncio.gather(*(
                store.coordinate(b"hot", EMPTY, b"%d" % i, deleted=False, timestamp=i)
                for i in range(150)))
            final = await store.get(b"hot")
            assert sorted(int(v) for v in final.values) == list(range(150))
            assert [s.dot for s in final.siblings] == [Dot(A, n) for n in range(1, 151)]
            # each call saw its own write, and the states grew one write at a time
            assert sorted(len(r.siblings) for r in results) == list(range(1, 151))
            assert store.stats()["keys_locked"] == 0
        finally:
            await store.close()

    asyncio.run(main())


def test_4_5_cancelled_writers_never_split_a_read_modify_write(tmp_path: Path) -> None:
    async def main() -> None:
        store = await _open(tmp_path, limits=SiblingLimits(warn=1000, max=1000))
        try:
            tasks = [asyncio.ensure_future(store.coordinate(
                b"k", EMPTY, b"%d" % i, deleted=False, timestamp=i)) for i in range(60)]
            await asyncio.sleep(0)
            for t in tasks[::3]:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await store.coordinate(b"k", EMPTY, b"last", deleted=False, timestamp=99)
            final = await store.get(b"k")
            n = final.clock.get(A)
            assert [s.dot for s in final.siblings] == [Dot(A, c) for c in range(1, n + 1)]
            # a cancelled caller stops waiting, but its section (already started) still
            # writes: every write landed once, none was lost or given a reused dot
            assert n == 61
            assert sorted(final.values) == sorted([b"%d" % i for i in range(60)] + [b"last"])
            assert sum(t.cancelled() for t in tasks) == 20
            assert store.stats()["keys_locked"] == 0
        finally:
            await store.close()

    asyncio.run(main())


def test_bad_arguments_raise_and_change_nothing(tmp_path: Path) -> None:
    async def main() -> None:
        store = await _open(tmp_path)
        try:
            ok = await store.coordinate(b"k", EMPTY, b"v", deleted=False, timestamp=1)
            with pytest.raises(InvalidRequest):
                await store.coordinate(b"", EMPTY, b"v", deleted=False, timestamp=1)
            with pytest.raises(InvalidRequest):
                await store.get(b"x" * 70000)
            with pytest.raises(TypeError):
                await store.get("k")  # type: ignore[arg-type]
            with pytest.raises(TypeError):
                await store.coordinate(b"k", {}, b"v", deleted=False,  # type: ignore[arg-type]
                                       timestamp=1)
            with pytest.raises(ValueError):
                await store.coordinate(b"k", EMPTY, b"v", deleted=False, timestamp=-1)
            forged = SiblingSet(EMPTY, (Sibling(Dot(B, 1), b"x"),))  # dot outside the clock
            with pytest.raises(InvalidSiblingSet):
                await store.merge(b"k", forged)
            with pytest.raises(InvalidSiblingSet):
                await store.merge_many([(b"j", ok), (b"k", forged)])
            assert await store.get(b"k") == ok
            assert await store.get(b"j") == SiblingSet()
            assert store.stats()["keys_locked"] == 0
        finally:
            await store.close()
        for bad in (0, 3, 1 << 17):
            with pytest.raises(ValueError):
                await ReplicaStore.open(tmp_path, node=A, ring_size=bad)
        with pytest.raises(ValueError):
            await ReplicaStore.open(tmp_path, node="", ring_size=8)

    asyncio.run(main())
