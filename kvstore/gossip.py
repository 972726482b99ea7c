"""Gossip state: what each node says about itself, how two views merge, which ring wins.

Theory of operation (Cassandra's gossiper, Riak's ring gossip; Dynamo §4.8.1)

- Every node owns one `NodeState` about itself: its `generation` (chosen at process start,
  larger after every restart), a `heartbeat` it raises every gossip round and on every
  change of its own state, its `status` ("up", "leaving", "left") and the id of the ring it
  acts on (`ring_version`, `ring_digest`). Only the node itself writes its state; everyone
  else copies it. So `(generation, heartbeat)` orders a node's states totally, and merging
  two views is: per node, keep the state with the larger `(generation, heartbeat)`.
  `merge_views` is commutative, associative and idempotent, so views converge in any order.
- A heartbeat that rises in a merge is a heartbeat *arrival* for the failure detector.
- Digest or delta: a gossip request carries the sender's whole view (about 40 bytes per
  node) and its ring id; the answer carries only the states the receiver holds newer
  (`delta`). The ring (hundreds of bytes to megabytes) travels only when the peer's ring
  id is known (from its own gossiped state) or seen (in the request) to differ.
- Ring versions: the claimant (kvstore.membership) is the only member that makes ring
  changes, each one version higher. Should two members ever both act as claimant (a
  partition or a failure-detector disagreement), two rings with the same version but
  different contents exist; `ring_wins` breaks the tie by the ring digest, so every node
  ends on the same ring (the loser's change is lost; it was acknowledged to its operator,
  who sees it missing in `kv cluster status`). Higher version always wins.

Wire format of a gossip message (msgpack map, both request and answer; names are short):
    {"from": str, "states": {node: [generation, heartbeat, status, ring_version,
     ring_digest]}, "ring": bytes | nil}
Validation is strict: `decode_message` raises WireError on anything else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import mmh3
import msgpack

from kvstore.errors import WireError
from kvstore.ring import MAX_NODE_NAME_BYTES, MAX_SERIALISED_BYTES, Ring

STATUSES = ("up", "leaving", "left")
MAX_STATES = 4096  # a ring holds at most MAX_RING_SIZE members; left nodes linger too
MAX_MESSAGE_BYTES = MAX_SERIALISED_BYTES + MAX_STATES * (MAX_NODE_NAME_BYTES + 64)
_U63 = 1 << 63


@dataclass(frozen=True, slots=True)
class NodeState:
    generation: int
    heartbeat: int
    status: str = "up"
    ring_version: int = 0
    ring_digest: int = 0

    @property
    def order(self) -> tuple[int, int]:
        return (self.generation, self.heartbeat)

    def beat(self, **changes: object) -> NodeState:
        """This node's next state: heartbeat + 1, with `changes` applied."""
        return replace(self, heartbeat=self.heartbeat + 1, **changes)  # type: ignore[arg-type]

    def to_wire(self) -> list:
        return [self.generation, self.heartbeat, self.status, self.ring_version,
                self.ring_digest]


def ring_digest(ring: Ring) -> int:
    """A 64-bit digest of the ring's bytes (its identity next to the version)."""
    return mmh3.hash64(ring.to_bytes(), seed=0, x64arch=True, signed=False)[0] & (_U63 - 1)


def ring_id(ring: Ring) -> tuple[int, int]:
    return (ring.version, ring_digest(ring))


def ring_wins(candidate: tuple[int, int], current: tuple[int, int]) -> bool:
    """True if a ring with id `candidate` should replace one with id `current`."""
    return candidate > current


def merge_views(mine: Mapping[str, NodeState], theirs: Mapping[str, NodeState], *,
                me: str) -> tuple[dict[str, NodeState], set[str]]:
    """The merged view and the nodes whose state got newer. Our own state is never taken.

    (A state about `me` newer than ours can only come from our previous process with a
    larger generation; membership picks generations above any it persisted.)
    """
    merged = dict(mine)
    newer: set[str] = set()
    for node, state in theirs.items():
        if node == me:
            continue
        have = merged.get(node)
        if have is None or state.order > have.order:
            merged[node] = state
            newer.add(node)
    return merged, newer


def delta(mine: Mapping[str, NodeState], theirs: Mapping[str, NodeState]) -> dict[str, NodeState]:
    """The states in `mine` newer than (or missing from) `theirs`: what the peer lacks."""
    return {n: s for n, s in mine.items() if n not in theirs or s.order > theirs[n].order}


@dataclass(frozen=True, slots=True)
class GossipMessage:
    sender: str
    states: dict[str, NodeState]
    ring: bytes | None = None

    def encode(self) -> bytes:
        return msgpack.packb({"from": self.sender,
                              "states": {n: s.to_wire() for n, s in self.states.items()},
                              "ring": self.ring})


def _uint(obj: object, what: str) -> int:
    if type(obj) is not int or not 0 <= obj < _U63:
        raise WireError(f"{what} must be an int in 0..2**63-1")
    return obj


def _name(obj: object) -> str:
    if not isinstance(obj, str) or not 1 <= len(obj.encode("utf-8", "replace")) <= (
            MAX_NODE_NAME_BYTES):
        raise WireError(f"node names must be 1..{MAX_NODE_NAME_BYTES} byte strings")
    return obj


def decode_state(obj: object) -> NodeState:
    if not isinstance(obj, list) or len(obj) != 5:
        raise WireError("a node state must be a 5-element array")
    gen, hb, status, rv, rd = obj
    if status not in STATUSES:
        raise WireError(f"unknown status {status!r}")
    return NodeState(_uint(gen, "generation"), _uint(hb, "heartbeat"), status,
                     _uint(rv, "ring_version"), _uint(rd, "ring_digest"))


def decode_message(data: bytes) -> GossipMessage:
    """Parse and validate a gossip message; raise WireError on anything malformed."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise WireError(f"gossip message of {len(data)} bytes is over the limit")
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True, max_ext_len=0,
                              max_bin_len=MAX_SERIALISED_BYTES, max_map_len=MAX_STATES,
                              max_array_len=MAX_STATES, max_str_len=MAX_NODE_NAME_BYTES * 4)
    except (ValueError, msgpack.UnpackException) as exc:
        raise WireError(f"gossip body is not msgpack: {exc}") from None
    if not isinstance(obj, dict) or set(obj) != {"from", "states", "ring"}:
        raise WireError("gossip body must be a map with exactly from, states, ring")
    states = obj["states"]
    if not isinstance(states, dict):
        raise WireError("states must be a map")
    ring = obj["ring"]
    if ring is not None and not isinstance(ring, bytes):
        raise WireError("ring must be bytes or nil")
    return GossipMessage(_name(obj["from"]),
                         {_name(n): decode_state(s) for n, s in states.items()}, ring)
