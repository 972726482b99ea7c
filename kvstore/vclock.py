"""Dotted version vectors: the causality of one key's versions (siblings) across replicas.

Theory of operation (Preguiça, Baquero, Almeida, Fonte, Gonçalves, "Dotted Version Vectors:
Logical Clocks for Optimistic Replication", 2010; Almeida et al., "Scalable and Accurate
Causality Tracking for Eventually Consistent Stores", 2014, whose DVVSet Riak 2.0 uses;
Dynamo §4.4 for the problem)

- A *dot* `(node, counter)` names one write: the `counter`-th write that `node` coordinated
  for this key. A *version vector* (VV) `{node: n}` stands for the set of dots
  `{(node, 1..n)}`: a causal history closed downwards per node.
- A key's state is a `SiblingSet`: `clock`, a VV of every write this state has seen (kept
  as a sibling or overwritten), and `siblings`, the versions nobody has overwritten yet,
  each carrying its own dot. Together they are the paper's DVVSet in an unpacked form: the
  DVVSet entry `(i, n, [v_n, ..., v_n-k+1])` is `clock[i] = n` plus the k siblings with
  dots `(i, n-k+1..n)`. (Riak's per-coordinator vector clocks instead give the new version
  the coordinator's counter merged with the context, so two clients writing through the
  same node with the same stale context look ordered, or their siblings pile up as
  "sibling explosion"; a dot per sibling makes each write distinct.)
- `update(state, context, node, value)` (the coordinator's write; paper: "update" with the
  client's context): the new version gets dot `(node, max(clock[node], context[node]) + 1)`;
  every sibling whose dot the context covers is dropped (the client saw it and replaced
  it); siblings the context does not cover stay, because they are concurrent with the
  write. So the siblings are exactly the writes no later write's context saw, and their
  number never exceeds the number of truly concurrent writes.
- `sync(a, b)` (replica merge; paper: "sync"): a sibling of one side survives unless the
  other side has seen its dot (the dot is in its clock) and dropped it; the clocks join.
  It is commutative, associative and idempotent, so replicas converge in any order.
- `context(state)` is the paper's "join": the VV of everything the client has read,
  handed out as opaque bytes and given back with the client's next write.
- `compare(a, b)` orders causal histories (the clocks): BEFORE, AFTER, EQUAL, CONCURRENT.
- Requires, for the VV clock to be exact: (1) each dot's node is a replica that keeps
  this key's state durably and coordinates a write only on its own current state; (2) the
  coordinator ships its whole resulting state (not just the new version) to the other
  replicas, which `sync` it in. Then any state holding dot (i, n) also holds or has
  overwritten (i, 1..n-1), and a VV describes its history without loss (the DVVSet rule).
- Contexts are trusted, not authenticated: a forged context that claims dots nobody
  issued makes the write (and any state it reaches) drop versions with those dots. Sign
  contexts at the HTTP edge if clients are not trusted.
- Deletes are tombstones: siblings with `deleted=True` written by `update` like any value.
  Reaping a tombstone (dropping the whole key) is for anti-entropy once every replica has
  it; until then it takes part in causality like a value.
- Logical timestamps: each write carries an int `timestamp` the caller supplies (the
  coordinator's hybrid logical clock or wall-clock milliseconds; this module never reads
  a clock). `stamps[node]` is the largest timestamp of a write by `node` the state knows.
  Pruning and last-write-wins use them; causality never does.

Pruning (the trade-off, as Riak documents its vclock pruning): a clock grows by one entry
per node that ever coordinated a write for the key. `prune(state, max_entries, keep=me)`
drops entries past `max_entries`, oldest `stamps` first (ties: node name), but never an
entry that still has siblings and never `keep` (the pruning node's own entry, so it never
issues a dot twice). Forgetting entry (j, n) forgets that writes (j, 1..n) were seen: if a
stale replica still holds one of them, a later `sync` keeps it as a sibling, so an
overwritten (or deleted) value can reappear as a false sibling the client must resolve.
Pruning never loses a write; it can only add siblings. Keep `max_entries` well above the
number of nodes that coordinate writes for one key (the preference list plus fallbacks).

Sibling limits: `update` logs a warning when the result holds more than `limits.warn`
siblings and raises `SiblingLimitExceeded` (changing nothing) past `limits.max`, so a
client that never resolves cannot grow one key without bound. Riak's defaults (25, 100)
are ours. `sync` never refuses: replicas must converge on whatever was accepted.

Last-write-wins (opt-in per bucket, lossy): `lww_update` and `lww_sync` keep only the
sibling with the largest (timestamp, node, counter). Concurrent writes are silently
dropped, a write from a node whose clock runs behind can lose to an older one, and a
delete can lose to a concurrent put (or win over it). Use it only when that is acceptable.

Encodings (on disk and on the wire: do not change the meaning of version 1):
- `context(state)`: URL-safe base64 without padding of `b"\\x01" + msgpack([[node, n], ...])`,
  entries sorted by node, so the bytes are ASCII, safe in an HTTP header, and canonical.
- `encode(state)`: `b"\\x01" + msgpack([entries, siblings])` with entries
  `[[node, n, stamp], ...]` sorted by node and siblings `[[entry index, counter, flags,
  timestamp, value], ...]` sorted by dot; flags bit 0 = tombstone.
"""

