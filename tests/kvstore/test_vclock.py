"""Dotted version vectors, proved against Dynamo §4.4 (versioning: siblings, reconciliation
with the client's context) and the DVV paper (Preguiça et al. 2010; Almeida et al. 2014:
siblings are exactly the concurrent writes; sync is a join).

The central check replays random histories of clients and replicas against a brute-force
model: every write is an event whose causal history is the set of events its client had
read, and a replica's siblings must be exactly the incorporated events no other
incorporated event's history contains.
"""

from __future__ import annotations

import base64
import logging

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvstore.errors import InvalidContext, InvalidSiblingSet, SiblingLimitExceeded
from kvstore.vclock import (
    Dot,
    Order,
    Sibling,
    SiblingLimits,
    SiblingSet,
    VersionVector,
    compare,
    context,
    decode,
    decode_context,
    delete,
    encode,
    lww_sync,
    lww_update,
    lww_winner,
    merge_all,
    prune,
    sync,
    update,
)

REPLICAS = ("a", "b", "c")
CLIENTS = 3
EMPTY = VersionVector()


class History:
    """The implementation and the brute-force causal model, side by side."""

    def __init__(self) -> None:
        self.state = {r: SiblingSet() for r in REPLICAS}
        self.inc: dict[str, frozenset[Dot]] = {r: frozenset() for r in REPLICAS}
        self.hist: dict[Dot, frozenset[Dot]] = {}  # a write's causal history (incl. itself)
        self.sib: dict[Dot, Sibling] = {}
        self.ctx = [EMPTY] * CLIENTS
        self.seen: list[frozenset[Dot]] = [frozenset()] * CLIENTS
        self.ts = 0

    def apply(self, op: tuple) -> None:
        kind, x, y, flag = op
        if kind == "read":  # client x reads replica y; flag: merge with what it read before
            clock = self.state[y].clock
            self.ctx[x] = self.ctx[x].join(clock) if flag else clock
            self.seen[x] = (self.seen[x] | self.inc[y]) if flag else self.inc[y]
        elif kind == "write":  # client x writes through coordinator y; flag: a delete
            self.ts += 1
            before = self.state[y]
            value = b"" if flag else f"v{self.ts}".encode()
            after = update(before, self.ctx[x], y, value, timestamp=self.ts, deleted=flag)
            (dot,) = {s.dot for s in after.siblings} - {s.dot for s in before.siblings}
            assert dot.node == y and dot not in self.hist, "a dot names one write only"
            self.hist[dot] = self.seen[x] | {dot}
            self.sib[dot] = Sibling(dot, value, flag, self.ts)
            if self.seen[x] >= self.inc[y]:  # Dynamo §4.4: a write with the latest context
                assert after.siblings == (self.sib[dot],)  # replaces every version
            self.state[y] = after
            self.inc[y] = self.inc[y] | self.seen[x] | {dot}
        else:  # replica y syncs in replica x's whole state
            self.state[y] = sync(self.state[y], self.state[x])
            self.inc[y] = self.inc[y] | self.inc[x]

    def expected_siblings(self, inc: frozenset[Dot]) -> set[Dot]:
        return {e for e in inc if not any(e in self.hist[f] for f in inc if f != e)}

    def check(self) -> None:
        for r in REPLICAS:
            state = self.state[r]
            state.check()
            assert {s.dot for s in state.siblings} == self.expected_siblings(self.inc[r])
            assert all(self.sib[s.dot] == s for s in state.siblings)
            downset = {Dot(n, k) for n, c in state.clock.entries for k in range(1, c + 1)}
            assert downset == self.inc[r], "the clock is exactly the incorporated history"


def brute_order(a: frozenset[Dot], b: frozenset[Dot]) -> Order:
    if a == b:
        return Order.EQUAL
    if a < b:
        return Order.BEFORE
    return Order.AFTER if a > b else Order.CONCURRENT


ops = st.lists(
    st.one_of(
        st.tuples(st.just("read"), st.integers(0, CLIENTS - 1), st.sampled_from(REPLICAS),
                  st.booleans()),
        st.tuples(st.just("write"), st.integers(0, CLIENTS - 1), st.sampled_from(REPLICAS),
                  st.booleans()),
        st.tuples(st.just("sync"), st.sampled_from(REPLICAS), st.sampled_from(REPLICAS),
                  st.just(False)),
    ),
    max_size=40,
)


