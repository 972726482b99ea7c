"""Quorum accounting for one request: whom to ask, when to answer, whom to repair. Pure.

Theory of operation (Dynamo §4.5 "sloppy quorum", §4.6 "hinted handoff", §5 "read repair")

- `plan(ring, key, n, down)` takes the ring and the failure detector's view and returns a
  `Plan`: the key's N primaries (its preference list), the ones that are up, a fallback
  for each primary that is down (the next healthy non-primary clockwise, which stores the
  write as a hint naming that primary), and the spares left after them (further healthy
  nodes clockwise that can stand in for a primary that fails during the request).
- A write's coordinator is the first up primary (`Plan.coordinator`): dotted version
  vectors require the coordinator to be a replica holding the key's durable state. With
  no primary up there is no coordinator and the write fails without being applied.
- `Tally(needed, targets)` counts replies from `targets`: `ok(node)` or `fail(node)` once
  each. `reached` once `needed` nodes said ok; `hopeless` once the ok's plus the nodes
  still outstanding cannot reach `needed` (then the request fails early). A write's tally
  counts the coordinator's own write as one ok; a node that replaces a failed one is
  `add`ed as a new target.
- `stale(replies, merged)` after a read: the replying nodes whose state differs from the
  merge of every reply, which the coordinator repairs by sending them the merge.

No I/O, no clocks: the coordinator drives these values with real replies and deadlines.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from kvstore.errors import InvalidRequest
from kvstore.ring import Fallback, Ring
from kvstore.vclock import SiblingSet


@dataclass(frozen=True, slots=True)
class Plan:
    """Where one key's request goes under the current ring and liveness view."""

    primaries: tuple[str, ...]      # the preference list: the key's N owners, in order
    up: tuple[str, ...]             # primaries the failure detector calls up, in order
    fallbacks: tuple[Fallback, ...]  # a stand-in for each down primary (hinted writes)
    spares: tuple[str, ...]         # further healthy nodes clockwise, for late failures

    @property
    def coordinator(self) -> str | None:
        """The first up primary: the node that coordinates a write (None: nobody can)."""
        return self.up[0] if self.up else None

    @property
    def targets(self) -> tuple[str, ...]:
        """Every node a request goes to: up primaries, then fallbacks."""
        return self.up + tuple(f.node for f in self.fallbacks)

    def owner_of(self, node: str) -> str | None:
        """The primary `node` stands in for, or None when `node` is not a fallback."""
        return next((f.for_node for f in self.fallbacks if f.node == node), None)


def plan(ring: Ring, key: bytes, n: int, down: Iterable[str] = ()) -> Plan:
    """The sloppy-quorum plan for `key` with `n` replicas. O(Q) worst case."""
    down_set = frozenset(down)
    order = ring.walk(ring.partition_of(key)) if ring.members else ()
    primaries = order[:n]
    sloppy = ring.preference_list(key, n, down=down_set) if ring.members else None
    fallbacks = sloppy.fallbacks if sloppy else ()
    used = set(primaries) | {f.node for f in fallbacks}
    spares = tuple(m for m in order if m not in used and m not in down_set)
    up = tuple(p for p in primaries if p not in down_set)
    return Plan(primaries, up, fallbacks, spares)


def check_level(name: str, value: int | None, default: int, n: int) -> int:
    """A per-request R or W: `default` when None, else an int in 1..n (InvalidRequest)."""
    if value is None:
        value = default
    if type(value) is not int or not 1 <= value <= n:
        raise InvalidRequest(f"{name} must be an integer in 1..{n} (N): {value!r:.40}")
    return value


@dataclass(slots=True)
class Tally:
    """Replies counted toward a quorum of `needed` among `targets`.

    Invariant: `acked` and `failed` are disjoint subsets of `targets`.
    """

    needed: int
    targets: list[str]
    acked: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def add(self, node: str) -> None:
        """A new target (a stand-in for one that failed)."""
        if node not in self.targets:
            self.targets.append(node)

    def ok(self, node: str) -> None:
        self._settle(node)
        self.acked.append(node)

    def fail(self, node: str) -> None:
        self._settle(node)
        self.failed.append(node)

    def _settle(self, node: str) -> None:
        if node not in self.targets:
            raise ValueError(f"{node!r} is not a target of this request")
        if node in self.acked or node in self.failed:
            raise ValueError(f"{node!r} already answered")

    @property
    def outstanding(self) -> int:
        return len(self.targets) - len(self.acked) - len(self.failed)

    @property
    def reached(self) -> bool:
        return len(self.acked) >= self.needed

    @property
    def hopeless(self) -> bool:
        return len(self.acked) + self.outstanding < self.needed

    @property
    def finished(self) -> bool:
        return self.outstanding == 0


def stale(replies: Mapping[str, SiblingSet], merged: SiblingSet) -> list[str]:
    """The nodes whose reply differs from `merged` (read repair targets), in sorted order."""
    return sorted(node for node, state in replies.items() if state != merged)
