"""Trees that follow a real replica store (antientropy/trees.py): exact under concurrent
writes while rebuilding, saved on a clean close, rebuilt after a crash, after damage to
their file, and when too old."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from antientropy.merkle import MerkleTree
from antientropy.trees import Trees
from kvstore import vclock
from kvstore.replica import ReplicaStore
from kvstore.vclock import SiblingSet, VersionVector
from tests.waiting import async_wait_until

RING = 8


def _state(value: bytes, node: str = "n") -> SiblingSet:
    return vclock.update(SiblingSet(), VersionVector(), node, value, timestamp=1)


async def _open(tmp_path: Path, **options) -> tuple[ReplicaStore, Trees]:
    store = await ReplicaStore.open(tmp_path / "replicas", node="n", ring_size=RING,
                                    sync="none")
    trees = Trees(tmp_path / "aae", store, **options)
    await trees.open()
    return store, trees


async def _assert_exact(store: ReplicaStore, trees: Trees) -> None:
    for p in range(RING):
        rows = [(k, raw) async for k, raw in store.scan_partition_raw(p)]
        rebuilt = MerkleTree.build(rows, p, partition_bits=3, fanout=trees.fanout,
                                   depth=trees.depth)
        assert trees.tree(p) is not None and trees.tree(p).root() == rebuilt.root(), p
        if trees.index.has(p):  # the key index names exactly the stored keys, by segment
            every = set(range(trees.segments))
            assert sorted(trees.index.keys_in(p, every)) == sorted(k for k, _ in rows), p
            for key, _ in rows:
                segment = trees.locate(key)[1]
                assert key in trees.index.keys_in(p, {segment}), (p, key)


def test_a_rebuild_under_concurrent_writes_ends_exact(tmp_path: Path) -> None:
    async def main() -> None:
        store, trees = await _open(tmp_path, rebuild_keys_per_s=2000)  # slow: writes overlap
        try:
            await store.merge_many([(b"k%d" % i, _state(b"%d" % i)) for i in range(3000)])
            trees.rebuild()
            assert trees.pending() == list(range(RING))

            async def writer() -> None:
                for i in range(600):
                    key = b"k%d" % (i * 5 % 3000)
                    await store.merge(key, _state(b"w%d" % i, node=f"m{i}"))
                    if i % 7 == 0:
                        await store.remove_many([(key, await store.get(key))])

            await asyncio.gather(writer(), async_wait_until(lambda: not trees.pending(), 120))
            assert not trees.pending() and trees.rebuilds == RING
            await _assert_exact(store, trees)
        finally:
            await trees.close()
            await store.close()

    asyncio.run(main())


def test_trees_are_saved_on_a_clean_close_and_rebuilt_after_a_crash(tmp_path: Path) -> None:
    async def main() -> None:
        store, trees = await _open(tmp_path)
        await store.merge_many([(b"k%d" % i, _state(b"v")) for i in range(200)])
        roots = {p: trees.tree(p).root() for p in range(RING)}
        await trees.close()
        await store.close()
        assert (tmp_path / "aae" / "CLEAN").exists()
        store, trees = await _open(tmp_path)
        assert trees.loaded == RING and trees.pending() == []
        assert not (tmp_path / "aae" / "CLEAN").exists()  # a crash from here on rebuilds
        assert {p: trees.tree(p).root() for p in range(RING)} == roots
        await async_wait_until(lambda: all(trees.index.has(p) for p in range(RING)), 60)
        await _assert_exact(store, trees)  # the key index was rebuilt by a scan
        await store.merge(b"k1", _state(b"after the load", node="other"))
        await store.close()  # a "crash": the trees are never closed, so no CLEAN
        store, trees = await _open(tmp_path)
        try:
            assert trees.loaded == 0
            await async_wait_until(lambda: not trees.pending(), 60)
            await _assert_exact(store, trees)
            assert trees.tree(store.partition_of(b"k1")).root() != roots[
                store.partition_of(b"k1")]
        finally:
            await trees.close()
            await store.close()

    asyncio.run(main())


@pytest.mark.parametrize("damage", ["truncated", "flipped", "magic", "shape", "trailing"])
def test_a_damaged_trees_file_is_ignored_and_the_trees_rebuilt(tmp_path: Path,
                                                               damage: str) -> None:
    async def main() -> None:
        store, trees = await _open(tmp_path)
        await store.merge_many([(b"k%d" % i, _state(b"v")) for i in range(100)])
        await trees.close()
        path = tmp_path / "aae" / "trees"
        data = path.read_bytes()
        if damage == "truncated":
            data = data[:len(data) // 2]
        elif damage == "flipped":
            data = data[:40] + bytes([data[40] ^ 1]) + data[41:]
        elif damage == "magic":
            data = b"XXXX" + data[4:]
        elif damage == "trailing":
            data += b"\x00"
        path.write_bytes(data)
        options = {"depth": 4} if damage == "shape" else {}
        store2_trees = Trees(tmp_path / "aae", store, **options)
        await store2_trees.open()
        try:
            assert store2_trees.loaded == 0 and store2_trees.pending()
            await async_wait_until(lambda: not store2_trees.pending(), 60)
            await _assert_exact(store, store2_trees)
        finally:
            await store2_trees.close()
            await store.close()

    asyncio.run(main())


def test_trees_older_than_max_age_are_rebuilt(tmp_path: Path) -> None:
    async def main() -> None:
        now = [1000.0]
        store, trees = await _open(tmp_path, max_age_s=50, clock=lambda: now[0])
        try:
            await store.merge_many([(b"k%d" % i, _state(b"v")) for i in range(100)])
            assert trees.rebuilds == 0 and trees.age(0) == 0
            now[0] += 60
            trees.rebuild([])  # wakes the background task, which finds old trees
            await async_wait_until(lambda: trees.rebuilds >= len(store.partitions()), 60)
            assert all(trees.age(p) == 0 for p in store.partitions())
            await _assert_exact(store, trees)
        finally:
            await trees.close()
            await store.close()

    asyncio.run(main())
