"""The consistent-hash ring: a fixed number of equal partitions claimed by nodes.

Theory of operation (Dynamo §4.2 and §6.2 "strategy 3"; Riak's ring)

- The 64-bit hash space is cut into `ring_size` equal partitions (a power of two, 256 by
  default). A key's hash is the first 64-bit word of MurmurHash3_x64_128 of the key bytes,
  seed 0, read unsigned: `mmh3.hash64(key, seed=0, x64arch=True, signed=False)[0]`. The key
  lands in partition `hash >> (64 - log2(ring_size))`, that is partition `i` covers the
  hashes `[i * 2**64 / ring_size, (i + 1) * 2**64 / ring_size)`. Both are on disk and on
  the wire (they decide where every stored key lives): do not change.
- Every partition has exactly one owner. Fair share: all owners own `floor(Q/n)` or
  `ceil(Q/n)` partitions (Q partitions, n nodes), so no two differ by more than one.
- `join(node)` hands the newcomer exactly `floor(Q/(n+1))` partitions, taken only from
  nodes above their new fair share; nothing else moves, so a join moves about `Q/(n+1)`
  partitions (Dynamo §4.2: a newcomer takes a roughly equal share from the others).
  `leave(node)` and `remove(node)` give only the leaver's partitions to nodes below their
  new fair share; every other partition stays where it is.
- Spread (Riak's claim v2/v3 problem): a preference list walks clockwise, so a node that
  owns neighbouring partitions shortens the distinct prefix. Both transitions pick, among
  the moves that keep the fair share, the partition (and receiver) that leaves the fewest
  same-owner pairs within `target_n` consecutive partitions, breaking ties by the lowest
  partition index and then the node name (a leave first places the orphan with the fewest
  equally good receivers). No randomness: the ring after a sequence of joins and leaves is
  a function of that sequence. Minimal movement comes first, so spread is best effort:
  over random sequences of up to 20 nodes on 256 partitions about 1.6 partitions on
  average (4 right after a leave, 51 at worst, on 3 nodes) share an owner with one of the
  next two; joins repair some of it. Preference lists stay distinct regardless (they walk
  on until they have N nodes); only their spans grow.
- `preference_list(key, n)` (Dynamo §4.3): the first `n` distinct owners met walking
  clockwise from the key's partition. With fewer than `n` nodes it returns every node, in
  that walk order (a cluster cannot hold more replicas than it has nodes).
- `preference_list(key, n, down=...)` is the sloppy quorum (Dynamo §4.6): the primaries
  that are up, and for each primary that is down (in preference order) the next healthy
  node further clockwise that is not a primary, as a `Fallback` naming the primary it
  stands in for. A down primary gets no fallback when no healthy node is left.
- The ring is an immutable value; each transition returns a new ring whose `version` is one
  higher. `to_bytes()`/`from_bytes()` use msgpack (format below); reading validates every
  field and invariant and raises `InvalidRing` on damaged or hostile bytes.

Serialised format (msgpack, on disk and on the wire: do not change FORMAT_VERSION meaning):
    [ "ringlock-ring", 1, version: uint, ring_size: uint, members: [str, ...],
      owners: [member index: uint, ...] (ring_size entries, [] when members is []) ]
`members` is in join order; node names are non-empty UTF-8 strings of at most 255 bytes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import overload

import mmh3
import msgpack

from kvstore.errors import InvalidRing

DEFAULT_RING_SIZE = 256  # Riak's default; 64 nodes each still get 4 partitions
MAX_RING_SIZE = 1 << 12  # claim is O(Q^2/n): a 4096-partition join takes seconds
MAX_NODE_NAME_BYTES = 255
MAX_SERIALISED_BYTES = 2 << 20  # a 4096-partition ring of 4096 255-byte names fits
DEFAULT_TARGET_N = 3  # claim tries to give every 3 consecutive partitions distinct owners
HASH_SEED = 0  # on disk: do not change
_MASK64 = (1 << 64) - 1
FORMAT_TAG = "ringlock-ring"  # on disk: do not change
FORMAT_VERSION = 1  # on disk: do not change


def key_hash(key: bytes) -> int:
    """The unsigned 64-bit ring position of `key` (first word of MurmurHash3_x64_128)."""
    if not isinstance(key, bytes | bytearray | memoryview):
        raise TypeError(f"key must be bytes, not {type(key).__name__}")
    # Keywords and the mask both matter: mmh3 5.3.1 ignores `signed` when it is passed
    # positionally (hash64(b"abc", 0, True, False) answers a negative number).
    return mmh3.hash64(bytes(key), seed=HASH_SEED, x64arch=True, signed=False)[0] & _MASK64


def partition_of(key: bytes, ring_size: int = DEFAULT_RING_SIZE) -> int:
    """The partition that holds `key`. Requires: ring_size a power of two."""
    return key_hash(key) >> (64 - (ring_size.bit_length() - 1))


@dataclass(frozen=True, slots=True)
class Fallback:
    """A healthy node that takes writes for `for_node` while it is down (a hinted replica)."""

    node: str
    for_node: str


@dataclass(frozen=True, slots=True)
class SloppyPreferenceList:
    """The sloppy-quorum answer: primaries that are up, then fallbacks for those that are down."""

    primaries: tuple[str, ...]
    fallbacks: tuple[Fallback, ...]

    @property
    def nodes(self) -> tuple[str, ...]:
        """Every node to send to: the up primaries, then the fallbacks, in preference order."""
        return self.primaries + tuple(f.node for f in self.fallbacks)


def _check_node_name(node: object) -> str:
    if not isinstance(node, str):
        raise TypeError(f"node name must be str, not {type(node).__name__}")
    try:
        size = len(node.encode("utf-8"))
    except UnicodeEncodeError:
        size = 0  # lone surrogates: not UTF-8, so not storable
    if not 1 <= size <= MAX_NODE_NAME_BYTES:
        raise InvalidRing(f"node name must be 1..{MAX_NODE_NAME_BYTES} UTF-8 bytes: {node!r}")
    return node


class Ring:
    """An immutable, versioned assignment of `ring_size` partitions to member nodes.

    Build one with `Ring.new()` and transitions (`join`, `leave`, `remove`); read one back
    with `Ring.from_bytes()`. Constructing one directly validates the fair-share invariant.
    """

    __slots__ = ("_counts", "_members", "_owners", "_ring_size", "_target_n", "_version")

    def __init__(
        self,
        *,
        ring_size: int,
        version: int,
        members: Iterable[str],
        owners: Iterable[str],
        target_n: int = DEFAULT_TARGET_N,
    ) -> None:
        self._ring_size = ring_size
        self._version = version
        self._members = tuple(members)
        self._owners = tuple(owners)
        self._target_n = target_n
        self._counts: dict[str, int] = {}
        self._validate()

    # -- construction -------------------------------------------------------------------

    @classmethod
    def new(cls, ring_size: int = DEFAULT_RING_SIZE, *, target_n: int = DEFAULT_TARGET_N) -> Ring:
        """An empty ring (no members, version 0)."""
        return cls(ring_size=ring_size, version=0, members=(), owners=(), target_n=target_n)

    def _validate(self) -> None:
        q = self._ring_size
        if type(q) is not int or not 1 <= q <= MAX_RING_SIZE or q & (q - 1):
            raise InvalidRing(f"ring_size must be a power of two in 1..{MAX_RING_SIZE}: {q!r}")
        if type(self._version) is not int or not 0 <= self._version < 1 << 63:
            raise InvalidRing(f"version must be an int in 0..2**63-1: {self._version!r}")
        if type(self._target_n) is not int or self._target_n < 1:
            raise InvalidRing(f"target_n must be a positive int: {self._target_n!r}")
        for m in self._members:
            _check_node_name(m)
        if len(set(self._members)) != len(self._members):
            raise InvalidRing("members are not distinct")
        if len(self._members) > q:
            raise InvalidRing(f"{len(self._members)} members for {q} partitions")
        if not self._members:
            if self._owners:
                raise InvalidRing("an empty ring owns no partitions")
            return
        if len(self._owners) != q:
            raise InvalidRing(f"{len(self._owners)} owners for {q} partitions")
        counts = dict.fromkeys(self._members, 0)
        for p, owner in enumerate(self._owners):
            if owner not in counts:
                raise InvalidRing(f"partition {p} is owned by non-member {owner!r}")
            counts[owner] += 1
        low, high = q // len(counts), -(-q // len(counts))
        unfair = {m: c for m, c in counts.items() if not low <= c <= high}
        if unfair:
            raise InvalidRing(f"owners outside the fair share {low}..{high}: {unfair}")
        self._counts = counts

    # -- reading ------------------------------------------------------------------------

    @property
    def ring_size(self) -> int:
        return self._ring_size

    @property
    def version(self) -> int:
        return self._version

    @property
    def members(self) -> tuple[str, ...]:
        """Member nodes in join order."""
        return self._members

    @property
    def owners(self) -> tuple[str, ...]:
        """`owners[p]` owns partition p (empty tuple for an empty ring)."""
        return self._owners

    def owned_by(self, node: str) -> tuple[int, ...]:
        """The partitions `node` owns, ascending. O(Q)."""
        return tuple(p for p, o in enumerate(self._owners) if o == node)

    def partition_of(self, key: bytes) -> int:
        return partition_of(key, self._ring_size)

    def walk(self, partition: int) -> tuple[str, ...]:
        """Every member once, in the order first met walking clockwise from `partition`."""
        if not 0 <= partition < self._ring_size:
            raise IndexError(f"partition {partition} outside 0..{self._ring_size - 1}")
        seen: dict[str, None] = {}
        n_members, owners, q = len(self._members), self._owners, self._ring_size
        for step in range(q if owners else 0):
            seen.setdefault(owners[(partition + step) % q])
            if len(seen) == n_members:
                break
        return tuple(seen)

    @overload
    def preference_list(self, key: bytes, n: int) -> tuple[str, ...]: ...

    @overload
    def preference_list(
        self, key: bytes, n: int, *, down: Iterable[str]
    ) -> SloppyPreferenceList: ...

    def preference_list(
        self, key: bytes, n: int, *, down: Iterable[str] | None = None
    ) -> tuple[str, ...] | SloppyPreferenceList:
        """The first `n` distinct nodes clockwise from the key's partition (Dynamo §4.3).

        With `down`, the sloppy-quorum form (Dynamo §4.6): see the module docstring.
        O(Q) worst case, O(n) typical.
        """
        return self.preference_list_for(self.partition_of(key), n, down=down)

    def preference_list_for(
        self, partition: int, n: int, *, down: Iterable[str] | None = None
    ) -> tuple[str, ...] | SloppyPreferenceList:
        """`preference_list` for a partition index rather than a key."""
        if type(n) is not int or n < 1:
            raise ValueError(f"n must be a positive int: {n!r}")
        order = self.walk(partition)
        if down is None:
            return order[:n]
        down_set = frozenset(down)
        primaries, rest = order[:n], [m for m in order[n:] if m not in down_set]
        fallbacks = [Fallback(rest.pop(0), p) for p in primaries if p in down_set and rest]
        return SloppyPreferenceList(tuple(p for p in primaries if p not in down_set),
                                    tuple(fallbacks))

    def check(self, n_val: int | None = None) -> None:
        """Raise InvalidRing unless every invariant holds. O(Q * n).

        Every partition owned by a member; every member within one partition of its fair
        share; every partition's preference list has `min(n_val, members)` distinct nodes
        (n_val defaults to target_n).
        """
        self._validate()
        n_val = self._target_n if n_val is None else n_val
        want = min(n_val, len(self._members))
        for p in range(self._ring_size if self._members else 0):
            plist = self.preference_list_for(p, n_val)
            assert isinstance(plist, tuple)
            if len(plist) != want or len(set(plist)) != want:
                raise InvalidRing(f"partition {p} has preference list {plist}, want {want}")

    def spread_violations(self, n_val: int | None = None) -> int:
        """How many partitions share an owner with one of the next n_val-1 partitions. O(Q*n)."""
        n_val = self._target_n if n_val is None else n_val
        o, q = self._owners, self._ring_size
        if len(self._members) < n_val:
            return 0  # no assignment can avoid it; not counted
        return sum(
            1 for p in range(len(o)) if any(o[p] == o[(p + d) % q] for d in range(1, n_val))
        )

    # -- transitions --------------------------------------------------------------------

    def join(self, node: str) -> Ring:
        """A new ring with `node` added: it claims floor(Q/(n+1)) partitions; nothing else moves.

        O(Q * Q/(n+1)) (about a second for the second node of a 1024-partition ring).

        Requires: node is not a member; members + 1 <= ring_size.
        """
        _check_node_name(node)
        if node in self._counts:
            raise InvalidRing(f"{node!r} is already a member")
        n, q = len(self._members), self._ring_size
        if n + 1 > q:
            raise InvalidRing(f"a ring of {q} partitions holds at most {q} members")
        if n == 0:
            return self._next((node,), (node,) * q)
        owners, counts = list(self._owners), dict(self._counts)
        take = q // (n + 1)
        final_low = (q - take) // n  # old members end at final_low or final_low + 1 ...
        high_slots = (q - take) - n * final_low  # ... and this many of them at final_low + 1
        # score[p]: (same-owner pairs p would make for the newcomer, minus the pairs taking
        # p would undo for its owner, p). A pick changes only the scores within the window.
        def score(p: int) -> tuple[int, int, int]:
            return (self._conflicts(owners, p, node), -self._conflicts(owners, p, owners[p]), p)

        scores = [score(p) for p in range(q)]
        for _ in range(take):
            above = sum(1 for c in counts.values() if c > final_low)
            donors = {m for m, c in counts.items()
                      if c > final_low + 1 or (c == final_low + 1 and above > high_slots)}
            best = min(scores[p] for p in range(q) if owners[p] in donors)[2]
            counts[owners[best]] -= 1
            owners[best] = node
            for d in range(1 - self._target_n, self._target_n):
                scores[(best + d) % q] = score((best + d) % q)
        return self._next((*self._members, node), owners)

    def leave(self, node: str) -> Ring:
        """A new ring without `node`: only its partitions move, to nodes below the new fair share.

        The membership layer streams them to their new owners before `node` exits.
        Requires: node is a member.
        """
        if node not in self._counts:
            raise InvalidRing(f"{node!r} is not a member")
        members = tuple(m for m in self._members if m != node)
        if not members:
            return self._next((), ())
        owners, q = list(self._owners), self._ring_size
        counts = {m: self._counts[m] for m in members}
        final_low = q // len(members)
        high_slots = q - len(members) * final_low
        orphans = [p for p in range(q) if owners[p] == node]
        # cost[p][m]: same-owner pairs giving orphan p to m would make; a move changes only
        # the costs within the window around it.
        cost = {p: {m: self._conflicts(owners, p, m) for m in members} for p in orphans}
        while orphans:
            above = sum(1 for c in counts.values() if c > final_low)
            receivers = [m for m in members if counts[m] < final_low
                         or (counts[m] == final_low and above < high_slots)]
            options = {p: sorted((cost[p][m], m) for m in receivers) for p in orphans}
            _, _, p, m = min((o[0][0], sum(c == o[0][0] for c, _ in o), p, o[0][1])
                             for p, o in options.items())
            owners[p] = m
            counts[m] += 1
            orphans.remove(p)
            for d in range(1 - self._target_n, self._target_n):
                near = (p + d) % q
                if near in cost:
                    cost[near] = {m: self._conflicts(owners, near, m) for m in members}
        return self._next(members, owners)

    def remove(self, node: str) -> Ring:
        """The ring after an operator removes a dead `node`: the same transition as `leave`.

        The difference lives in membership: a removed node hands nothing off, so its new
        owners rebuild its partitions from the other replicas (anti-entropy).
        """
        return self.leave(node)

    def _conflicts(self, owners: list[str], p: int, node: str) -> int:
        q, span = self._ring_size, self._target_n
        return sum(
            1 for d in range(1, span)
            for s in (p + d, p - d) if owners[s % q] == node and s % q != p
        )

    def _next(self, members: tuple[str, ...], owners: Iterable[str]) -> Ring:
        return Ring(ring_size=self._ring_size, version=self._version + 1, members=members,
                    owners=owners, target_n=self._target_n)

    # -- serialisation ------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The msgpack form described in the module docstring (target_n is not stored)."""
        index = {m: i for i, m in enumerate(self._members)}
        return msgpack.packb([FORMAT_TAG, FORMAT_VERSION, self._version, self._ring_size,
                              list(self._members), [index[o] for o in self._owners]])

    @classmethod
    def from_bytes(cls, data: bytes, *, target_n: int = DEFAULT_TARGET_N) -> Ring:
        """Read a ring written by `to_bytes`; raise InvalidRing on any damage. O(Q)."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"ring bytes must be bytes, not {type(data).__name__}")
        if len(data) > MAX_SERIALISED_BYTES:
            raise InvalidRing(f"{len(data)} bytes is over the {MAX_SERIALISED_BYTES} byte limit")
        try:
            obj = msgpack.unpackb(
                bytes(data), raw=False, use_list=True, strict_map_key=True,
                max_str_len=MAX_NODE_NAME_BYTES + 16, max_bin_len=0, max_ext_len=0,
                max_map_len=0, max_array_len=MAX_RING_SIZE,
            )
        except (ValueError, msgpack.UnpackException) as exc:  # FormatError, ExtraData, ...
            raise InvalidRing(f"not a msgpack ring: {exc}") from None
        if not isinstance(obj, list) or len(obj) != 6:
            raise InvalidRing("expected a 6-element array")
        tag, fmt, version, ring_size, members, owner_ix = obj
        if tag != FORMAT_TAG or type(fmt) is not int:
            raise InvalidRing(f"bad format tag {tag!r}/{fmt!r}")
        if fmt != FORMAT_VERSION:
            raise InvalidRing(f"unknown format version {fmt} (this code reads {FORMAT_VERSION})")
        if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
            raise InvalidRing("members must be an array of strings")
        if not isinstance(owner_ix, list) or not all(
            type(i) is int and 0 <= i < len(members) for i in owner_ix
        ):
            raise InvalidRing("owners must be an array of member indices")
        return cls(ring_size=ring_size, version=version, members=members,
                   owners=[members[i] for i in owner_ix], target_n=target_n)

    # -- value semantics ----------------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Ring):
            return NotImplemented
        return (self._ring_size, self._version, self._members, self._owners) == (
            other._ring_size, other._version, other._members, other._owners)

    def __hash__(self) -> int:
        return hash((self._ring_size, self._version, self._members, self._owners))

    def __repr__(self) -> str:
        shares = ", ".join(f"{m}={self._counts[m]}" for m in self._members)
        return f"Ring(v{self._version}, {self._ring_size} partitions, {shares or 'empty'})"
