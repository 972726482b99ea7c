"""The initiating side of an exchange between two replicas of some partitions.

Theory of operation (Dynamo §4.7; the responder is antientropy/responder.py)

1. Trees: for every partition, `merkle.Descent` compares this node's tree with the
   peer's, level by level, asking only for the children of nodes that differ; the
   requests of all partitions at one level travel in one `nodes` call (hashes cut to
   codec.WIDTH bytes). Round trips: depth + 1, whatever the number of partitions.
2. Keys: for each partition with differing segments, this node's keys of those segments
   (from the key index, antientropy/keyindex.py, or a raw scan of the partition while
   the index is being built) go to the peer with their clocks and entry-hash prefixes
   (`keys`, up to LIST_GROUP partitions per call). The peer answers with its states for
   keys where it is ahead or concurrent (`give`) and the keys it needs (`want`)
   (reconcile.py).
3. Repair: the given states are merged here (ReplicaStore.merge_many: vclock.sync, as
   read repair does), then this node's states of the wanted keys (read after that merge,
   so concurrent keys carry both sides) are merged there (`merge`). Both replicas end
   with the sync of their states; a tombstone travels like any state, so a delete is
   never undone.

`full=True` is the naive full comparison the benchmark measures against: no trees, every
key of every partition is listed with its clock (no hashes), the rest is the same.
Every call's request and reply bytes are counted. `pace(keys, bytes)` is awaited after
each piece of work (the scheduler's rate limit); keys counted are those scanned here and
those repaired.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from antientropy import codec
from antientropy.codec import WIDTH, as_items, as_key, as_list
from antientropy.errors import InvalidMessage
from antientropy.merkle import Descent
from antientropy.reconcile import entry_digest
from antientropy.responder import segment_rows
from antientropy.trees import Trees
from kvstore import vclock
from kvstore.errors import InvalidSiblingSet
from kvstore.replica import ReplicaStore
from kvstore.vclock import SiblingSet

Transport = Callable[[str, str, bytes], Awaitable[bytes]]  # (peer, op, body) -> reply body
Pace = Callable[[int, int], Awaitable[None]]
LIST_GROUP = 32  # partitions per `keys` call (and per scan)
MERGE_BATCH_BYTES = 8 << 20  # states per `merge` call
READ_BATCH = 1024  # wanted keys read from the store in one worker-thread hop
NODES_BATCH = 100_000  # node hashes asked for per `nodes` call


async def _no_pace(keys: int, nbytes: int) -> None:
    return None


@dataclass
class ExchangeResult:
    peer: str
    partitions: int = 0  # compared (both trees ready, both replicas)
    skipped: list[int] = field(default_factory=list)
    differing: dict[int, int] = field(default_factory=dict)  # partition -> segments
    listed: int = 0
    repaired_here: int = 0
    repaired_there: int = 0
    repaired: dict[int, int] = field(default_factory=dict)  # partition -> keys
    damaged: int = 0
    calls: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    duration_s: float = 0.0

    def as_dict(self) -> dict:
        return {"peer": self.peer, "partitions": self.partitions, "skipped": self.skipped,
                "differing_partitions": len(self.differing),
                "differing_segments": sum(self.differing.values()), "listed": self.listed,
                "repaired_here": self.repaired_here, "repaired_there": self.repaired_there,
                "damaged": self.damaged, "calls": self.calls, "bytes_sent": self.bytes_sent,
                "bytes_received": self.bytes_received, "duration_s": self.duration_s}


class Exchange:
    """One exchange with `peer` over some partitions. See the module docstring."""

    def __init__(self, trees: Trees, replica: ReplicaStore, transport: Transport, peer: str,
                 *, full: bool = False, pace: Pace = _no_pace) -> None:
        self.trees, self.replica, self.transport = trees, replica, transport
        self.full, self.pace = full, pace
        self.result = ExchangeResult(peer)

    async def _call(self, op: str, obj: dict) -> dict:
        body = codec.pack(obj)
        r = self.result
        r.calls += 1
        r.bytes_sent += len(body)
        reply = await self.transport(r.peer, op, body)
        r.bytes_received += len(reply)
        await self.pace(0, len(body) + len(reply))
        return codec.unpack_map(reply)

    async def run(self, partitions: list[int]) -> ExchangeResult:
        started = time.monotonic()
        try:
            if self.full:
                differing: dict[int, list[int] | None] = dict.fromkeys(partitions)
                self.result.partitions = len(partitions)
            else:
                differing = dict(await self._descend(partitions))
            await self._repair(differing)
        finally:
            self.result.duration_s = time.monotonic() - started
        return self.result

    async def _descend(self, partitions: list[int]) -> dict[int, list[int]]:
        t, r = self.trees, self.result
        descents: dict[int, Descent] = {}
        for p in partitions:
            tree = t.tree(p)
            if tree is None:
                r.skipped.append(p)
            else:
                descents[p] = Descent(tree)
        found: dict[int, list[int]] = {}
        compared = set(descents)
        while descents:
            asks, size = [], 0
            for p, d in descents.items():
                level, indices = d.request()  # type: ignore[misc]
                if asks and size + len(indices) > NODES_BATCH:
                    break
                asks.append((p, level, indices))
                size += len(indices)
            reply = await self._call("nodes", {
                "ring_size": t.ring_size, "fanout": t.fanout, "depth": t.depth, "width": WIDTH,
                "items": [[p, level, _parents(level, indices, t.fanout)]
                          for p, level, indices in asks]})
            answers = as_list(reply.get("items"), "items", len(asks))
            for (p, _, indices), blob in zip(asks, answers, strict=True):
                d = descents[p]
                if blob is None:
                    r.skipped.append(p)
                    compared.discard(p)
                    del descents[p]
                    continue
                if not isinstance(blob, bytes) or len(blob) != WIDTH * len(indices):
                    raise InvalidMessage(f"{len(indices)} node hashes of {WIDTH} bytes expected")
                d.feed([blob[i:i + WIDTH] for i in range(0, len(blob), WIDTH)])
                if d.request() is None:
                    del descents[p]
                    if d.segments:
                        found[p] = d.segments
                        r.differing[p] = len(d.segments)
        r.partitions = len(compared)
        return found

    def _listing(self, rows: dict[bytes, bytes]) -> list:
        out = []
        for key, raw in rows.items():
            try:
                state = vclock.decode(raw)
            except InvalidSiblingSet:
                self.result.damaged += 1
                continue
            digest = None if self.full else entry_digest(key, raw)
            out.append([key, [list(e) for e in state.clock.entries], digest])
        return out

    async def _repair(self, differing: dict[int, list[int] | None]) -> None:
        order = sorted(differing)
        for i in range(0, len(order), LIST_GROUP):
            group = order[i:i + LIST_GROUP]
            wanted = {p: None if differing[p] is None else set(differing[p])  # type: ignore[arg-type]
                      for p in group}
            rows, scanned = await segment_rows(self.replica, self.trees, wanted)
            await self.pace(scanned, 0)
            await self._keys([[p, differing[p], self._listing(rows[p])] for p in group])

    async def _keys(self, batch: list[list]) -> None:
        r = self.result
        r.listed += sum(len(item[2]) for item in batch)
        reply = await self._call("keys", {"items": batch})
        answers = as_list(reply.get("items"), "items", len(batch))
        give: list[tuple[bytes, SiblingSet]] = []
        want: list[tuple[int, bytes]] = []
        for (p, _, _), answer in zip(batch, answers, strict=True):
            if answer is None:
                r.skipped.append(p)
                continue
            got, wanted = as_list(answer, "answer", 2)
            got = as_items(got)
            wanted = [as_key(k) for k in as_list(wanted, "want")]
            if any(self.trees.locate(k)[0] != p for k in [*(k for k, _ in got), *wanted]):
                raise InvalidMessage(f"the peer answered keys outside partition {p}")
            give += got
            want += [(p, k) for k in wanted]
            r.repaired[p] = r.repaired.get(p, 0) + len(got) + len(wanted)
        for i in range(0, len(give), 1000):
            await self.replica.merge_many(give[i:i + 1000])
        r.repaired_here += len(give)
        await self.pace(len(give), 0)
        items, size = [], 0
        raws: list[bytes | None] = []
        for i in range(0, len(want), READ_BATCH):
            raws += await self.replica.get_many_raw([k for _, k in want[i:i + READ_BATCH]])
        for (_, key), encoded in zip(want, raws, strict=True):
            if encoded is None:  # deleted here meanwhile (a tombstone is a state, kept)
                continue
            if items and size + len(encoded) > MERGE_BATCH_BYTES:
                await self._merge(items)
                items, size = [], 0
            items.append([key, encoded])
            size += len(encoded) + len(key)
        if items:
            await self._merge(items)

    async def _merge(self, items: list[list]) -> None:
        await self._call("merge", {"items": items})
        self.result.repaired_there += len(items)
        await self.pace(len(items), 0)


def _parents(level: int, indices: list[int], fanout: int) -> list[int]:
    """The wire form of a Descent request: the parents whose children it asks for (it
    always asks for all `fanout` children of a node), none for the root."""
    return [] if level == 0 else [i // fanout for i in indices[::fanout]]


__all__ = ["Exchange", "ExchangeResult", "Pace", "Transport"]