def run(history_ops: list[tuple]) -> History:
    h = History()
    for op in history_ops:
        h.apply(op)
        h.check()
    return h


# -- the DVV promise: siblings are exactly the concurrent writes -------------------------


@settings(max_examples=150, deadline=None)
@given(history_ops=ops)
def test_dvv_siblings_are_exactly_the_concurrent_writes_never_more(history_ops) -> None:
    run(history_ops)  # History.check compares with the brute-force model after every step


@settings(max_examples=100, deadline=None)
@given(history_ops=ops)
def test_dynamo_4_4_compare_agrees_with_causal_history_by_brute_force(history_ops) -> None:
    h = run(history_ops)
    for x in REPLICAS:
        for y in REPLICAS:
            assert compare(h.state[x], h.state[y]) == brute_order(h.inc[x], h.inc[y])
        for c in range(CLIENTS):
            assert compare(h.ctx[c], h.state[x]) == brute_order(h.seen[c], h.inc[x])


@settings(max_examples=100, deadline=None)
@given(history_ops=ops)
def test_dvv_sync_is_commutative_associative_idempotent(history_ops) -> None:
    h = run(history_ops)
    a, b, c = (h.state[r] for r in REPLICAS)
    assert sync(a, b) == sync(b, a)
    assert sync(sync(a, b), c) == sync(a, sync(b, c))
    assert sync(a, a) == a and sync(a, SiblingSet()) == a
    merged = merge_all([a, b, c])
    everything = h.inc["a"] | h.inc["b"] | h.inc["c"]
    assert {s.dot for s in merged.siblings} == h.expected_siblings(everything)


# -- Dynamo §4.4 by example ------------------------------------------------------------------


def test_dynamo_4_4_same_context_through_one_coordinator_makes_two_siblings() -> None:
    base = update(SiblingSet(), EMPTY, "a", b"v0", timestamp=1)
    ctx = base.clock
    one = update(base, ctx, "a", b"alice", timestamp=2)
    two = update(one, ctx, "a", b"bob", timestamp=3)  # plain per-node VVs would order these
    assert sorted(two.values) == [b"alice", b"bob"]
    resolved = update(two, decode_context(context(two)), "b", b"merged", timestamp=4)
    assert resolved.values == [b"merged"] and compare(two, resolved) is Order.BEFORE


def test_dvv_no_sibling_explosion_with_two_clients_writing_their_own_stale_contexts() -> None:
    state, ctx = SiblingSet(), [EMPTY, EMPTY]
    for i in range(50):
        client = i % 2
        state = update(state, ctx[client], "a", f"{client}:{i}".encode(), timestamp=i)
        ctx[client] = state.clock  # the response body's context (Riak returnbody)
        assert len(state.siblings) <= 2  # one per concurrent writer, never one per write


def test_dynamo_4_4_tombstones_are_siblings_with_clocks() -> None:
    put = update(SiblingSet(), EMPTY, "a", b"x", timestamp=1)
    gone = delete(put, put.clock, "a", timestamp=2)
    assert gone.is_deleted and gone.values == [] and len(gone.siblings) == 1
    concurrent_put = update(put, put.clock, "b", b"y", timestamp=3)
    both = sync(gone, concurrent_put)
    assert not both.is_deleted and both.values == [b"y"] and len(both.siblings) == 2
    with pytest.raises(ValueError, match="tombstone"):
        update(put, EMPTY, "a", b"x", timestamp=4, deleted=True)


# -- sibling cap -------------------------------------------------------------------------------


def test_sibling_cap_warns_past_soft_limit_and_refuses_past_hard_limit(caplog) -> None:
    limits = SiblingLimits(warn=2, max=3)
    state = SiblingSet()
    with caplog.at_level(logging.WARNING, logger="kvstore.vclock"):
        for i in range(3):
            state = update(state, EMPTY, "a", b"%d" % i, timestamp=i, limits=limits)
    assert len(state.siblings) == 3 and "3 siblings" in caplog.text
    with pytest.raises(SiblingLimitExceeded) as err:
        update(state, EMPTY, "a", b"4", timestamp=4, limits=limits)
    assert err.value.key_siblings == 4 and err.value.limit == 3 and "resolve" in str(err.value)
    assert len(state.siblings) == 3  # the refused write changed nothing
    resolved = update(state, state.clock, "a", b"ok", timestamp=5, limits=limits)
    assert resolved.values == [b"ok"]


