"""ReplicaStore (kvstore/replica.py) as storage: partitions as key ranges (scan, drop,
conditional removal), damaged bytes, SIGKILL of a writer, and change observers for
anti-entropy. Every test runs on a real engine in tmp_path (Dynamo §4.5, §4.7)."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from antientropy.merkle import MerkleTree
from kvstore import vclock
from kvstore.errors import InvalidSiblingSet
from kvstore.lsm import Engine
from kvstore.replica import PREFIX_BYTES, ReplicaStore
from kvstore.ring import partition_of
from kvstore.vclock import SiblingSet, VersionVector

EMPTY = VersionVector()
A, B = "127.0.0.1:7001", "127.0.0.1:7002"


async def _open(path: Path, node: str = A, **kw) -> ReplicaStore:
    kw.setdefault("sync", "none")
    return await ReplicaStore.open(path, node=node, ring_size=kw.pop("ring_size", 8), **kw)


def _raw_put(path: Path, storage_key: bytes, raw: bytes) -> None:
    with Engine.open(str(path), sync="always") as db:
        db.put(storage_key, raw)


def _skey(key: bytes, ring_size: int = 8) -> bytes:
    return partition_of(key, ring_size).to_bytes(PREFIX_BYTES, "big") + key


def test_scan_partition_yields_exactly_that_partitions_keys(tmp_path: Path) -> None:
    async def main() -> None:
        store = await _open(tmp_path, ring_size=8)
        try:
            keys = [b"k%d" % i for i in range(200)] + [b"\x00", b"\xff" * 5]
            await store.merge_many([
                (k, await _one_write(k)) for k in keys])
            assert store.partitions() == {partition_of(k, 8) for k in keys}
            seen = []
            for p in range(8):
                got = [(k, s) async for k, s in store.scan_partition(p)]
                want = sorted(k for k in keys if partition_of(k, 8) == p)
                assert [k for k, _ in got] == want
                assert all(s.values == [k] for k, s in got)
                seen += want
            assert sorted(seen) == sorted(keys)
            with pytest.raises(ValueError):
                [x async for x in store.scan_partition(8)]
        finally:
            await store.close()

    asyncio.run(main())


async def _one_write(key: bytes) -> SiblingSet:
    return vclock.update(SiblingSet(), EMPTY, B, key, timestamp=1)


def test_drop_partition_removes_only_that_partition(tmp_path: Path) -> None:
    async def main() -> None:
        store = await _open(tmp_path, ring_size=4)
        keys = [b"d%d" % i for i in range(120)]
        await store.merge_many([(k, await _one_write(k)) for k in keys])
        victim = partition_of(keys[0], 4)
        doomed = [k for k in keys if partition_of(k, 4) == victim]
        assert await store.drop_partition(victim) == len(doomed)
        assert victim not in store.partitions()
        assert [x async for x in store.scan_partition(victim)] == []
        assert await store.get(doomed[0]) == SiblingSet()
        await store.close()
        store = await _open(tmp_path, ring_size=4)
        try:
            assert store.partitions() == {partition_of(k, 4) for k in keys} - {victim}
            for k in keys:
                assert (await store.get(k)).values == ([] if k in doomed else [k])
            assert await store.drop_partition(victim) == 0
        finally:
            await store.close()

    asyncio.run(main())


_VALID = vclock.encode(vclock.update(SiblingSet(), EMPTY, A, b"value", timestamp=5))
_GARBAGE = st.one_of(
    st.binary(max_size=64),
    st.integers(1, len(_VALID) - 1).map(lambda n: _VALID[:n]),
    st.just(b"\x02" + _VALID[1:]),
    st.just(b"\x01\x93\x01\x02\x03"),
    st.just(b"\x01\x92\x90\x91\x95\x00\x01\x00\x00\xc4\x00"),  # a sibling with no entry
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(raw=_GARBAGE)
def test_hostile_stored_bytes_raise_and_are_never_served(tmp_path: Path, raw: bytes) -> None:
    try:
        vclock.decode(raw)
    except InvalidSiblingSet:
        pass
    else:
        return  # hypothesis found valid bytes; nothing hostile to test
    path = tmp_path / "hostile"
    key = b"victim"

    async def main() -> None:
        store = await _open(path)
        await store.coordinate(b"bystander", EMPTY, b"ok", deleted=False, timestamp=1)
        await store.close()
        _raw_put(path, _skey(key), raw)
        store = await _open(path)
        try:
            with pytest.raises(InvalidSiblingSet, match="victim"):
                await store.get(key)
            with pytest.raises(InvalidSiblingSet):
                await store.coordinate(key, EMPTY, b"v", deleted=False, timestamp=2)
            with pytest.raises(InvalidSiblingSet):
                await store.merge(key, await _one_write(key))
            with pytest.raises(InvalidSiblingSet):
                await store.merge_many([(key, await _one_write(key))])
            with pytest.raises(InvalidSiblingSet):
                [x async for x in store.scan_partition(partition_of(key, 8))]
            assert (await store.get(b"bystander")).values == [b"ok"]
            assert store.stats()["keys_locked"] == 0
        finally:
            await store.close()
        with Engine.open(str(path), sync="none") as db:
            assert db.get(_skey(key)) == raw  # the damaged bytes stay for an operator

    shutil.rmtree(path, ignore_errors=True)
    asyncio.run(main())
    shutil.rmtree(path)


def test_remove_many_deletes_only_states_that_did_not_change(tmp_path: Path) -> None:
    async def main() -> None:
        store = await _open(tmp_path)
        try:
            shipped = {}
            for k in (b"a", b"b", b"c"):
                shipped[k] = await store.coordinate(k, EMPTY, k, deleted=False, timestamp=1)
            later = await store.coordinate(b"b", EMPTY, b"late", deleted=False, timestamp=2)
            assert await store.remove_many(list(shipped.items())) == 2  # "b" changed
            assert await store.get(b"a") == await store.get(b"c") == SiblingSet()
            assert await store.get(b"b") == later
            assert await store.remove_many([(b"a", shipped[b"a"])]) == 0  # already gone
            assert await store.remove_many([]) == 0
            assert store.partitions() == {partition_of(b"b", 8)} | {
                partition_of(k, 8) for k in (b"a", b"c")}  # drop_partition prunes this set
            assert store.stats()["dropped_keys"] == 2 and store.stats()["keys_locked"] == 0
        finally:
            await store.close()

    asyncio.run(main())


def test_drop_partition_racing_writes_keeps_only_updated_keys(tmp_path: Path) -> None:
    """Updates racing a drop: a key is either dropped (counted) or holds its update."""
    async def main() -> None:
        store = await _open(tmp_path, ring_size=1)  # one partition: every key is in it
        try:
            await store.merge_many([(b"k%d" % i, await _one_write(b"o")) for i in range(500)])
            updates = [store.coordinate(b"k%d" % i, EMPTY, b"n", deleted=False, timestamp=1)
                       for i in range(0, 500, 10)]
            dropped, *states = await asyncio.gather(store.drop_partition(0), *updates)
            left = {k: s async for k, s in store.scan_partition(0)}
            assert dropped + len(left) == 500
            for k, s in left.items():  # only a key changed after the drop's scan survives
                assert s == states[int(k[1:]) // 10]
            assert (0 in store.partitions()) == bool(left)
        finally:
            await store.close()

    asyncio.run(main())


_CRASH_CHILD = r"""
import asyncio, sys
from kvstore import vclock
from kvstore.replica import ReplicaStore

