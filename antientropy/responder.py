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


async def segment_rows(replica: ReplicaStore, trees: Trees, partition: int,
                       segments: set[int] | None) -> tuple[dict[bytes, bytes], int]:
    """This node's (key -> stored bytes) of `segments` of a partition (None: all of it),
    from one raw scan; and how many keys the scan read."""
    rows: dict[bytes, bytes] = {}
    scanned = 0
    async for key, raw in replica.scan_partition_raw(partition):
        scanned += 1
        if segments is None or trees.segment_of(key) in segments:
            rows[key] = raw
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
            return codec.pack({"items": [await self._keys(item)
                                         for item in as_list(msg["items"], "items")]})
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
            p, level, indices = as_list(item, "item", 3)
            p = self._partition(p)
            level = as_int(level, "level", 0, t.depth)
            indices = [as_int(i, "index", 0, t.fanout ** level - 1)
                       for i in as_list(indices, "indices")]
            tree = t.tree(p) if self.holds(p) else None
            out.append(None if tree is None else [h[:width] for h in tree.nodes(level, indices)])
        return out

    async def _keys(self, item: object) -> list | None:
        p, segments, listing = as_list(item, "item", 3)
        p = self._partition(p)
        if segments is not None:
            segments = {as_int(s, "segment", 0, self.trees.segments - 1)
                        for s in as_list(segments, "segments")}
        theirs = [as_listed(x) for x in as_list(listing, "listing")]
        if not self.holds(p):
            return None
        rows, _ = await segment_rows(self.replica, self.trees, p, segments)
        verdict = reconcile(theirs, rows)
        self.counts["given_keys"] += len(verdict.give)
        self.counts["damaged"] += verdict.damaged
        return [[[k, raw] for k, raw in verdict.give], verdict.want]


__all__ = ["Responder", "segment_rows"]