# -- pruning -----------------------------------------------------------------------------------


def test_prune_drops_oldest_entries_without_siblings_and_never_keep() -> None:
    state = SiblingSet()
    for i, node in enumerate(["n1", "n2", "n3", "n4", "n5"]):
        state = update(state, state.clock, node, b"%d" % i, timestamp=10 + i)
    state = update(state, EMPTY, "n0", b"old", timestamp=1)  # oldest, but holds a sibling
    pruned = prune(state, 3, keep="n1")
    assert pruned.siblings == state.siblings  # pruning never loses a write
    assert [k for k, _ in pruned.clock.entries] == ["n0", "n1", "n5"]
    pruned.check()
    assert prune(state, 10) is state
    assert len(prune(state, 0, keep="n1").clock.entries) == 3  # nothing more can go


def test_prune_trade_off_can_only_add_a_false_sibling() -> None:
    stale = update(SiblingSet(), EMPTY, "x", b"old", timestamp=1)
    fresh = update(stale, stale.clock, "a", b"new", timestamp=2)
    assert sync(fresh, stale).values == [b"new"]
    forgetful = prune(fresh, 1, keep="a")  # forgets it saw x's write
    assert sorted(sync(forgetful, stale).values) == [b"new", b"old"]  # resurrected, not lost


@settings(max_examples=60, deadline=None)
@given(history_ops=ops, max_entries=st.integers(0, 3))
def test_prune_never_loses_a_write_it_can_only_add_siblings_to_a_merge(
    history_ops, max_entries: int
) -> None:
    h = run(history_ops)
    for r in REPLICAS:
        pruned = prune(h.state[r], max_entries, keep=r)
        pruned.check()
        assert pruned.siblings == h.state[r].siblings and pruned.clock.get(r) == (
            h.state[r].clock.get(r))
        for other in REPLICAS:
            exact = {s.dot for s in sync(h.state[r], h.state[other]).siblings}
            assert exact <= {s.dot for s in sync(pruned, h.state[other]).siblings}
            assert sync(pruned, h.state[other]) == sync(h.state[other], pruned)


# -- last-write-wins (opt-in, lossy) -------------------------------------------------------------


def test_lww_keeps_only_the_latest_timestamp_and_drops_concurrent_writes() -> None:
    a = lww_update(SiblingSet(), "a", b"early", timestamp=5)
    b = lww_update(SiblingSet(), "b", b"late", timestamp=9)
    assert lww_sync(a, b) == lww_sync(b, a)
    assert lww_sync(a, b).values == [b"late"]  # "early" is lost: that is LWW
    assert lww_update(lww_sync(a, b), "a", b"stale-clock", timestamp=3).values == [b"late"]
    assert lww_winner(SiblingSet()) is None


# -- encodings: round trips and hostile bytes ------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(history_ops=ops)
def test_encodings_round_trip(history_ops) -> None:
    h = run(history_ops)
    for state in h.state.values():
        assert decode(encode(state)) == state
        ctx = context(state)
        assert ctx.decode("ascii") and b"=" not in ctx
        assert decode_context(ctx) == state.clock == decode_context(ctx.decode())


def b64(raw: bytes) -> bytes:
    return base64.urlsafe_b64encode(raw).rstrip(b"=")


