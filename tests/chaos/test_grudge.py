"""Partition shapes: who hears whom, as the nemesis will apply them."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chaos import grudge as g

NODES = [f"127.0.0.{11 + i}" for i in range(5)]


def hears(grudge, a, b):
    return a not in grudge.get(b, frozenset())


def test_halves_cut_every_crossing_link_and_no_other():
    gr = g.halves(NODES, random.Random(1))
    sides = {}
    for n in NODES:
        sides.setdefault(frozenset(m for m in NODES if hears(gr, m, n)), []).append(n)
    assert sorted(len(v) for v in sides.values()) == [2, 3]


def test_isolate_leaves_one_node_alone():
    gr = g.isolate(NODES, NODES[2])
    assert gr[NODES[2]] == frozenset(NODES) - {NODES[2]}
    assert all(hears(gr, a, b) for a in NODES for b in NODES if NODES[2] not in (a, b))
    with pytest.raises(ValueError, match="not one of"):
        g.isolate(NODES, "127.0.0.99")


@given(st.integers(4, 9), st.integers(0, 10**6))
def test_majorities_ring_gives_everyone_a_different_majority(n, seed):
    nodes = [f"127.0.0.{11 + i}" for i in range(n)]
    gr = g.majorities_ring(nodes, random.Random(seed))
    views = {node: frozenset(m for m in nodes if hears(gr, m, node)) for node in nodes}
    assert all(len(v) > n // 2 and node in v for node, v in views.items())
    assert all(len(v) < n for v in views.values())  # everyone misses someone
    assert len(set(views.values())) == n  # no two share a view
    assert all(hears(gr, a, b) == hears(gr, b, a) for a in nodes for b in nodes)


def test_majorities_ring_needs_four_nodes():
    with pytest.raises(ValueError, match="four"):
        g.majorities_ring(NODES[:3], random.Random(0))


def test_bridge_node_hears_both_sides_that_cannot_hear_each_other():
    gr = g.bridge(NODES, random.Random(3))
    middle = next(n for n in NODES if not gr[n])
    others = [n for n in NODES if n != middle]
    assert all(hears(gr, middle, n) and hears(gr, n, middle) for n in others)
    cut = [(a, b) for a in others for b in others if not hears(gr, a, b)]
    assert len(cut) == 2 * 2 * 2  # 2x2 nodes, both directions


def test_one_way_and_links():
    gr = g.one_way(NODES[0], NODES[1])
    assert g.dropped_links(gr) == [(NODES[0], NODES[1])]
    assert g.describe(gr) == f"{NODES[0]}-x->{NODES[1]}"
    assert g.describe({}) == "no partition"
    with pytest.raises(ValueError):
        g.one_way(NODES[0], NODES[0])


def test_shapes_replay_from_a_seed():
    assert g.halves(NODES, random.Random(7)) == g.halves(NODES, random.Random(7))


@pytest.mark.parametrize("bad", [[NODES[0]], [NODES[0], NODES[0]]])
def test_bad_node_lists_are_refused(bad):
    with pytest.raises(ValueError):
        g.halves(bad, random.Random(0))
