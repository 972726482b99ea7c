"""Network partitions as grudges: who cannot hear whom (Jepsen's nemesis/partition shapes).

A *grudge* maps each node to the set of nodes whose packets it drops. Every partition shape
the harness knows is a pure function of the node list and a seeded `random.Random`, so a
schedule replays from its seed. The firewall (iptables or the proxy) turns a grudge into
one rule per directed pair `(src, dst)`: "packets from src to dst are lost".

Shapes (Jepsen's names where it has them):
- `halves`: a random split into two sides, the smaller one of size n // 2; no traffic crosses.
- `isolate(node)`: one node alone (e.g. the Raft leader or a ring member).
- `majorities_ring`: every node sees a majority of the cluster (itself and its neighbours
  on a shuffled ring) but no two nodes see the same majority: a classic Raft trap.
- `bridge`: two halves that cannot talk, plus one node that talks to both.
- `one_way(src, dst)`: only `src -> dst` is lost (asymmetric links).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

Grudge = dict[str, frozenset[str]]


def _check_nodes(nodes: Sequence[str]) -> list[str]:
    nodes = list(nodes)
    if len(set(nodes)) != len(nodes):
        raise ValueError(f"duplicate nodes: {nodes}")
    if len(nodes) < 2:
        raise ValueError("a partition needs at least two nodes")
    return nodes


def components(groups: Iterable[Iterable[str]]) -> Grudge:
    """The grudge of disjoint groups that cannot reach each other (complete within)."""
    groups = [frozenset(g) for g in groups]
    every = frozenset().union(*groups)
    if sum(len(g) for g in groups) != len(every):
        raise ValueError("groups overlap")
    return {n: every - g for g in groups for n in g}


def halves(nodes: Sequence[str], rng: random.Random) -> Grudge:
    nodes = _check_nodes(nodes)
    shuffled = rng.sample(nodes, len(nodes))
    cut = len(nodes) // 2
    return components([shuffled[:cut], shuffled[cut:]])


def isolate(nodes: Sequence[str], node: str) -> Grudge:
    nodes = _check_nodes(nodes)
    if node not in nodes:
        raise ValueError(f"{node} is not one of {nodes}")
    return components([[node], [n for n in nodes if n != node]])


def majorities_ring(nodes: Sequence[str], rng: random.Random) -> Grudge:
    """Each node hears the nodes within distance k of it on a shuffled ring, k the least
    that makes a majority with itself; with 5 nodes every node sees 3, no two the same 3."""
    nodes = _check_nodes(nodes)
    n = len(nodes)
    k = (n // 2 + 1) // 2  # 2k + 1 >= n // 2 + 1
    if 2 * k + 1 >= n:
        raise ValueError("a majorities ring needs at least four nodes")
    ring = rng.sample(nodes, n)
    every = frozenset(ring)
    return {node: every - {ring[(i + d) % n] for d in range(-k, k + 1)}
            for i, node in enumerate(ring)}


def bridge(nodes: Sequence[str], rng: random.Random) -> Grudge:
    """Two halves that cannot talk to each other, and one node that talks to both."""
    nodes = _check_nodes(nodes)
    if len(nodes) < 3:
        raise ValueError("a bridge needs at least three nodes")
    shuffled = rng.sample(nodes, len(nodes))
    middle, rest = shuffled[0], shuffled[1:]
    cut = len(rest) // 2
    left, right = frozenset(rest[:cut]), frozenset(rest[cut:])
    grudge: Grudge = {middle: frozenset()}
    grudge.update({n: right for n in left})
    grudge.update({n: left for n in right})
    return grudge


def one_way(src: str, dst: str) -> Grudge:
    """Packets from `src` to `dst` are lost; the other direction works."""
    if src == dst:
        raise ValueError("a node always hears itself")
    return {dst: frozenset({src})}


def dropped_links(grudge: Grudge) -> list[tuple[str, str]]:
    """The directed (src, dst) pairs whose packets are lost, sorted."""
    return sorted((src, dst) for dst, srcs in grudge.items() for src in srcs if src != dst)


def describe(grudge: Grudge) -> str:
    """A short human line: e.g. `{a,b} x {c,d,e}` for components, else the link list."""
    links = dropped_links(grudge)
    if not links:
        return "no partition"
    return ", ".join(f"{s}-x->{d}" for s, d in links)
