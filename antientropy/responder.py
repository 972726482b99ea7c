"""The answering side of an exchange: this node's trees, segment keys and merges.

Each method takes a request body (antientropy/codec.py) and answers a reply body, or
raises InvalidMessage (answered 400) before anything changes. A partition this node does
not replicate (by its own ring view, `holds`), or whose tree is not ready, is answered
nil: the initiator skips it this time. Merges go through ReplicaStore.merge_many, the
reconcile path read repair uses (vclock.sync: siblings kept, tombstones respected), and
only for keys of partitions this node replicates.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from antientropy import codec
from antientropy.codec import as_int, as_items, as_list, as_listed
from antientropy.errors import InvalidMessage
from antientropy.reconcile import reconcile
from antientropy.trees import Trees
from kvstore.replica import ReplicaStore
from kvstore.ring import partition_of

logger = logging.getLogger(__name__)

READ_BATCH = 1024  # keys read from the store in one worker-thread hop
MAX_GAP = 8  # partitions not wanted that one scan may cross rather than start another


async def segment_rows(replica: ReplicaStore, trees: Trees,
                       wanted: dict[int, set[int] | None]) -> tuple[dict[int, dict], int]:
    """partition -> {key: stored bytes} of the wanted segments of each wanted partition
    (None: all of it); and how many keys were read. Keys of indexed partitions come from
    the key index (trees.index) and are read one by one; the others from one raw scan
    per run of nearby partitions."""
    rows: dict[int, dict[bytes, bytes]] = {p: {} for p in wanted}
    keys = [(p, k) for p, segments in wanted.items()
            if segments is not None and trees.index.has(p)
            for k in trees.index.keys_in(p, segments)]
    for i in range(0, len(keys), READ_BATCH):
        chunk = keys[i:i + READ_BATCH]
        raws = await replica.get_many_raw([k for _, k in chunk])
        for (p, key), raw in zip(chunk, raws, strict=True):
            if raw is not None:  # None: deleted meanwhile
                rows[p][key] = raw
    wanted = {p: s for p, s in wanted.items() if s is None or not trees.index.has(p)}
    scanned = len(keys)
    order = sorted(wanted)
    runs: list[list[int]] = []
    for p in order:
        if runs and p - runs[-1][1] <= MAX_GAP:
            runs[-1][1] = p
        else:
            runs.append([p, p])
    for first, last in runs:
        async for key, raw in replica.scan_partition_raw(first, last):
            scanned += 1
            p, segment = trees.locate(key)
            if p in wanted and ((segments := wanted[p]) is None or segment in segments):
                rows[p][key] = raw
    return rows, scanned


class Responder:
    """Answers `nodes`, `keys` and `merge` for the trees and store of this node."""

    def __init__(self, trees: Trees, replica: ReplicaStore,
                 holds: Callable[[int], bool]) -> None:
        self.trees, self.replica, self.holds = trees, replica, holds
        self.counts = {"nodes": 0, "keys": 0, "merge": 0, "merged_keys": 0, "given_keys": 0,
                       "damaged": 0}

    async def handle(self, op: str, body: bytes) -> bytes:
        msg = codec.unpack(op, body)
        self.counts[op] += 1
        if op == "nodes":
            return codec.pack({"items": self._nodes(msg)})
        if op == "keys":
            return codec.pack({"items": await self._keys(as_list(msg["items"], "items"))})
        items = as_items(msg["items"])
        for key, _ in items:
            if not self.holds(partition_of(key, self.trees.ring_size)):
                raise InvalidMessage(f"this node does not replicate key {key!r:.60}")
        await self.replica.merge_many(items)
        self.counts["merged_keys"] += len(items)
        return codec.pack({"merged": len(items)})

    def _partition(self, obj: object) -> int:
        return as_int(obj, "partition", 0, self.trees.ring_size - 1)

    def _nodes(self, msg: dict) -> list:
        t = self.trees
        shape = (msg["ring_size"], msg["fanout"], msg["depth"])
        if shape != (t.ring_size, t.fanout, t.depth):
            raise InvalidMessage(f"tree shape {shape!r:.60} differs from this node's "
                                 f"{(t.ring_size, t.fanout, t.depth)}")
        width = as_int(msg["width"], "width", 1, 16)
        out = []
        for item in as_list(msg["items"], "items"):
            p, level, parents = as_list(item, "item", 3)
            p = self._partition(p)
            level = as_int(level, "level", 0, t.depth)
            parents = as_list(parents, "parents")
            if level == 0:
                if parents:
                    raise InvalidMessage("level 0 (the root) takes no parents")
                indices = [0]
            else:
                top = t.fanout ** (level - 1) - 1
                indices = [q * t.fanout + c for q in parents for c in range(t.fanout)
                           if as_int(q, "parent", 0, top) >= 0]
            tree = t.tree(p) if self.holds(p) else None
            out.append(None if tree is None else
                       b"".join(h[:width] for h in tree.nodes(level, indices)))
        return out

    async def _keys(self, items: list) -> list:
        asked: list[tuple[int, set[int] | None, list]] = []
        for item in items:
            p, segments, listing = as_list(item, "item", 3)
            if segments is not None:
                segments = {as_int(s, "segment", 0, self.trees.segments - 1)
                            for s in as_list(segments, "segments")}
            asked.append((self._partition(p), segments,
                          [as_listed(x) for x in as_list(listing, "listing")]))
        if len({p for p, _, _ in asked}) != len(asked):
            raise InvalidMessage("a partition appears twice in one keys request")
        held = {p: segments for p, segments, _ in asked if self.holds(p)}
        rows, _ = await segment_rows(self.replica, self.trees, held)
        out: list = []
        for p, _, theirs in asked:
            if p not in held:
                out.append(None)
                continue
            verdict = reconcile(theirs, rows[p])
            self.counts["given_keys"] += len(verdict.give)
            self.counts["damaged"] += verdict.damaged
            out.append([[[k, raw] for k, raw in verdict.give], verdict.want])
        return out


__all__ = ["Responder", "segment_rows"]
