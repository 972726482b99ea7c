"""The exchange's logic (Dynamo §4.7): reconcile without I/O (hypothesis), then two real
replica stores in one process exchanging through the responder's handler (no HTTP)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from antientropy import codec
from antientropy.errors import InvalidMessage
from antientropy.exchange import Exchange
from antientropy.ratelimit import TokenBucket
from antientropy.reconcile import entry_digest, reconcile
from antientropy.responder import Responder
from antientropy.trees import Trees
from kvstore import vclock
from kvstore.replica import ReplicaStore
from kvstore.vclock import SiblingSet, VersionVector

EMPTY = VersionVector()


def _write(state: SiblingSet, node: str, value: bytes, *, stale: bool = False,
           deleted: bool = False) -> SiblingSet:
    context = EMPTY if stale else state.clock
    return vclock.update(state, context, node, b"" if deleted else value, timestamp=1,
                         deleted=deleted)


ops = st.sampled_from(["none", "put", "stale", "delete"])


@st.composite
def replica_pairs(draw: st.DrawFn) -> tuple[dict[bytes, SiblingSet], dict[bytes, SiblingSet]]:
    """Two replicas' states of some keys: a shared history, then writes on one side."""
    a: dict[bytes, SiblingSet] = {}
    b: dict[bytes, SiblingSet] = {}
    for i in range(draw(st.integers(0, 12))):
        key = b"k%d" % i
        base = SiblingSet()
        if draw(st.booleans()):
            base = _write(base, "n0", b"base")
        sides = []
        for node in ("a", "b"):
            state, op = base, draw(ops)
            if op != "none":
                state = _write(state, node, b"v-" + node.encode(), stale=op == "stale",
                               deleted=op == "delete")
            sides.append(state)
        for side, state in zip((a, b), sides, strict=True):
            if state.clock.entries:
                side[key] = state
    return a, b


@settings(max_examples=300, deadline=None)
@given(replica_pairs(), st.booleans())
def test_4_7_reconcile_moves_exactly_the_differing_keys_and_both_sides_end_synced(
        pair: tuple[dict, dict], naive: bool) -> None:
    a, b = pair
    listing = [(k, s.clock.entries, None if naive else entry_digest(k, vclock.encode(s)))
               for k, s in a.items()]
    verdict = reconcile(listing, {k: vclock.encode(s) for k, s in b.items()})
    given_keys = {k for k, _ in verdict.give}
    differing = {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}
    assert given_keys | set(verdict.want) == differing
    after_a = dict(a)
    for key, raw in verdict.give:  # the initiator merges what it was given ...
        after_a[key] = vclock.sync(after_a.get(key, SiblingSet()), vclock.decode(raw))
    after_b = dict(b)
    for key in verdict.want:  # ... then sends its merged states of the wanted keys
        after_b[key] = vclock.sync(after_b.get(key, SiblingSet()), after_a[key])
    for key in a.keys() | b.keys():
        want = vclock.sync(a.get(key, SiblingSet()), b.get(key, SiblingSet()))
        assert after_a[key] == after_b[key] == want, key


def test_reconcile_leaves_damaged_stored_bytes_alone() -> None:
    good = vclock.encode(_write(SiblingSet(), "a", b"v"))
    verdict = reconcile([(b"x", (("a", 2),), None)], {b"x": b"\x01junk", b"y": b"\x02"})
    assert verdict.give == [] and verdict.want == [] and verdict.damaged == 2
    assert reconcile([], {b"z": good}).give == [(b"z", good)]


def test_token_bucket_spends_a_burst_then_paces() -> None:
    bucket = TokenBucket(100, burst=50)
    assert bucket.reserve(50, now=0.0) == 0.0
    assert bucket.reserve(100, now=0.0) == pytest.approx(1.0)  # 100 in debt at 100/s
    assert bucket.reserve(0, now=1.0) == 0.0
    assert bucket.reserve(60, now=2.0) == pytest.approx(0.1)  # refilled to 50, not 100
    assert TokenBucket(0).reserve(10**9, now=0.0) == 0.0  # 0 = unlimited
    with pytest.raises(ValueError):
        TokenBucket(-1)


async def _pair(tmp_path: Path, ring_size: int = 16):
    stores, trees = [], []
    for name in ("a", "b"):
        store = await ReplicaStore.open(tmp_path / name, node=name, ring_size=ring_size,
                                        sync="none")
        tree = Trees(tmp_path / f"aae-{name}", store, rebuild_keys_per_s=0)
        await tree.open()
        stores.append(store)
        trees.append(tree)
    return stores, trees


async def _close(stores, trees) -> None:
    for t in trees:
        await t.close()
    for s in stores:
        await s.close()


