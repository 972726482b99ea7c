"""Gossip state (Dynamo §4.8.1; Cassandra's gossiper): per-node states ordered by
(generation, heartbeat), a view merge that converges in any order, deltas, the ring tie
break, and strict decoding of the wire message."""

from __future__ import annotations

import ast
from pathlib import Path

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

import kvstore.gossip as g
from kvstore.errors import WireError
from kvstore.gossip import GossipMessage, NodeState, decode_message, delta, merge_views
from kvstore.ring import Ring

names = st.sampled_from(["a:1", "b:2", "c:3", "d:4"])
states = st.builds(NodeState, st.integers(0, 3), st.integers(0, 5),
                   st.sampled_from(g.STATUSES), st.integers(0, 9), st.integers(0, 9))
views = st.dictionaries(names, states, max_size=4)


def merged(a: dict, b: dict) -> dict:
    return merge_views(a, b, me="me:0")[0]


@given(views, views, views)
def test_4_8_1_merge_is_commutative_associative_idempotent_on_orders(a, b, c) -> None:
    def orders(v: dict) -> dict:
        return {n: s.order for n, s in v.items()}
    assert orders(merged(a, b)) == orders(merged(b, a))
    assert orders(merged(merged(a, b), c)) == orders(merged(a, merged(b, c)))
    assert merged(a, a) == a


@given(views, views)
def test_4_8_1_merge_keeps_the_newest_state_per_node_and_reports_what_got_newer(a, b) -> None:
    m, newer = merge_views(a, b, me="me:0")
    for n in set(a) | set(b):
        best = max((v[n] for v in (a, b) if n in v), key=lambda s: s.order)
        assert m[n].order == best.order
    assert newer == {n for n in b if n not in a or b[n].order > a[n].order}


def test_our_own_state_is_never_taken_from_a_peer() -> None:
    mine = {"b:2": NodeState(1, 1)}
    m, newer = merge_views(mine, {"me:0": NodeState(9, 9), "b:2": NodeState(1, 2)}, me="me:0")
    assert "me:0" not in m and newer == {"b:2"}


def test_a_restart_generation_beats_any_heartbeat_of_the_old_one() -> None:
    m, _ = merge_views({"b:2": NodeState(1, 10_000)}, {"b:2": NodeState(2, 0)}, me="x:0")
    assert m["b:2"] == NodeState(2, 0)


@given(views, views)
def test_delta_is_exactly_what_the_peer_lacks(mine, theirs) -> None:
    d = delta(mine, theirs)
    assert merged(theirs, d) == merged(theirs, mine)
    assert all(n not in theirs or s.order > theirs[n].order for n, s in d.items())


def test_beat_raises_the_heartbeat_and_applies_changes() -> None:
    s = NodeState(5, 7).beat(status="leaving", ring_version=3)
    assert s == NodeState(5, 8, "leaving", 3, 0)


def test_ring_ids_order_by_version_then_digest() -> None:
    r1 = Ring.new(16).join("a:1")
    r2a, r2b = r1.join("b:2"), r1.join("c:3")
    assert g.ring_wins(g.ring_id(r2a), g.ring_id(r1))
    assert not g.ring_wins(g.ring_id(r1), g.ring_id(r2a))
    # a fork (same version) is broken the same way everywhere: exactly one side wins
    assert g.ring_wins(g.ring_id(r2a), g.ring_id(r2b)) != g.ring_wins(g.ring_id(r2b),
                                                                     g.ring_id(r2a))
    assert not g.ring_wins(g.ring_id(r2a), g.ring_id(r2a))
    assert g.ring_digest(r2a) == g.ring_digest(Ring.from_bytes(r2a.to_bytes()))


def test_a_message_round_trips() -> None:
    ring = Ring.new(16).join("a:1").to_bytes()
    msg = GossipMessage("a:1", {"a:1": NodeState(1, 2, "up", 1, 99),
                                "b:2": NodeState(3, 4, "left", 0, 0)}, ring)
    assert decode_message(msg.encode()) == msg
    assert decode_message(GossipMessage("a:1", {}).encode()) == GossipMessage("a:1", {})


HOSTILE = [
    b"", b"\xc1", b"\x93\x01\x02", msgpack.packb([]), msgpack.packb({"from": "a:1"}),
    msgpack.packb({"from": "a:1", "states": {}, "ring": None, "extra": 1}),
    msgpack.packb({"from": 5, "states": {}, "ring": None}),
    msgpack.packb({"from": "x" * 300, "states": {}, "ring": None}),
    msgpack.packb({"from": "a:1", "states": [], "ring": None}),
    msgpack.packb({"from": "a:1", "states": {"b:2": "up"}, "ring": None}),
    msgpack.packb({"from": "a:1", "states": {"b:2": [1, 2, "up", 0]}, "ring": None}),
    msgpack.packb({"from": "a:1", "states": {"b:2": [1, 2, "gone", 0, 0]}, "ring": None}),
    msgpack.packb({"from": "a:1", "states": {"b:2": [1.5, 2, "up", 0, 0]}, "ring": None}),
    msgpack.packb({"from": "a:1", "states": {"b:2": [True, 2, "up", 0, 0]}, "ring": None}),
    msgpack.packb({"from": "a:1", "states": {"b:2": [1, 2**63, "up", 0, 0]}, "ring": None}),
    msgpack.packb({"from": "a:1", "states": {}, "ring": 7}),
    msgpack.packb({"from": "a:1", "states": {}, "ring": None}) + b"trailing",
    b"\xdf\xff\xff\xff\xff",  # a map header claiming 4 billion entries
]


@pytest.mark.parametrize("body", HOSTILE)
def test_hostile_messages_raise_wire_error(body: bytes) -> None:
    with pytest.raises(WireError):
        decode_message(body)


def test_an_oversized_message_is_refused_before_parsing() -> None:
    with pytest.raises(WireError, match="over the limit"):
        decode_message(b"\x00" * (g.MAX_MESSAGE_BYTES + 1))


def test_gossip_state_is_pure() -> None:
    tree = ast.parse(Path(g.__file__).read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
                for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree)
                 if isinstance(n, ast.ImportFrom) and n.module}
    assert not imported & {"time", "asyncio", "socket", "os", "aiohttp", "random"}