async def main(path):
    store = await ReplicaStore.open(path, node="127.0.0.1:7001", ring_size=8, sync="always")
    states = {}
    i = 0
    while True:
        key = b"c%d" % (i % 10)
        prior = states.get(key, vclock.SiblingSet())
        states[key] = await store.coordinate(key, prior.clock, b"%d" % i, deleted=False,
                                             timestamp=i)
        sys.stdout.write(key.hex() + " " + vclock.encode(states[key]).hex() + "\n")
        sys.stdout.flush()
        i += 1

asyncio.run(main(sys.argv[1]))
"""


def test_4_5_a_write_acknowledged_under_sync_always_survives_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "crash"
    proc = subprocess.Popen([sys.executable, "-c", _CRASH_CHILD, str(path)],
                            stdout=subprocess.PIPE, cwd=Path(__file__).resolve().parents[2])
    acked: dict[bytes, SiblingSet] = {}
    try:
        assert proc.stdout is not None
        for _ in range(150):
            line = proc.stdout.readline()
            assert line, "the writer died before it acknowledged 150 writes"
            key, raw = line.split()
            acked[bytes.fromhex(key.decode())] = vclock.decode(bytes.fromhex(raw.decode()))
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    async def main() -> None:
        store = await _open(path)
        try:
            for key, state in acked.items():
                stored = await store.get(key)
                # the acknowledged write is there (or a later one that replaced it)
                assert vclock.compare(stored, state) in (vclock.Order.EQUAL, vclock.Order.AFTER)
                assert len(stored.siblings) == 1
                assert int(stored.values[0]) >= int(state.values[0])
        finally:
            await store.close()

    asyncio.run(main())


def test_observers_see_every_change_so_a_hash_tree_follows_the_store(tmp_path: Path) -> None:
    """A Merkle tree per partition fed only by observe() equals one rebuilt from a scan."""
    async def main() -> None:
        store = await _open(tmp_path, ring_size=8)
        trees = {p: MerkleTree(p, partition_bits=3, fanout=4, depth=2) for p in range(8)}

        def follow(changes: list[tuple[bytes, bytes | None, bytes | None]]) -> None:
            for key, old, new in changes:
                trees[partition_of(key, 8)].update(key, old, new)

        store.observe(follow)
        try:
            states = {}
            for i in range(60):
                k = b"t%d" % (i % 25)
                states[k] = await store.coordinate(k, EMPTY, b"%d" % i, deleted=False,
                                                   timestamp=i)
            await store.merge(b"t1", await _one_write(b"t1"))
            await store.merge(b"t1", await _one_write(b"t1"))  # no change, no report
            await store.merge_many([(b"m%d" % i, await _one_write(b"m")) for i in range(30)])
            await store.remove_many([(b"t2", states[b"t2"]), (b"t3", states[b"t3"])])
            await store.drop_partition(partition_of(b"t4", 8))
            for p in range(8):
                rows = [(k, vclock.encode(s)) async for k, s in store.scan_partition(p)]
                rebuilt = MerkleTree.build(rows, p, partition_bits=3, fanout=4, depth=2)
                assert trees[p].root() == rebuilt.root(), p
        finally:
            await store.close()

    asyncio.run(main())