from __future__ import annotations

import base64
import binascii
import enum
import itertools
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import msgpack

from kvstore.errors import InvalidContext, InvalidSiblingSet, SiblingLimitExceeded

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1  # first byte of contexts and encoded sibling sets; on disk: do not change
MAX_NODE_NAME_BYTES = 255
MAX_COUNTER = (1 << 63) - 1
MAX_CONTEXT_BYTES = 64 << 10  # a context names few nodes; anything larger is hostile
MAX_ENTRIES = 4096  # clock entries a decoder accepts
MAX_ENCODED_BYTES = 64 << 20  # bounds decoding work for one key
DEFAULT_MAX_CLOCK_ENTRIES = 50  # prune past this (Riak's small_vclock/big_vclock default)
TOMBSTONE = 1  # flags bit in the encoding


class Order(enum.Enum):
    BEFORE = "before"  # a happened before b: b's history strictly contains a's
    AFTER = "after"
    EQUAL = "equal"
    CONCURRENT = "concurrent"


@dataclass(frozen=True, slots=True, order=True)
class Dot:
    """One write: the `counter`-th write `node` coordinated for the key."""

    node: str
    counter: int


@dataclass(frozen=True, slots=True)
class VersionVector:
    """`{node: n}`: the dots (node, 1..n). Invariant: entries sorted by node, every n >= 1."""

    entries: tuple[tuple[str, int], ...] = ()

    @classmethod
    def of(cls, mapping: Mapping[str, int]) -> VersionVector:
        return cls(tuple(sorted((k, v) for k, v in mapping.items() if v > 0)))

    def get(self, node: str) -> int:
        for k, v in self.entries:
            if k == node:
                return v
        return 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.entries)

    def covers(self, dot: Dot) -> bool:
        return dot.counter <= self.get(dot.node)

    def join(self, other: VersionVector) -> VersionVector:
        merged = self.as_dict()
        for k, v in other.entries:
            merged[k] = max(merged.get(k, 0), v)
        return VersionVector.of(merged)

    def descends(self, other: VersionVector) -> bool:
        """True when this history contains `other`'s."""
        mine = self.as_dict()
        return all(mine.get(k, 0) >= v for k, v in other.entries)


@dataclass(frozen=True, slots=True)
class Sibling:
    """One version of the key; `deleted` marks a tombstone (its value is empty)."""

    dot: Dot
    value: bytes
    deleted: bool = False
    timestamp: int = 0


@dataclass(frozen=True, slots=True)
class SiblingSet:
    """A key's state on one replica. Invariants: see `check()`."""

    clock: VersionVector = VersionVector()
    siblings: tuple[Sibling, ...] = ()
    stamps: VersionVector = VersionVector()  # node -> largest write timestamp known (>= 0)

    def check(self) -> None:
        """Raise InvalidSiblingSet unless the invariants hold. O(entries + siblings)."""
        nodes = [k for k, _ in self.clock.entries]
        if nodes != sorted(set(nodes)) or any(v < 1 for _, v in self.clock.entries):
            raise InvalidSiblingSet("clock entries must be sorted, distinct, positive")
        if any(k not in nodes for k, _ in self.stamps.entries):
            raise InvalidSiblingSet("a timestamp for a node the clock does not name")
        dots = [s.dot for s in self.siblings]
        if dots != sorted(set(dots)):
            raise InvalidSiblingSet("sibling dots must be sorted and distinct")
        for s in self.siblings:
            if not self.clock.covers(s.dot) or s.dot.counter < 1:
                raise InvalidSiblingSet(f"sibling {s.dot} is outside the clock")
            if s.deleted and s.value:
                raise InvalidSiblingSet(f"tombstone {s.dot} carries a value")

    @property
    def values(self) -> list[bytes]:
        """The live (non-tombstone) values, in dot order."""
        return [s.value for s in self.siblings if not s.deleted]

    @property
    def is_deleted(self) -> bool:
        """True when every sibling is a tombstone (and there is at least one)."""
        return bool(self.siblings) and all(s.deleted for s in self.siblings)


