"""Quorum accounting (Dynamo §4.5 sloppy quorum, §4.6 hinted handoff, §5 read repair).

Pure: rings, liveness views and replies in, plans, verdicts and repair targets out.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvstore import quorum, vclock
from kvstore.errors import InvalidRequest
from kvstore.quorum import Tally, check_level, plan, stale
from kvstore.ring import Ring
from kvstore.vclock import SiblingSet, VersionVector

NODES = [f"127.0.0.1:{7000 + i}" for i in range(6)]


def ring_of(nodes: list[str], size: int = 64) -> Ring:
    ring = Ring.new(size)
    for node in nodes:
        ring = ring.join(node)
    return ring


def test_plan_with_everyone_up_is_the_preference_list() -> None:
    ring = ring_of(NODES)
    p = plan(ring, b"k", 3)
    assert p.primaries == ring.preference_list(b"k", 3)
    assert p.up == p.primaries and p.fallbacks == () and p.coordinator == p.primaries[0]
    assert set(p.spares) == set(NODES) - set(p.primaries)


def test_sloppy_quorum_down_primary_gets_a_fallback_holding_its_hint() -> None:
    """§4.6: a write for a down owner goes to the next healthy node, with a hint."""
    ring = ring_of(NODES)
    full = ring.preference_list(b"k", 3)
    p = plan(ring, b"k", 3, down={full[0]})
    assert p.up == full[1:]
    assert p.coordinator == full[1]
    assert len(p.fallbacks) == 1 and p.fallbacks[0].for_node == full[0]
    fb = p.fallbacks[0].node
    assert fb not in full and p.owner_of(fb) == full[0] and p.owner_of(full[1]) is None
    assert p.targets == (*full[1:], fb)
    assert fb not in p.spares and full[0] not in p.spares


def test_no_primary_up_means_no_coordinator() -> None:
    ring = ring_of(NODES)
    full = ring.preference_list(b"k", 3)
    p = plan(ring, b"k", 3, down=set(full))
    assert p.coordinator is None and p.up == ()
    assert len(p.fallbacks) == 3


def test_plan_on_an_empty_ring_targets_nobody() -> None:
    p = plan(Ring.new(8), b"k", 3)
    assert p.targets == () and p.coordinator is None


@given(st.sets(st.sampled_from(NODES)), st.binary(min_size=1, max_size=8),
       st.integers(1, 4))
def test_plan_targets_are_distinct_healthy_nodes(down, key, n) -> None:
    p = plan(ring_of(NODES, 16), key, n, down)
    everyone = list(p.targets) + list(p.spares)
    assert len(everyone) == len(set(everyone))
    assert not set(everyone) & down
    down_primaries = [x for x in p.primaries if x in down]
    healthy_others = [x for x in NODES if x not in down and x not in p.primaries]
    assert len(p.fallbacks) == min(len(down_primaries), len(healthy_others))
    assert [f.for_node for f in p.fallbacks] == down_primaries[:len(p.fallbacks)]


def test_levels_default_and_bounds() -> None:
    assert check_level("w", None, 2, 3) == 2
    assert check_level("r", 3, 2, 3) == 3
    for bad in (0, 4, -1, True, "2", 2.0):
        with pytest.raises(InvalidRequest):
            check_level("w", bad, 2, 3)


def test_tally_reaches_w_after_w_acks() -> None:
    """§4.5: the coordinator answers once W replicas (its own write included) acked."""
    t = Tally(2, ["a", "b", "c"])
    t.ok("a")
    assert not t.reached and not t.hopeless
    t.fail("b")
    assert not t.reached and not t.hopeless and t.outstanding == 1
    t.ok("c")
    assert t.reached and t.finished


def test_tally_is_hopeless_when_too_few_can_still_answer() -> None:
    t = Tally(2, ["a", "b", "c"])
    t.fail("a")
    t.fail("b")
    assert t.hopeless and not t.reached
    t.add("d")  # a spare stands in for a failed primary
    assert not t.hopeless
    t.ok("c")
    t.ok("d")
    assert t.reached


def test_tally_refuses_strangers_and_double_answers() -> None:
    t = Tally(1, ["a"])
    with pytest.raises(ValueError):
        t.ok("z")
    t.ok("a")
    with pytest.raises(ValueError):
        t.fail("a")


def write(state: SiblingSet, node: str, value: bytes, ts: int = 1) -> SiblingSet:
    return vclock.update(state, vclock.VersionVector(), node, value, timestamp=ts)


def test_read_repair_targets_replicas_behind_the_merge() -> None:
    """§5: replicas that answered an older version get the merged state."""
    old = write(SiblingSet(), "a", b"v1")
    new = vclock.update(old, old.clock, "a", b"v2", timestamp=2)
    replies = {"a": new, "b": old, "c": SiblingSet()}
    merged = vclock.merge_all(replies.values())
    assert merged == new
    assert stale(replies, merged) == ["b", "c"]


def test_read_repair_sends_concurrent_siblings_both_ways() -> None:
    x = write(SiblingSet(), "a", b"x")
    y = write(SiblingSet(), "b", b"y")
    merged = vclock.merge_all([x, y])
    assert sorted(merged.values) == [b"x", b"y"]
    assert stale({"a": x, "b": y, "c": merged}, merged) == ["a", "b"]
    assert stale({"a": merged}, merged) == []
    assert merged.clock == VersionVector.of({"a": 1, "b": 1})


def test_quorum_module_does_no_io() -> None:
    tree = ast.parse(Path(quorum.__file__).read_text())
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
             for a in n.names}
    names |= {n.module.split(".")[0] for n in ast.walk(tree)
              if isinstance(n, ast.ImportFrom) and n.module}
    assert not names & {"asyncio", "aiohttp", "socket", "time", "os", "kvstore.peers"}
