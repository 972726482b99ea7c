"""The ring's promises, named after Dynamo §4.2 (partitioning), §4.3 (replication: the
preference list), §4.6 (sloppy quorum) and §6.2 strategy 3 (equal fixed partitions).

Each test: build a ring, act, check the promise. Hypothesis drives random join/leave
sequences and calls `Ring.check()` after every step.
"""

from __future__ import annotations

import ast
import pickle
from pathlib import Path

import mmh3
import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import kvstore
from kvstore.errors import (
    InvalidContext,
    InvalidRing,
    InvalidSiblingSet,
    RinglockError,
    SiblingLimitExceeded,
)
from kvstore.ring import (
    DEFAULT_RING_SIZE,
    FORMAT_TAG,
    Fallback,
    Ring,
    SloppyPreferenceList,
    key_hash,
    partition_of,
)


def ring_of(*nodes: str, ring_size: int = DEFAULT_RING_SIZE) -> Ring:
    ring = Ring.new(ring_size)
    for node in nodes:
        ring = ring.join(node)
    return ring


def moved(a: Ring, b: Ring) -> int:
    return sum(1 for x, y in zip(a.owners, b.owners, strict=True) if x != y)


# -- §4.2 partitioning: the hash and the partition --------------------------------------


def test_dynamo_4_2_key_maps_to_partition_by_top_bits_of_mmh3_x64_first_word() -> None:
    key = b"user:42"
    h = mmh3.hash64(key, seed=0, x64arch=True, signed=True)[0] % 2**64
    assert key_hash(key) == h
    assert partition_of(key, 256) == h >> 56
    assert partition_of(key, 1024) == h >> 54
    assert partition_of(key, 1) == 0
    # a worked example that pins the on-disk constant: changing the hash moves every key
    assert partition_of(b"abc", 256) == (-5434086359492102041 % 2**64) >> 56 == 180


def test_dynamo_4_2_keys_spread_over_all_partitions() -> None:
    counts = [0] * 64
    for i in range(64 * 200):
        counts[partition_of(f"key-{i}".encode(), 64)] += 1
    assert min(counts) > 120 and max(counts) < 300  # 200 expected in each


def test_key_must_be_bytes() -> None:
    with pytest.raises(TypeError):
        partition_of("text", 256)  # type: ignore[arg-type]


# -- §6.2 strategy 3: equal partitions, fair share, bounded movement ---------------------


def test_dynamo_6_2_first_node_owns_every_partition_and_version_counts_changes() -> None:
    empty = Ring.new(64)
    assert empty.version == 0 and empty.owners == () and empty.preference_list(b"k", 3) == ()
    one = empty.join("a")
    assert one.owners == ("a",) * 64 and one.version == 1
    two = one.join("b")
    assert two.version == 2 and two.leave("b").version == 3


def test_dynamo_4_2_join_moves_exactly_the_newcomers_fair_share() -> None:
    ring = ring_of("a", "b", "c", "d")
    joined = ring.join("e")
    assert moved(ring, joined) == DEFAULT_RING_SIZE // 5
    assert all(joined.owners[p] in (ring.owners[p], "e") for p in range(DEFAULT_RING_SIZE))


def test_dynamo_4_2_leave_moves_only_the_leavers_partitions() -> None:
    ring = ring_of("a", "b", "c", "d", "e")
    left = ring.leave("c")
    assert moved(ring, left) == len(ring.owned_by("c"))
    for p in range(DEFAULT_RING_SIZE):
        assert left.owners[p] == ring.owners[p] or ring.owners[p] == "c"
    assert ring.remove("c") == left


def test_claim_is_deterministic_given_the_join_order() -> None:
    assert ring_of("a", "b", "c", "d").leave("b") == ring_of("a", "b", "c", "d").leave("b")


def test_claim_spreads_owners_so_three_consecutive_partitions_are_distinct() -> None:
    for n in (4, 5, 8, 16):
        ring = ring_of(*(f"n{i}" for i in range(n)))
        assert ring.spread_violations(3) <= 2, (n, ring.spread_violations(3))


joins_and_leaves = st.lists(
    st.tuples(st.booleans(), st.integers(min_value=0, max_value=20)), min_size=1, max_size=25
)