def ctx_of(obj: object) -> bytes:
    return b64(b"\x01" + msgpack.packb(obj))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "length"),
        (b"A" * (65 << 10), "length"),
        ("é", "not ASCII"),
        (b"!!!!", "base64"),
        (b"AZA=", "base64"),
        (b"A", "base64"),
        (b"AZB", "canonical"),  # same bytes as "AZA" with stray low bits
        (b64(b"\x02\x90"), "format version"),
        (b64(b"\x01"), "not msgpack"),
        (b64(b"\x01\xc1"), "not msgpack"),
        (b64(b"\x01\x90\x90"), "not msgpack"),
        (b64(b"\x01" + b"\x91" * 5000), "not msgpack|entry"),
        (ctx_of({"a": 1}), "not msgpack"),
        (ctx_of("a"), "array"),
        (ctx_of([["a"]]), "array of 2"),
        (ctx_of([["a", 0]]), "counter"),
        (ctx_of([["a", -1]]), "counter"),
        (ctx_of([["a", True]]), "counter"),
        (ctx_of([["a", 1.0]]), "counter"),
        (ctx_of([["a", 2**64 - 1]]), "counter"),
        (ctx_of([["", 1]]), "node name"),
        (ctx_of([[b"a", 1]]), "node name"),
        (ctx_of([["b", 1], ["a", 1]]), "sorted"),
        (ctx_of([["a", 1], ["a", 2]]), "sorted"),
        (ctx_of([["x" * 300, 1]]), "not msgpack"),
    ],
)
def test_hostile_context_raises_invalid_context(data: bytes | str, reason: str) -> None:
    with pytest.raises(InvalidContext, match=reason):
        decode_context(data)


def test_forged_context_at_the_counter_limit_is_refused_and_changes_nothing() -> None:
    state = update(SiblingSet(), EMPTY, "a", b"x", timestamp=1)
    forged = decode_context(ctx_of([["a", 2**63 - 1]]))
    with pytest.raises(InvalidContext, match="no room"):
        update(state, forged, "a", b"y", timestamp=2)
    assert decode(encode(state)) == state


def test_context_type_errors() -> None:
    with pytest.raises(TypeError):
        decode_context(42)  # type: ignore[arg-type]


def enc(entries: object, sibs: object) -> bytes:
    return b"\x01" + msgpack.packb([entries, sibs], use_bin_type=True)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "format version"),
        (b"\x07" + msgpack.packb([[], []]), "format version"),
        (b"\x01\x92\x90", "not msgpack"),
        (enc([], []) + b"\x00", "not msgpack"),
        (b"\x01" + msgpack.packb([[]]), r"\[entries, siblings\]"),
        (enc([["a", 1, 0]], [[0, 2, 0, 0, b"x"]]), "outside the clock"),
        (enc([["a", 1, 0]], [[1, 1, 0, 0, b"x"]]), "bad sibling fields"),
        (enc([["a", 1, 0]], [[0, 0, 0, 0, b"x"]]), "bad sibling fields"),
        (enc([["a", 1, 0]], [[0, 1, 2, 0, b"x"]]), "bad sibling fields"),
        (enc([["a", 1, 0]], [[0, 1, 1, 0, b"x"]]), "tombstone"),
        (enc([["a", 1, 0]], [[0, 1, 0, 0, "x"]]), "a sibling must be"),
        (enc([["a", 1, 0]], [[0, 1, 0, -1, b"x"]]), "field"),
        (enc([["a", 2, 0]], [[0, 2, 0, 0, b"x"], [0, 1, 0, 0, b"y"]]), "sorted"),
        (enc([["a", 2, 0]], [[0, 1, 0, 0, b"x"], [0, 1, 0, 0, b"y"]]), "sorted"),
        (enc([["b", 1, 0], ["a", 1, 0]], []), "sorted"),
        (enc([["a", 1]], []), "array of 3"),
        (enc([["a", 1, -5]], []), "counter"),
    ],
)
def test_hostile_sibling_set_bytes_raise_invalid_sibling_set(data: bytes, reason: str) -> None:
    with pytest.raises(InvalidSiblingSet, match=reason):
        decode(data)


def test_every_truncation_and_bit_flip_of_a_sibling_set_is_rejected_or_valid() -> None:
    state = update(SiblingSet(), EMPTY, "a", b"one", timestamp=3)
    state = update(state, EMPTY, "b", b"two", timestamp=4)
    state = delete(state, EMPTY, "a", timestamp=5)
    data = encode(state)
    for cut in range(len(data)):
        with pytest.raises(InvalidSiblingSet):
            decode(data[:cut])
    for i in range(len(data)):
        for bit in range(8):
            damaged = bytearray(data)
            damaged[i] ^= 1 << bit
            try:
                decoded = decode(bytes(damaged))
            except InvalidSiblingSet:
                continue
            decoded.check()  # a flip inside a value or counter still decodes to a valid set