@dataclass(frozen=True, slots=True)
class SiblingLimits:
    """Per-key sibling cap: warn past `warn`, refuse past `max` (Riak's 25 and 100)."""

    warn: int = 25
    max: int = 100

    def verdict(self, count: int) -> bool:
        """True past the soft limit (warn); raise SiblingLimitExceeded past the hard one."""
        if count > self.max:
            raise SiblingLimitExceeded(count, self.max)
        return count > self.warn


DEFAULT_LIMITS = SiblingLimits()


def _stamps_join(a: VersionVector, b: VersionVector) -> VersionVector:
    return a.join(b)  # max per node: the same lattice as a clock


def update(
    current: SiblingSet,
    context: VersionVector,
    node: str,
    value: bytes,
    *,
    timestamp: int,
    deleted: bool = False,
    limits: SiblingLimits = DEFAULT_LIMITS,
) -> SiblingSet:
    """The state after `node` coordinates a write of `value` with the client's `context`.

    Drops every sibling `context` covers, keeps the concurrent ones, adds the new version
    with a fresh dot. Raises SiblingLimitExceeded (nothing changes) past `limits.max`.
    Requires: `current` is `node`'s own durable state for the key. O(entries + siblings).
    """
    if deleted and value:
        raise ValueError("a tombstone carries no value")
    if type(timestamp) is not int or not 0 <= timestamp <= MAX_COUNTER:
        raise ValueError(f"timestamp must be an int in 0..2**63-1: {timestamp!r}")
    dot = Dot(node, max(current.clock.get(node), context.get(node)) + 1)
    if dot.counter > MAX_COUNTER:  # only a forged context gets here; the key stays readable
        raise InvalidContext(f"the context's counter for {node!r} leaves no room for a write")
    new = Sibling(dot, bytes(value), deleted, timestamp)
    kept = [s for s in current.siblings if not context.covers(s.dot)]
    siblings = tuple(sorted([*kept, new], key=lambda s: s.dot))
    if limits.verdict(len(siblings)):
        logger.warning("key holds %d siblings (soft limit %d); clients should resolve them",
                       len(siblings), limits.warn)
    clock = current.clock.join(context).join(VersionVector(((node, dot.counter),)))
    stamps = _stamps_join(current.stamps, VersionVector.of({node: timestamp}))
    return SiblingSet(clock, siblings, stamps)


def delete(
    current: SiblingSet, context: VersionVector, node: str, *, timestamp: int,
    limits: SiblingLimits = DEFAULT_LIMITS,
) -> SiblingSet:
    """A write of a tombstone: `update` with `deleted=True` and an empty value."""
    return update(current, context, node, b"", timestamp=timestamp, deleted=True, limits=limits)


def sync(a: SiblingSet, b: SiblingSet) -> SiblingSet:
    """Replica-side merge: keep a sibling unless the other side saw its dot and dropped it.

    Commutative, associative, idempotent. O((siblings) log(siblings) + entries).
    """
    b_dots = {s.dot for s in b.siblings}
    a_dots = {s.dot for s in a.siblings}
    kept = {s.dot: s for s in b.siblings if s.dot in a_dots or not a.clock.covers(s.dot)}
    for s in a.siblings:  # the same dot always names the same write, so either copy will do
        if s.dot in b_dots or not b.clock.covers(s.dot):
            kept[s.dot] = s
    siblings = tuple(kept[d] for d in sorted(kept))
    return SiblingSet(a.clock.join(b.clock), siblings, _stamps_join(a.stamps, b.stamps))