@settings(max_examples=60, deadline=None)
@given(ops=joins_and_leaves, ring_size=st.sampled_from([8, 16, 64]))
def test_dynamo_6_2_random_joins_and_leaves_keep_fair_share_and_bounded_movement(
    ops: list[tuple[bool, int]], ring_size: int
) -> None:
    ring = Ring.new(ring_size)
    for is_join, pick in ops:
        members = ring.members
        if is_join and len(members) < min(ring_size, 12):
            node = f"node-{pick}-{ring.version}"
            after = ring.join(node)
            if members:  # the newcomer takes floor(Q/(n+1)); nothing else changes hands
                assert moved(ring, after) == ring_size // (len(members) + 1)
                assert len(after.owned_by(node)) == ring_size // (len(members) + 1)
        elif members:
            node = members[pick % len(members)]
            after = ring.leave(node)
            if after.members:
                assert moved(ring, after) == len(ring.owned_by(node))
        else:
            continue
        after.check()
        assert after.version == ring.version + 1
        counts = [len(after.owned_by(m)) for m in after.members]
        assert not counts or max(counts) - min(counts) <= 1
        for p in range(ring_size):
            for n_val in (1, 3, 5):
                plist = after.preference_list_for(p, n_val)
                assert len(set(plist)) == len(plist) == min(n_val, len(after.members))
        ring = after


# -- §4.3 the preference list ------------------------------------------------------------


def test_dynamo_4_3_preference_list_is_first_n_distinct_owners_clockwise() -> None:
    ring = ring_of("a", "b", "c", "d", "e")
    for key in (b"x", b"y", b"z", b""):
        p = ring.partition_of(key)
        expect: list[str] = []
        step = 0
        while len(expect) < 3:
            owner = ring.owners[(p + step) % ring.ring_size]
            if owner not in expect:
                expect.append(owner)
            step += 1
        assert ring.preference_list(key, 3) == tuple(expect)
        assert ring.preference_list(key, 3)[0] == ring.owners[p]


def test_dynamo_4_3_fewer_nodes_than_n_returns_every_node() -> None:
    ring = ring_of("a", "b")
    assert sorted(ring.preference_list(b"k", 3)) == ["a", "b"]


def test_preference_list_rejects_bad_n() -> None:
    with pytest.raises(ValueError):
        ring_of("a").preference_list(b"k", 0)


# -- §4.6 sloppy quorum: fallbacks for down primaries -------------------------------------


def test_dynamo_4_6_down_primary_gets_next_healthy_node_as_named_fallback() -> None:
    ring = ring_of("a", "b", "c", "d", "e")
    order = ring.walk(ring.partition_of(b"k"))
    p1, p2, p3, f1, f2 = order
    sloppy = ring.preference_list(b"k", 3, down={p2})
    assert sloppy == SloppyPreferenceList((p1, p3), (Fallback(f1, p2),))
    assert sloppy.nodes == (p1, p3, f1)
    # a down node in the fallback range is skipped too
    assert ring.preference_list(b"k", 3, down={p1, f1}).fallbacks == (Fallback(f2, p1),)
    # nothing down: the strict list
    assert ring.preference_list(b"k", 3, down=()).primaries == (p1, p2, p3)


def test_dynamo_4_6_no_fallback_when_no_healthy_node_is_left() -> None:
    ring = ring_of("a", "b", "c")
    order = ring.walk(0)
    sloppy = ring.preference_list_for(0, 3, down=set(order[:2]))
    assert sloppy == SloppyPreferenceList((order[2],), ())


# -- invariants and bad transitions -------------------------------------------------------


def test_check_rejects_unfair_or_foreign_ownership() -> None:
    with pytest.raises(InvalidRing, match="fair share"):
        Ring(ring_size=4, version=1, members=["a", "b"], owners=["a", "a", "a", "b"])
    with pytest.raises(InvalidRing, match="non-member"):
        Ring(ring_size=4, version=1, members=["a", "b"], owners=["a", "a", "b", "z"])
    with pytest.raises(InvalidRing, match="power of two"):
        Ring.new(100)


