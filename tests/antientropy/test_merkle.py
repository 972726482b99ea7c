"""The hash tree (antientropy/merkle.py): pure logic, no I/O (Dynamo §4.7).

The central claim, by hypothesis: between two replicas' trees, the differing segments are
exactly the segments of the keys whose values differ: every difference is found, and
nothing else is reported.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from antientropy.merkle import Descent, InvalidTree, MerkleTree
from kvstore.ring import partition_of

SMALL = {"fanout": 4, "depth": 3, "partition_bits": 0}  # 64 segments: differences collide

keys = st.binary(min_size=1, max_size=12)
values = st.binary(max_size=8)
stores = st.dictionaries(keys, values, max_size=60)


def _apply(tree: MerkleTree, before: dict[bytes, bytes], after: dict[bytes, bytes]) -> None:
    for k in before.keys() | after.keys():
        tree.update(k, before.get(k), after.get(k))


@st.composite
def diverged(draw: st.DrawFn) -> tuple[dict[bytes, bytes], dict[bytes, bytes]]:
    a = draw(stores)
    b = dict(a)
    for k in draw(st.lists(st.sampled_from(sorted(a)), max_size=10) if a else st.just([])):
        if draw(st.booleans()):
            b.pop(k, None)
        else:
            b[k] = draw(values)
    b.update(draw(st.dictionaries(keys, values, max_size=5)))
    return a, b


@settings(max_examples=300, deadline=None)
@given(diverged())
def test_4_7_every_difference_is_found_and_only_those(
        pair: tuple[dict[bytes, bytes], dict[bytes, bytes]]) -> None:
    a, b = pair
    ta = MerkleTree.build(a.items(), **SMALL)
    tb = MerkleTree.build(a.items(), **SMALL)
    _apply(tb, a, b)  # b's tree reached incrementally from a's contents
    differing = {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}
    want = sorted({ta.segment_of(k) for k in differing})
    assert ta.diff(tb) == want
    assert tb.diff(ta) == want
    assert (ta.root() == tb.root()) == (not differing)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(keys, st.one_of(st.none(), values)), max_size=80))
def test_incremental_updates_equal_a_rebuild(ops: list[tuple[bytes, bytes | None]]) -> None:
    tree = MerkleTree(**SMALL)
    state: dict[bytes, bytes] = {}
    for key, new in ops:
        tree.update(key, state.get(key), new)
        if new is None:
            state.pop(key, None)
        else:
            state[key] = new
        if len(state) % 7 == 0:
            tree.check()  # reading between updates keeps the lazily refreshed nodes right
    rebuilt = MerkleTree.build(state.items(), **SMALL)
    tree.check()
    assert tree.root() == rebuilt.root()
    assert tree.to_bytes() == rebuilt.to_bytes()
    assert tree.diff(rebuilt) == []


def test_an_empty_tree_and_one_emptied_are_equal() -> None:
    tree = MerkleTree(**SMALL)
    tree.update(b"k", None, b"v")
    assert tree.root() != MerkleTree(**SMALL).root()
    tree.update(b"k", b"v", None)
    assert tree.root() == MerkleTree(**SMALL).root()


def test_4_7_descent_asks_only_under_differing_nodes() -> None:
    a = {b"key%d" % i: b"v" for i in range(2000)}
    ta = MerkleTree.build(a.items(), partition_bits=0)  # 16**3 = 4096 segments
    tb = MerkleTree.build(a.items(), partition_bits=0)
    d = Descent(ta)
    assert d.request() == (0, [0])
    d.feed(tb.nodes(0, [0]))
    assert d.request() is None and d.segments == [] and d.fetched == 1
    tb.update(b"key7", b"v", b"changed")
    d = Descent(ta)
    rounds = 0
    while (ask := d.request()) is not None:
        d.feed(tb.nodes(*ask))
        rounds += 1
    assert d.segments == [ta.segment_of(b"key7")]
    assert rounds == 4 and d.fetched == 1 + 16 * 3  # root, then 16 children per level
    with pytest.raises(ValueError):
        Descent(ta).feed([])


def test_segments_follow_the_ring_partition_and_refuse_other_partitions() -> None:
    ring_size = 256
    mine = [k for k in (b"k%d" % i for i in range(3000)) if partition_of(k, ring_size) == 5]
    tree = MerkleTree(5, partition_bits=8)
    segments = {tree.segment_of(k) for k in mine}
    assert len(segments) > len(mine) // 2  # spread over the segments, not piled up
    other = next(k for k in (b"x%d" % i for i in range(999)) if partition_of(k, 256) != 5)
    with pytest.raises(ValueError, match="not in partition"):
        tree.update(other, None, b"v")


def test_serialised_tree_round_trips() -> None:
    tree = MerkleTree.build(((b"k%d" % i, b"%d" % i) for i in range(100)), **SMALL)
    again = MerkleTree.from_bytes(tree.to_bytes())
    assert again.root() == tree.root() and again.segments == tree.segments
    again.check()
    again.update(b"k1", b"1", None)
    assert again.diff(tree) == [tree.segment_of(b"k1")]


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_hostile_serialised_trees_raise_invalid_tree(data: st.DataObject) -> None:
    good = MerkleTree.build([(b"a", b"1")], **SMALL).to_bytes()
    kind = data.draw(st.sampled_from(["truncate", "flip", "random", "extend"]))
    if kind == "truncate":
        bad = good[:data.draw(st.integers(0, len(good) - 1))]
    elif kind == "flip":
        i = data.draw(st.integers(0, len(good) - 1))
        bad = good[:i] + bytes([good[i] ^ data.draw(st.integers(1, 255))]) + good[i + 1:]
    elif kind == "extend":
        bad = good + data.draw(st.binary(min_size=1, max_size=20))
    else:
        bad = data.draw(st.binary(max_size=100))
    with pytest.raises(InvalidTree):
        MerkleTree.from_bytes(bad)


def test_bad_parameters_raise() -> None:
    for params in ({"fanout": 3}, {"fanout": 1}, {"depth": 0}, {"fanout": 16, "depth": 7},
                   {"partition_bits": 17}):
        with pytest.raises(InvalidTree):
            MerkleTree(**params)
    with pytest.raises(InvalidTree):
        MerkleTree(256, partition_bits=8)
    with pytest.raises(ValueError):
        MerkleTree().nodes(4, [0])
    with pytest.raises(ValueError):
        MerkleTree().nodes(1, [16])