def compare(a: VersionVector | SiblingSet, b: VersionVector | SiblingSet) -> Order:
    """How history `a` relates to history `b`. O(entries)."""
    va = a.clock if isinstance(a, SiblingSet) else a
    vb = b.clock if isinstance(b, SiblingSet) else b
    ab, ba = va.descends(vb), vb.descends(va)
    if ab and ba:
        return Order.EQUAL
    if ab:
        return Order.AFTER
    return Order.BEFORE if ba else Order.CONCURRENT


def prune(state: SiblingSet, max_entries: int = DEFAULT_MAX_CLOCK_ENTRIES, *,
          keep: str | None = None) -> SiblingSet:
    """Drop the oldest clock entries without siblings until at most `max_entries` remain.

    Never drops `keep` or an entry that has siblings (see the module docstring for the
    trade-off). May leave more than `max_entries` when nothing more can go. O(e log e).
    """
    excess = len(state.clock.entries) - max_entries
    if excess <= 0:
        return state
    busy = {s.dot.node for s in state.siblings} | {keep}
    candidates = sorted((state.stamps.get(k), k) for k, _ in state.clock.entries if k not in busy)
    gone = {k for _, k in candidates[:excess]}
    clock = VersionVector(tuple(e for e in state.clock.entries if e[0] not in gone))
    stamps = VersionVector(tuple(e for e in state.stamps.entries if e[0] not in gone))
    return SiblingSet(clock, state.siblings, stamps)


# -- last-write-wins (opt-in, lossy) ---------------------------------------------------------


def lww_winner(state: SiblingSet) -> Sibling | None:
    """The sibling with the largest (timestamp, node, counter), or None when there is none."""
    return max(state.siblings, key=lambda s: (s.timestamp, s.dot), default=None)


def _lww_collapse(state: SiblingSet) -> SiblingSet:
    winner = lww_winner(state)
    return SiblingSet(state.clock, (winner,) if winner else (), state.stamps)


def lww_update(current: SiblingSet, node: str, value: bytes, *, timestamp: int,
               deleted: bool = False) -> SiblingSet:
    """LWW write: the new version competes with the current one on timestamp; one survives."""
    new = update(current, VersionVector(), node, value, timestamp=timestamp, deleted=deleted,
                 limits=SiblingLimits(warn=MAX_ENTRIES, max=MAX_COUNTER))
    return _lww_collapse(new)


def lww_sync(a: SiblingSet, b: SiblingSet) -> SiblingSet:
    """LWW replica merge: `sync`, then keep only the winner."""
    return _lww_collapse(sync(a, b))


# -- encodings ------------------------------------------------------------------------------


def _node(obj: object, err: type[InvalidContext | InvalidSiblingSet]) -> str:
    if not isinstance(obj, str) or not 1 <= len(obj.encode("utf-8")) <= MAX_NODE_NAME_BYTES:
        raise err(f"node name must be 1..{MAX_NODE_NAME_BYTES} UTF-8 bytes: {obj!r:.80}")
    return obj


def _uint(obj: object, low: int, err: type[InvalidContext | InvalidSiblingSet], what: str) -> int:
    if type(obj) is not int or not low <= obj <= MAX_COUNTER:
        raise err(f"{what} must be an int in {low}..2**63-1: {obj!r:.80}")
    return obj


def _unpack(data: bytes, err: type[InvalidContext | InvalidSiblingSet]) -> Any:
    if data[:1] != bytes([FORMAT_VERSION]):
        raise err(f"unknown format version byte {data[:1]!r} (this code reads {FORMAT_VERSION})")
    try:
        return msgpack.unpackb(
            data[1:], raw=False, use_list=True, strict_map_key=True, max_map_len=0,
            max_ext_len=0, max_str_len=MAX_NODE_NAME_BYTES + 1, max_array_len=1 << 20,
        )
    except (ValueError, msgpack.UnpackException) as exc:
        raise err(f"not msgpack: {exc}") from None