def test_join_and_leave_refuse_impossible_transitions() -> None:
    ring = ring_of("a", "b", ring_size=2)
    with pytest.raises(InvalidRing, match="already a member"):
        ring.join("a")
    with pytest.raises(InvalidRing, match="at most 2 members"):
        ring.join("c")
    with pytest.raises(InvalidRing, match="not a member"):
        ring.leave("z")
    with pytest.raises(InvalidRing, match="UTF-8"):
        ring.leave("a").join("")
    assert ring.leave("a").leave("b") == Ring(ring_size=2, version=4, members=(), owners=())


# -- serialisation: round trips and hostile bytes -----------------------------------------


@settings(max_examples=40, deadline=None)
@given(n=st.integers(min_value=0, max_value=9), leave=st.integers(min_value=0, max_value=9))
def test_ring_bytes_round_trip(n: int, leave: int) -> None:
    ring = ring_of(*(f"nodé-{i}" for i in range(n)), ring_size=32)
    if n > 1:
        ring = ring.leave(ring.members[leave % n])
    back = Ring.from_bytes(ring.to_bytes())
    assert back == ring and back.members == ring.members and back.version == ring.version
    back.check()


def pack(*fields: object) -> bytes:
    return msgpack.packb(list(fields))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "not a msgpack ring"),
        (b"\xc1", "not a msgpack ring"),
        (pack(FORMAT_TAG, 1, 1, 4, ["a"], [0, 0, 0, 0]) + b"\x00", "not a msgpack ring"),
        (msgpack.packb({"a": 1}), "not a msgpack ring"),
        (pack(FORMAT_TAG, 1, 1, 4, ["a"]), "6-element"),
        (pack("other", 1, 1, 4, ["a"], [0, 0, 0, 0]), "format tag"),
        (pack(FORMAT_TAG, 2, 1, 4, ["a"], [0, 0, 0, 0]), "unknown format version"),
        (pack(FORMAT_TAG, 1, -1, 4, ["a"], [0, 0, 0, 0]), "version"),
        (pack(FORMAT_TAG, 1, True, 4, ["a"], [0, 0, 0, 0]), "version"),
        (pack(FORMAT_TAG, 1, 1, 3, ["a"], [0, 0, 0]), "power of two"),
        (pack(FORMAT_TAG, 1, 1, 1 << 20, ["a"], [0]), "power of two"),
        (pack(FORMAT_TAG, 1, 1, 4, ["a", "a"], [0, 0, 1, 1]), "distinct"),
        (pack(FORMAT_TAG, 1, 1, 4, ["a", 7], [0, 0, 1, 1]), "array of strings"),
        (pack(FORMAT_TAG, 1, 1, 4, ["a", ""], [0, 0, 1, 1]), "UTF-8"),
        (pack(FORMAT_TAG, 1, 1, 4, ["a", "b"], [0, 0, 0, 1]), "fair share"),
        (pack(FORMAT_TAG, 1, 1, 4, ["a", "b"], [0, 0, 1, 2]), "member indices"),
        (pack(FORMAT_TAG, 1, 1, 4, ["a", "b"], [0, 0, 1, -1]), "member indices"),
        (pack(FORMAT_TAG, 1, 1, 4, ["a", "b"], [0, 0, 1]), "3 owners"),
        (pack(FORMAT_TAG, 1, 1, 4, [], [0]), "member indices"),
        (pack(FORMAT_TAG, 1, 1, 2, ["a", "b", "c"], [0, 1]), "3 members"),
        (pack(FORMAT_TAG, 1, 1, 4, ["a", "x" * 300], [0, 0, 1, 1]), "not a msgpack ring"),
        (b"\x91" * 200_000, "not a msgpack ring"),  # nesting bomb: StackError, not a crash
        (b"\xdd\xff\xff\xff\xff", "not a msgpack ring"),  # claims 4 G elements
        (b"\x00" * (5 << 20), "byte limit"),
    ],
)
def test_hostile_ring_bytes_raise_invalid_ring(data: bytes, reason: str) -> None:
    with pytest.raises(InvalidRing, match=reason):
        Ring.from_bytes(data)


def test_every_truncation_and_bit_flip_of_a_ring_is_rejected_or_a_valid_ring() -> None:
    data = ring_of("a", "b", "c", ring_size=8).to_bytes()
    for cut in range(len(data)):
        with pytest.raises(InvalidRing):
            Ring.from_bytes(data[:cut])
    for i in range(len(data)):
        for bit in range(8):
            damaged = bytearray(data)
            damaged[i] ^= 1 << bit
            try:
                ring = Ring.from_bytes(bytes(damaged))
            except InvalidRing:
                continue
            ring.check()  # a flip that still decodes (e.g. a name letter) is a valid ring


