"""A hash tree over one partition's keys, updated on every write (pure logic, no I/O).

Theory of operation (Dynamo §4.7 "handling permanent failures: replica synchronization";
Riak's hashtree.erl for segments and incremental updates)

- Segments: a partition covers a range of the 64-bit key-hash space (kvstore/ring.py:
  the top log2(ring_size) bits of `key_hash(key)`). The next log2(fanout**depth) bits pick
  the key's **segment**, so segments split the partition's range into equal slices and a
  partition's keys spread evenly over them.
- Leaves: one per segment. A leaf's hash is the sum, modulo 2**128, of the entry hashes
  of its keys, `entry = blake2b(len(key) as u16 | key | value, 16 bytes)`, where `value`
  is the key's stored bytes (vclock.encode is canonical, so equal states give equal
  bytes). A sum can be updated in O(1): `update(key, old, new)` subtracts the old entry
  and adds the new one, without reading the segment's other keys (the issue asks for
  incremental updates, not a rebuild per exchange). An empty segment hashes to 0.
- Inner nodes: `fanout` children each; a node's hash is blake2b of its children's hashes
  concatenated (16 bytes). Updates only mark leaves dirty; reading a node recomputes the
  dirty nodes below it, so many writes between two exchanges cost one recomputation.
  Level 0 is the root; level `depth` holds the leaves.
- Exchange (`Descent`, sans-I/O): compare the roots; ask the other replica for the
  children of each node that differs, level by level, and never for anything under an
  equal node. It ends with the segments that differ: those are exactly the segments
  holding a key whose value differs between the replicas (up to a hash collision), and
  the exchange then compares those segments' keys. Round trips: depth + 1; hashes
  fetched: 1 + fanout * (differing nodes above the leaves).

Trade-offs: additive leaves make updates O(1) and need no per-key memory, but the caller
must pass the exact old value (`Requires:` on update), and a sum is not collision
resistant against someone who controls many keys and values and which replicas miss
them; accidental equality of two different segments has probability about 2**-128.
Memory: 16 bytes per node, `fanout**depth` leaves per partition (16**3 = 4096 leaves,
~70 KiB per partition by default).

Serialised form (for persisting a tree; do not change the meaning of version 1):
    b"RLMT" | version u8 = 1 | fanout u8 | depth u8 | partition_bits u8 | partition u32 |
    leaves: fanout**depth * 16 bytes | blake2b-16 of everything before it
All integers big-endian. from_bytes() validates every field and raises InvalidTree.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable

from antientropy.errors import InvalidTree
from kvstore.ring import key_hash

MAGIC = b"RLMT"  # on disk: do not change
FORMAT_VERSION = 1
HASH_BYTES = 16
_HEADER = struct.Struct(">4sBBBBI")  # magic, version, fanout, depth, partition bits, partition
_MOD = 1 << (8 * HASH_BYTES)
_MASK64 = (1 << 64) - 1
MAX_SEGMENT_BITS = 24  # 16M leaves (256 MiB): anything larger is a mistake or hostile


def entry_hash(key: bytes, value: bytes) -> int:
    """The 128-bit hash of one (key, value) entry, as an int."""
    h = hashlib.blake2b(len(key).to_bytes(2, "big") + key + value, digest_size=HASH_BYTES)
    return int.from_bytes(h.digest(), "big")


def _node_hash(children: bytes) -> bytes:
    return hashlib.blake2b(children, digest_size=HASH_BYTES).digest()


class MerkleTree:
    """The hash tree of partition `partition` of a ring of 2**partition_bits partitions.

    Invariant (`check()`): every inner node is the hash of its children once recomputed;
    `_dirty[level]` holds the nodes of that level whose hash is stale.
    """

    def __init__(self, partition: int = 0, *, partition_bits: int = 8, fanout: int = 16,
                 depth: int = 3) -> None:
        if fanout < 2 or fanout & (fanout - 1) or fanout > 256 or not 1 <= depth <= 255:
            raise InvalidTree("fanout must be a power of two in 2..256 and depth >= 1")
        self.segment_bits = (fanout.bit_length() - 1) * depth
        if self.segment_bits > MAX_SEGMENT_BITS or not 0 <= partition_bits <= 16 \
                or partition_bits + self.segment_bits > 64:
            raise InvalidTree(f"at most 2**{MAX_SEGMENT_BITS} segments, 2**16 partitions")
        if not 0 <= partition < 1 << partition_bits:
            raise InvalidTree(f"partition {partition} outside 0..2**{partition_bits}-1")
        self.partition, self.partition_bits = partition, partition_bits
        self.fanout, self.depth = fanout, depth
        self.segments = fanout ** depth
        self._levels = [bytearray(HASH_BYTES * fanout ** lvl) for lvl in range(depth + 1)]
        self._dirty: list[set[int]] = [set() for _ in range(depth + 1)]
        self._mark_all_dirty()

    def _mark_all_dirty(self) -> None:
        for lvl in range(self.depth):
            self._dirty[lvl] = set(range(self.fanout ** lvl))

    # -- keys ---------------------------------------------------------------------------
    def segment_of(self, key: bytes) -> int:
        """The key's segment. Raises ValueError for a key of another partition."""
        h = key_hash(key)
        if self.partition_bits and h >> (64 - self.partition_bits) != self.partition:
            raise ValueError(f"key {key!r:.60} is not in partition {self.partition}")
        return ((h << self.partition_bits) & _MASK64) >> (64 - self.segment_bits)

    def update(self, key: bytes, old: bytes | None, new: bytes | None) -> None:
        """Record that `key`'s stored value went from `old` to `new` (None: absent).
        Requires: `old` is the value this tree last recorded for `key`. O(1)."""
        if old == new:
            return
        segment = self.segment_of(key)
        delta = (entry_hash(key, new) if new is not None else 0) - \
                (entry_hash(key, old) if old is not None else 0)
        leaves, at = self._levels[self.depth], segment * HASH_BYTES
        leaf = (int.from_bytes(leaves[at:at + HASH_BYTES], "big") + delta) % _MOD
        leaves[at:at + HASH_BYTES] = leaf.to_bytes(HASH_BYTES, "big")
        self._dirty[self.depth - 1].add(segment // self.fanout)

    @classmethod
    def build(cls, items: Iterable[tuple[bytes, bytes]], partition: int = 0,
              **params: int) -> MerkleTree:
        """A tree of the (key, value) pairs `items` (a rebuild after a crash). O(n)."""
        tree = cls(partition, **params)
        for key, value in items:
            tree.update(key, None, value)
        return tree

    # -- hashes -------------------------------------------------------------------------
    def _refresh(self) -> None:
        for lvl in range(self.depth - 1, -1, -1):
            dirty = self._dirty[lvl]
            if not dirty:
                continue
            below, here = self._levels[lvl + 1], self._levels[lvl]
            span = HASH_BYTES * self.fanout
            for i in dirty:
                here[i * HASH_BYTES:(i + 1) * HASH_BYTES] = _node_hash(
                    below[i * span:(i + 1) * span])
                if lvl:
                    self._dirty[lvl - 1].add(i // self.fanout)
            dirty.clear()

    def root(self) -> bytes:
        return self.node(0, 0)

    def node(self, level: int, index: int) -> bytes:
        """The hash of node `index` of `level` (0 = root, depth = leaves)."""
        return self.nodes(level, [index])[0]

    def nodes(self, level: int, indices: list[int]) -> list[bytes]:
        """Hashes of several nodes of one level (what a replica answers in an exchange)."""
        if not 0 <= level <= self.depth:
            raise ValueError(f"level must be in 0..{self.depth}")
        width = self.fanout ** level
        if any(not 0 <= i < width for i in indices):
            raise ValueError(f"node index outside 0..{width - 1} at level {level}")
        self._refresh()
        data = self._levels[level]
        return [bytes(data[i * HASH_BYTES:(i + 1) * HASH_BYTES]) for i in indices]

    def diff(self, other: MerkleTree) -> list[int]:
        """Segments whose contents differ from `other`'s (same shape required)."""
        descent = Descent(self)
        while (ask := descent.request()) is not None:
            descent.feed(other.nodes(*ask))
        return descent.segments

    def check(self) -> None:
        """Assert every inner node equals the hash of its children. O(nodes)."""
        self._refresh()
        for lvl in range(self.depth):
            below, span = self._levels[lvl + 1], HASH_BYTES * self.fanout
            for i in range(self.fanout ** lvl):
                got = self._levels[lvl][i * HASH_BYTES:(i + 1) * HASH_BYTES]
                assert got == _node_hash(below[i * span:(i + 1) * span]), (lvl, i)

    # -- serialised form ----------------------------------------------------------------
    def to_bytes(self) -> bytes:
        body = _HEADER.pack(MAGIC, FORMAT_VERSION, self.fanout, self.depth,
                            self.partition_bits, self.partition) + bytes(self._levels[-1])
        return body + _node_hash(body)

    @classmethod
    def from_bytes(cls, data: bytes) -> MerkleTree:
        """Read `to_bytes()` back; InvalidTree on any damage."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"tree must be bytes, not {type(data).__name__}")
        data = bytes(data)
        if len(data) < _HEADER.size + HASH_BYTES:
            raise InvalidTree("truncated tree")
        magic, version, fanout, depth, pbits, partition = _HEADER.unpack_from(data)
        if magic != MAGIC or version != FORMAT_VERSION:
            raise InvalidTree(f"bad magic or version: {data[:5]!r}")
        tree = cls(partition, partition_bits=pbits, fanout=fanout, depth=depth)
        if len(data) != _HEADER.size + tree.segments * HASH_BYTES + HASH_BYTES:
            raise InvalidTree("length does not match the tree's shape")
        if _node_hash(data[:-HASH_BYTES]) != data[-HASH_BYTES:]:
            raise InvalidTree("checksum mismatch")
        tree._levels[-1][:] = data[_HEADER.size:-HASH_BYTES]
        return tree


class Descent:
    """The comparing side of an exchange, sans-I/O: `request()` names the other replica's
    nodes it needs next as (level, indices), `feed()` takes their hashes, in order;
    when `request()` answers None, `segments` holds the differing segments.

    The other side may send hashes cut to their first `width` bytes (an exchange sends 8
    to halve its bytes; two different nodes then look equal with probability 2**-64);
    they are compared with the same prefix of ours."""

    def __init__(self, tree: MerkleTree) -> None:
        self.tree = tree
        self.level = 0
        self._ask: list[int] | None = [0]
        self.segments: list[int] = []
        self.fetched = 0  # node hashes asked for (the exchange's cost)

    def request(self) -> tuple[int, list[int]] | None:
        return None if self._ask is None else (self.level, list(self._ask))

    def feed(self, remote: list[bytes]) -> None:
        if self._ask is None or len(remote) != len(self._ask):
            raise ValueError("feed() needs one hash per requested node")
        self.fetched += len(remote)
        local = self.tree.nodes(self.level, self._ask)
        differ = [i for i, a, b in zip(self._ask, local, remote, strict=True)
                  if a[:len(b)] != b or not b]
        if self.level == self.tree.depth:
            self.segments = differ
            self._ask = None
        elif differ:
            f = self.tree.fanout
            self._ask = [i * f + c for i in differ for c in range(f)]
            self.level += 1
        else:
            self._ask = None


__all__ = ["Descent", "InvalidTree", "MerkleTree", "entry_hash"]