async def _contents(store: ReplicaStore, ring_size: int = 16) -> dict[bytes, SiblingSet]:
    return {k: s for p in range(ring_size) async for k, s in store.scan_partition(p)}


@pytest.mark.parametrize("full", [False, True], ids=["tree", "naive"])
def test_4_7_an_exchange_repairs_both_replicas_and_only_the_differing_keys(
        tmp_path: Path, full: bool) -> None:
    async def main() -> None:
        (a, b), (ta, tb) = await _pair(tmp_path)
        try:
            rnd = random.Random(5)
            shared = [(b"k%d" % i, _write(SiblingSet(), "a", b"%d" % i)) for i in range(400)]
            await a.merge_many(shared)
            await b.merge_many(shared)
            for key, state in rnd.sample(shared, 40):
                target, node = (a, "a") if rnd.random() < 0.5 else (b, "b")
                await target.merge(key, _write(state, node, b"new", stale=rnd.random() < 0.3,
                                               deleted=rnd.random() < 0.3))
            await b.merge(b"only-b", _write(SiblingSet(), "b", b"x"))
            before_a, before_b = await _contents(a), await _contents(b)
            differing = {k for k in before_a.keys() | before_b.keys()
                         if before_a.get(k) != before_b.get(k)}
            responder = Responder(tb, b, holds=lambda p: True)

            async def transport(peer: str, op: str, body: bytes) -> bytes:
                return await responder.handle(op, body)

            result = await Exchange(ta, a, transport, "b", full=full).run(list(range(16)))
            after_a, after_b = await _contents(a), await _contents(b)
            assert after_a == after_b
            for key in after_a:
                assert after_a[key] == vclock.sync(before_a.get(key, SiblingSet()),
                                                   before_b.get(key, SiblingSet()))
            moved = result.repaired_here + result.repaired_there
            assert len(differing) <= moved <= 2 * len(differing)
            assert (result.listed == 400) if full else (result.listed < 100)
            again = await Exchange(ta, a, transport, "b").run(list(range(16)))
            assert again.differing == {} and again.listed == 0
            assert all(ta.tree(p).root() == tb.tree(p).root() for p in range(16))
        finally:
            await _close((a, b), (ta, tb))

    asyncio.run(main())


def test_partitions_without_a_ready_tree_or_replica_are_skipped(tmp_path: Path) -> None:
    async def main() -> None:
        (a, b), (ta, tb) = await _pair(tmp_path)
        try:
            await a.merge_many([(b"k%d" % i, _write(SiblingSet(), "a", b"v")) for i in range(50)])
            responder = Responder(tb, b, holds=lambda p: p != 3)

            async def transport(peer: str, op: str, body: bytes) -> bytes:
                return await responder.handle(op, body)

            ta.rebuild([5])  # a's tree of 5 is not trusted until its rebuild ends
            result = await Exchange(ta, a, transport, "b").run(list(range(16)))
            assert {3, 5} <= set(result.skipped) and result.partitions == 14
            b_keys = await _contents(b)
            assert b_keys and all(a.partition_of(k) not in (3, 5) for k in b_keys)
        finally:
            await _close((a, b), (ta, tb))

    asyncio.run(main())


bodies = st.one_of(
    st.binary(max_size=60),
    st.builds(lambda items: codec.pack({"items": items}), st.lists(
        st.lists(st.one_of(st.integers(-3, 70000), st.binary(max_size=9), st.none(),
                           st.lists(st.integers(-2, 5000), max_size=3)), max_size=4),
        max_size=3)),
    st.builds(lambda w, lvl, items: codec.pack({
        "ring_size": 16, "fanout": 4, "depth": 5, "width": w, "items": [[1, lvl, items]]}),
        st.integers(-1, 20), st.integers(-1, 7), st.lists(st.integers(-1, 300), max_size=5)))


@settings(max_examples=6, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["nodes", "keys", "merge"]), bodies),
                min_size=30, max_size=40))
def test_hostile_bodies_raise_invalid_message_only(calls: list[tuple[str, bytes]]) -> None:
    """Whatever the bytes, the responder answers or raises InvalidMessage (a 400), and
    the store stays empty."""
    async def main(folder: Path) -> None:
        store = await ReplicaStore.open(folder, node="h", ring_size=16, sync="none")
        trees = Trees(folder / "aae", store)
        await trees.open()
        try:
            responder = Responder(trees, store, holds=lambda p: True)
            for op, body in calls:
                with contextlib.suppress(InvalidMessage):
                    await responder.handle(op, body)
            assert await _contents(store) == {}
        finally:
            await trees.close()
            await store.close()

    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(main(Path(folder)))