def test_from_bytes_requires_bytes() -> None:
    with pytest.raises(TypeError):
        Ring.from_bytes("text")  # type: ignore[arg-type]


# -- the module stays pure logic (STYLE §1) and its errors keep their fields ---------------


def test_ring_and_vclock_import_no_io_or_clocks() -> None:
    root = Path(kvstore.__file__).parent
    banned = {"asyncio", "aiohttp", "time", "os", "socket", "random", "threading", "datetime"}
    for name in ("ring.py", "vclock.py", "errors.py"):
        tree = ast.parse((root / name).read_text())
        imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
                    for a in n.names}
        imported |= {n.module.split(".")[0] for n in ast.walk(tree)
                     if isinstance(n, ast.ImportFrom) and n.module}
        assert not imported & banned, (name, imported & banned)


def test_errors_form_one_tree_and_survive_pickling() -> None:
    for err in (InvalidRing("r"), InvalidContext("c"), InvalidSiblingSet("s"),
                SiblingLimitExceeded(101, 100)):
        assert isinstance(err, RinglockError)
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is type(err) and str(back) == str(err)
    assert isinstance(InvalidRing("r"), ValueError) and InvalidRing("r").reason == "r"


# -- hypothesis stateful: the invariants after any sequence of transitions (STYLE §7) -----


class RingMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.ring = Ring.new(32)
        self.next_id = 0

    @precondition(lambda self: len(self.ring.members) < 12)
    @rule()
    def join(self) -> None:
        before = self.ring
        self.ring = before.join(f"n{self.next_id}")
        self.next_id += 1
        if before.members:  # Dynamo §4.2: only the newcomer's share moves
            assert moved(before, self.ring) == 32 // len(self.ring.members)

    @precondition(lambda self: self.ring.members)
    @rule(pick=st.integers(0, 11), dead=st.booleans())
    def leave_or_remove(self, pick: int, dead: bool) -> None:
        before = self.ring
        node = before.members[pick % len(before.members)]
        self.ring = before.remove(node) if dead else before.leave(node)
        if self.ring.members:
            assert moved(before, self.ring) == len(before.owned_by(node))

    @rule()
    def round_trip(self) -> None:
        assert Ring.from_bytes(self.ring.to_bytes()) == self.ring

    @invariant()
    def holds(self) -> None:
        self.ring.check()
        self.ring.check(n_val=5)


TestRingMachine = RingMachine.TestCase
TestRingMachine.settings = settings(max_examples=40, stateful_step_count=20, deadline=None)


@settings(max_examples=80, deadline=None)
@given(
    n_nodes=st.integers(1, 8),
    n_val=st.integers(1, 5),
    down_mask=st.integers(0, 255),
    partition=st.integers(0, 63),
)
def test_dynamo_4_6_sloppy_list_stands_in_distinct_healthy_nodes_for_each_down_primary(
    n_nodes: int, n_val: int, down_mask: int, partition: int
) -> None:
    ring = ring_of(*(f"n{i}" for i in range(n_nodes)), ring_size=64)
    down = {f"n{i}" for i in range(n_nodes) if down_mask >> i & 1}
    strict = ring.preference_list_for(partition, n_val)
    sloppy = ring.preference_list_for(partition, n_val, down=down)
    assert sloppy.primaries == tuple(p for p in strict if p not in down)
    fallback_nodes = [f.node for f in sloppy.fallbacks]
    assert not set(fallback_nodes) & (down | set(strict))
    assert len(set(sloppy.nodes)) == len(sloppy.nodes)
    assert [f.for_node for f in sloppy.fallbacks] == [p for p in strict if p in down][
        : len(sloppy.fallbacks)
    ]
    healthy = n_nodes - len(down)
    assert len(sloppy.nodes) == min(n_val, healthy)
    walk = ring.walk(partition)  # fallbacks are the next healthy nodes clockwise, in order
    assert fallback_nodes == [m for m in walk[n_val:] if m not in down][: len(fallback_nodes)]