def _entries(obj: object, err: type[InvalidContext | InvalidSiblingSet], width: int) -> list:
    if not isinstance(obj, list) or len(obj) > MAX_ENTRIES:
        raise err(f"entries must be an array of at most {MAX_ENTRIES}")
    rows = []
    for row in obj:
        if not isinstance(row, list) or len(row) != width:
            raise err(f"an entry must be an array of {width}")
        rows.append([_node(row[0], err), *(_uint(x, 1 if i == 0 else 0, err, "counter")
                                         for i, x in enumerate(row[1:]))])
    nodes = [r[0] for r in rows]
    if any(x >= y for x, y in itertools.pairwise(nodes)):
        raise err("entries must be sorted by node with no repeats")
    return rows


def context(state: SiblingSet | VersionVector) -> bytes:
    """The opaque context a client sends back with its next write (see Encodings)."""
    clock = state.clock if isinstance(state, SiblingSet) else state
    raw = bytes([FORMAT_VERSION]) + msgpack.packb([list(e) for e in clock.entries])
    return base64.urlsafe_b64encode(raw).rstrip(b"=")


def decode_context(data: bytes | str) -> VersionVector:
    """The VV a `context()` encodes; InvalidContext for anything else. O(len(data))."""
    if isinstance(data, str):
        try:
            data = data.encode("ascii")
        except UnicodeEncodeError:
            raise InvalidContext("not ASCII") from None
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"context must be bytes or str, not {type(data).__name__}")
    data = bytes(data)
    if not data or len(data) > MAX_CONTEXT_BYTES:
        raise InvalidContext(f"length {len(data)} outside 1..{MAX_CONTEXT_BYTES}")
    if data.rstrip(b"=") != data or len(data) % 4 == 1:
        raise InvalidContext("not unpadded URL-safe base64")
    try:
        raw = base64.b64decode(data + b"=" * (-len(data) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise InvalidContext("not unpadded URL-safe base64") from None
    if base64.urlsafe_b64encode(raw).rstrip(b"=") != data:
        raise InvalidContext("not the canonical encoding")  # stray bits in the last char
    rows = _entries(_unpack(raw, InvalidContext), InvalidContext, 2)
    return VersionVector(tuple((n, c) for n, c in rows))


def encode(state: SiblingSet) -> bytes:
    """The storage form of a whole sibling set, values included (see Encodings)."""
    stamps = state.stamps.as_dict()
    entries = [[k, v, stamps.get(k, 0)] for k, v in state.clock.entries]
    index = {k: i for i, (k, _) in enumerate(state.clock.entries)}
    sibs = [[index[s.dot.node], s.dot.counter, TOMBSTONE if s.deleted else 0, s.timestamp,
             s.value] for s in state.siblings]
    return bytes([FORMAT_VERSION]) + msgpack.packb([entries, sibs], use_bin_type=True)


def decode(data: bytes) -> SiblingSet:
    """Read `encode`'s bytes back; InvalidSiblingSet on any damage. O(len(data))."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"encoded sibling set must be bytes, not {type(data).__name__}")
    data = bytes(data)
    if len(data) > MAX_ENCODED_BYTES:
        raise InvalidSiblingSet(f"{len(data)} bytes is over the {MAX_ENCODED_BYTES} limit")
    obj = _unpack(data, InvalidSiblingSet)
    if not isinstance(obj, list) or len(obj) != 2 or not isinstance(obj[1], list):
        raise InvalidSiblingSet("expected [entries, siblings]")
    rows = _entries(obj[0], InvalidSiblingSet, 3)
    siblings = []
    for row in obj[1]:
        if not isinstance(row, list) or len(row) != 5 or not isinstance(row[4], bytes):
            raise InvalidSiblingSet("a sibling must be [entry, counter, flags, timestamp, value]")
        ix, counter, flags, ts = (_uint(x, 0, InvalidSiblingSet, "field") for x in row[:4])
        if ix >= len(rows) or counter < 1 or flags & ~TOMBSTONE:
            raise InvalidSiblingSet(f"bad sibling fields {row[:4]!r:.80}")
        siblings.append(Sibling(Dot(rows[ix][0], counter), row[4], bool(flags), ts))
    state = SiblingSet(
        VersionVector(tuple((n, c) for n, c, _ in rows)), tuple(siblings),
        VersionVector(tuple((n, s) for n, _, s in rows if s > 0)),
    )
    state.check()
    return state


def merge_all(states: Iterable[SiblingSet]) -> SiblingSet:
    """`sync` over many states (e.g. the replies of a read quorum)."""
    out = SiblingSet()
    for s in states:
        out = sync(out, s)
    return out
