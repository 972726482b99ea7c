"""One Merkle tree per partition of this node's replica store, kept exact as it changes.

Theory of operation (Dynamo §4.7; Riak's hashtree: trees follow writes, are saved, and are
rebuilt from the data when they cannot be trusted)

- Following writes: `ReplicaStore.observe` reports every durable change as (key, old
  bytes, new bytes); the tree of the key's partition adds the new entry and subtracts the
  old one (merkle.MerkleTree.update, O(1)). A partition whose tree is *ready* is exact:
  its leaves are the sums over exactly the stored entries. Only ready trees take part in
  exchanges (`tree(p)` answers None otherwise).
- Saving: `close()` writes every ready tree to DIR/aae/trees atomically (temp
  file, fsync, rename, fsync of the folder), then creates DIR/aae/CLEAN. `open()` loads
  the trees only when CLEAN exists, and deletes CLEAN (fsynced) before the store takes
  writes, so a crash (SIGKILL, power cut) leaves no CLEAN and every tree is rebuilt.
  Partitions without keys need no rebuild: their empty tree is exact.
- Rebuilding (in the background, at most `rebuild_keys_per_s` keys per second): a
  partition's tree is built from a scan of the stored bytes. Writes during the scan are
  remembered (the last new bytes per key); the scan saw, per key, either the state before
  them or one of them, so replacing the scanned entry of each such key by its last new
  bytes makes the tree exact at the moment it becomes ready (all on the event loop, with
  no await in between). Trees older than `max_age_s` are rebuilt too (silent damage on
  disk then shows up as a difference within that time, as with Riak's tree expiry).
- Key index (antientropy/keyindex.py, `index`): the same feed and the same rebuild scans
  keep, per partition, which keys each segment holds; after a load it is filled by a
  background scan (at the same rate) of each loaded partition.
- Requires: `open()` returns before the store takes writes (the node opens the trees
  right after the store), so no change goes unseen between the load and observe().

The saved trees' file format and its checks: antientropy/tree_file.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path

from antientropy import tree_file
from antientropy.keyindex import KeyIndex
from antientropy.merkle import MerkleTree
from antientropy.ratelimit import TokenBucket
from kvstore.replica import Change, ReplicaStore
from kvstore.ring import key_hash, partition_of

logger = logging.getLogger(__name__)

FANOUT, DEPTH = 4, 5  # 1024 segments; fanout 4 fetches the fewest hashes per difference
REBUILD_KEYS_PER_S = 20_000  # background rebuild speed (hashing competes with requests)
MAX_AGE_S = 7 * 24 * 3600.0  # Riak expires trees weekly
_MASK64 = (1 << 64) - 1


class Trees:
    """The trees of one replica store. See the module docstring."""

    def __init__(self, folder: str | Path, replica: ReplicaStore, *, fanout: int = FANOUT,
                 depth: int = DEPTH, rebuild_keys_per_s: float = REBUILD_KEYS_PER_S,
                 max_age_s: float = MAX_AGE_S, clock: Callable[[], float] = time.time) -> None:
        self.folder = Path(folder)
        self.replica = replica
        self.ring_size = replica.ring_size
        self.bits = self.ring_size.bit_length() - 1
        self.fanout, self.depth = fanout, depth
        self.segments = MerkleTree(0, partition_bits=self.bits, fanout=fanout,
                                   depth=depth).segments  # (checks the shape)
        self.segment_bits = self.segments.bit_length() - 1
        self.max_age_s = max_age_s
        self._clock = clock
        self._bucket = TokenBucket(rebuild_keys_per_s, burst=1024)
        self._trees: dict[int, MerkleTree] = {}
        self._built: dict[int, float] = {}
        self._ready: set[int] = set()
        self._building: dict[int, dict[bytes, bytes | None]] = {}
        self._queue: list[int] = []
        self.index = KeyIndex(lambda key: self.locate(key)[1])
        self._unindexed: list[int] = []  # ready trees whose key index needs a scan
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.loaded = 0
        self.rebuilds = 0
        self.rebuilt_keys = 0

    # -- lifecycle ----------------------------------------------------------------------
    async def open(self) -> None:
        """Load saved trees if the last close was clean, observe the store, start the
        background rebuilds. Requires: the store takes no writes until this returns."""
        saved = await asyncio.to_thread(self._load)
        now = self._clock()
        holding = self.replica.partitions()
        for p, (built_at, tree) in saved.items():
            self._trees[p], self._built[p] = tree, built_at
        self._ready = set(saved) | (set(range(self.ring_size)) - holding)
        for p in self._ready - set(saved):
            self._built[p] = now
        self._queue = sorted(holding - set(saved))
        self.index.empty(set(range(self.ring_size)) - holding)
        self._unindexed = sorted(holding & set(saved))
        self.loaded = len(saved)
        self.replica.observe(self._observe)
        logger.info("anti-entropy trees: %d loaded, %d to rebuild", len(saved), len(self._queue))
        self._task = asyncio.create_task(self._rebuild_loop())

    async def close(self) -> None:
        """Stop rebuilding; save the ready trees and mark the folder clean."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        trees = [(p, self._built[p], self._trees[p].to_bytes()) for p in sorted(self._ready)
                 if p in self._trees]
        await asyncio.to_thread(self._save, trees)

    # -- reading --------------------------------------------------------------------------
    def tree(self, partition: int) -> MerkleTree | None:
        """The exact tree of `partition`, or None while it is being (re)built."""
        if partition not in self._ready:
            return None
        return self._tree(partition)

    def _tree(self, partition: int) -> MerkleTree:
        tree = self._trees.get(partition)
        if tree is None:
            tree = self._trees[partition] = MerkleTree(
                partition, partition_bits=self.bits, fanout=self.fanout, depth=self.depth)
        return tree

    def locate(self, key: bytes) -> tuple[int, int]:
        """The key's partition and its segment in that partition's tree."""
        h = key_hash(key)
        return h >> (64 - self.bits), ((h << self.bits) & _MASK64) >> (64 - self.segment_bits)

    def age(self, partition: int) -> float | None:
        built = self._built.get(partition)
        return None if built is None or partition not in self._ready else self._clock() - built

    def pending(self) -> list[int]:
        """Partitions whose trees are not ready (queued or being rebuilt)."""
        return sorted(set(range(self.ring_size)) - self._ready)

    def rebuild(self, partitions: list[int] | None = None) -> None:
        """Queue partitions (default: every one holding keys) for a rebuild."""
        chosen = self.replica.partitions() if partitions is None else set(partitions)
        self._queue.extend(sorted(p for p in chosen if p not in self._queue))
        self._ready -= chosen  # not trusted from now on; the rebuild's scan sees every write
        self._wake.set()

    def stats(self) -> dict:
        return {"ready": len(self._ready), "pending": len(self.pending()),
                "loaded": self.loaded, "rebuilds": self.rebuilds,
                "rebuilt_keys": self.rebuilt_keys, "fanout": self.fanout, "depth": self.depth}

    # -- following writes -----------------------------------------------------------------
    def _observe(self, changes: list[Change]) -> None:
        for key, old, new in changes:
            p = partition_of(key, self.ring_size)
            if (old is None) != (new is None):
                self.index.note(p, key, new is not None)
            if p in self._ready:
                self._tree(p).update(key, old, new)
            elif p in self._building:
                self._building[p][key] = new
            # else queued: its rebuild's scan will see this change

    # -- rebuilding -----------------------------------------------------------------------
    async def _rebuild_loop(self) -> None:
        while True:
            if not self._queue:
                self._queue = sorted(p for p in self._ready if p in self._trees
                                     and self._clock() - self._built[p] > self.max_age_s)
            if not self._queue and self._unindexed:
                await self._scan_index(self._unindexed.pop(0))
                continue
            if not self._queue:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 60.0)
                continue
            p = self._queue.pop(0)
            try:
                await self._rebuild(p)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("rebuilding the tree of partition %d failed; retrying later", p)
                self._building.pop(p, None)
                self.index.abort(p)
                await asyncio.sleep(1.0)
                self._queue.append(p)

    async def _rebuild(self, p: int) -> None:
        self._ready.discard(p)
        changed = self._building[p] = {}
        self.index.begin(p)
        tree = MerkleTree(p, partition_bits=self.bits, fanout=self.fanout, depth=self.depth)
        scanned: dict[bytes, bytes] = {}
        segments: dict[bytes, int] = {}
        async for key, raw in self.replica.scan_partition_raw(p):
            tree.update(key, None, raw)
            scanned[key] = raw
            segments[key] = self.locate(key)[1]
            if len(scanned) % 256 == 0:
                await asyncio.sleep(self._bucket.reserve(256, time.monotonic()))
        for key, new in changed.items():
            tree.update(key, scanned.get(key), new)
        del self._building[p]
        self.index.finish(p, segments)
        self._trees[p], self._built[p] = tree, self._clock()
        self._ready.add(p)
        self.rebuilds += 1
        self.rebuilt_keys += len(scanned)
        logger.debug("rebuilt the tree of partition %d (%d keys)", p, len(scanned))

    async def _scan_index(self, p: int) -> None:
        """Fill the key index of a partition whose tree was loaded (a rate-limited scan)."""
        self.index.begin(p)
        try:
            segments: dict[bytes, int] = {}
            async for key, _ in self.replica.scan_partition_raw(p):
                segments[key] = self.locate(key)[1]
                if len(segments) % 1024 == 0:
                    await asyncio.sleep(self._bucket.reserve(256, time.monotonic()))
        except BaseException:
            self.index.abort(p)
            raise
        self.index.finish(p, segments)

    # -- files (worker thread) --------------------------------------------------------------
    def _load(self) -> dict[int, tuple[float, MerkleTree]]:
        return tree_file.load(self.folder, (self.bits, self.fanout, self.depth))

    def _save(self, trees: list[tuple[int, float, bytes]]) -> None:
        tree_file.save(self.folder, [(built_at, data) for _, built_at, data in trees])


__all__ = ["DEPTH", "FANOUT", "Trees"]
