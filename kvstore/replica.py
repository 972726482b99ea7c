"""A node's replicas: each key's sibling set, durable in the node's LSM engine.

Theory of operation (Dynamo §4.4 "data versioning", §4.5 "execution of get and put")

- Layout (kvstore/replica_layout.py): the storage key of a user key is `partition (2
  bytes, big-endian) + key`, so one partition is one contiguous key range (transfer and
  anti-entropy scan it, `drop_partition` deletes it); the value is
  `vclock.encode(SiblingSet)`. On disk: do not change. ring_size is at most 2**16.
- `coordinate` is the coordinator's write (vclock.update, or lww_update for keys under a
  last-write-wins prefix) on this node's own durable state; `merge` is the replica-side
  write (vclock.sync / lww_sync) of a state another replica shipped. Both read, compute
  and write under a per-key asyncio lock, so two writes of one key never interleave and a
  dot (node, counter) is never issued twice. A write is durable under the engine's sync
  policy before the call returns ("always": fsynced; "interval": in the OS, fsynced
  within 100 ms; "none": buffered in the process, lost by a crash).
- Cancellation never splits a read-modify-write (kvstore/keylocks.py): a cancelled caller
  stops waiting, the section still writes (or not) and then releases the key's lock, so
  no later write reads a state older than one being written (that would reuse a dot).
  Per-key locks exist only while held or awaited. close() waits for sections in flight.
- `coordinate` prunes the clock past `max_clock_entries` (vclock.prune, never our own
  entry); `merge` never prunes (pruning on the replica side would only add false siblings).
- Reads take no lock: the engine's get sees whole writes. Damaged stored bytes raise
  InvalidSiblingSet (naming the key); they are never served and never merged over (a
  write to a damaged key raises too, leaving the bytes for an operator or anti-entropy).
- `partitions()` is kept in memory: found at open with one skipping scan (one short scan
  per non-empty partition), grown by every write, shrunk by `drop_partition`.
- Deletes are conditional: `drop_partition` and `remove_many` delete a key only while its
  stored bytes are still those the caller saw (checked under the key's lock), so a write
  that arrives after a partition was scanned for hand-off is kept, never deleted unseen.
- `observe(callback)`: every durable change is reported as (key, old bytes, new bytes),
  under the key's lock, so a per-partition hash tree (antientropy/merkle.py) can follow
  the store incrementally instead of rescanning it.

Trade-offs: a lock per key serialises writes of one hot key (their fsyncs still group
across keys); merge_many locks its keys in sorted order (no deadlock with other batches)
and writes them in one atomic engine batch, so a handoff or transfer batch costs one log
write. A node that loses acknowledged writes (sync "none" or "interval" and a power cut)
can reissue a dot it already used for a different write; see docs/store.md.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from kvstore import vclock
from kvstore.keylocks import KeyLocks, Sections
from kvstore.lsm import AsyncEngine, WriteBatch
from kvstore.replica_layout import (
    MAX_RING_SIZE,
    PREFIX_BYTES,
    any_in,
    check_state,
    check_user_key,
    decode_stored,
    find_partitions,
    partition_bounds,
    storage_key,
)
from kvstore.ring import partition_of
from kvstore.vclock import DEFAULT_LIMITS, SiblingLimits, SiblingSet, VersionVector

logger = logging.getLogger(__name__)
Change = tuple[bytes, bytes | None, bytes | None]  # key, stored bytes before, after (None: absent)


class ReplicaStore:
    """This node's replicas of every key it holds. See the module docstring."""

    def __init__(self, engine: AsyncEngine, *, node: str, ring_size: int,
                 limits: SiblingLimits, lww_prefixes: tuple[bytes, ...],
                 max_clock_entries: int, partitions: set[int]) -> None:
        self._engine = engine
        self.node = node
        self.ring_size = ring_size
        self.limits = limits
        self.lww_prefixes = lww_prefixes
        self.max_clock_entries = max_clock_entries
        self._partitions = partitions
        self._locks = KeyLocks()
        self._sections = Sections()
        self._observers: list[Callable[[list[Change]], None]] = []
        self._counts = dict.fromkeys(
            ("gets", "coordinates", "refused", "merges", "merge_writes", "batches",
             "dropped_keys"), 0)

    @classmethod
    async def open(cls, path: str | Path, *, node: str, ring_size: int,
                   sync: str = "interval", limits: SiblingLimits = DEFAULT_LIMITS,
                   lww_prefixes: tuple[bytes, ...] = (),
                   max_clock_entries: int = vclock.DEFAULT_MAX_CLOCK_ENTRIES,
                   **engine_options: Any) -> ReplicaStore:
        """Open (creating if needed) the store in folder `path`. Extra keywords go to the
        engine (kvstore/lsm/options.py)."""
        if not isinstance(node, str) or not 1 <= len(node.encode()) <= 255:
            raise ValueError(f"node must be a name of 1..255 UTF-8 bytes: {node!r:.80}")
        if type(ring_size) is not int or not 1 <= ring_size <= MAX_RING_SIZE \
                or ring_size & (ring_size - 1):
            raise ValueError(f"ring_size must be a power of two in 1..{MAX_RING_SIZE}")
        prefixes = tuple(bytes(p) for p in lww_prefixes)
        if not all(prefixes):
            raise ValueError("an lww prefix must not be empty (it would cover every key)")
        engine = await AsyncEngine.open(str(path), sync=sync, **engine_options)
        try:
            found = await asyncio.to_thread(find_partitions, engine.engine)
        except BaseException:
            await engine.close()
            raise
        return cls(engine, node=node, ring_size=ring_size, limits=limits,
                   lww_prefixes=prefixes, max_clock_entries=max_clock_entries,
                   partitions=found)

    async def close(self) -> None:
        """Wait for critical sections in flight, then close the engine. Idempotent."""
        await self._sections.drain()
        await self._engine.close()

    # -- keys ---------------------------------------------------------------------------
    def partition_of(self, key: bytes) -> int:
        return partition_of(key, self.ring_size)

    def _storage_key(self, key: bytes) -> bytes:
        return storage_key(self.partition_of(key), key)

    def is_lww(self, key: bytes) -> bool:
        return key.startswith(self.lww_prefixes) if self.lww_prefixes else False

    async def _read(self, key: bytes) -> SiblingSet:
        return decode_stored(key, await self._engine.get(self._storage_key(key)))

    async def _rmw(self, key: bytes,
                   change: Callable[[SiblingSet], SiblingSet]) -> tuple[SiblingSet, SiblingSet]:
        """Read, `change`, and write (only if different) in one worker-thread hop; the
        caller holds the key's lock. Returns (old, new)."""
        skey, engine = self._storage_key(key), self._engine.engine

        def run() -> tuple[SiblingSet, SiblingSet, Change | None]:
            raw = engine.get(skey)
            old = decode_stored(key, raw)
            new = change(old)
            if new == old:
                return old, new, None
            encoded = vclock.encode(new)
            engine.put(skey, encoded)
            return old, new, (key, raw, encoded)

        old, new, changed = await asyncio.to_thread(run)
        if changed:
            self._partitions.add(self.partition_of(key))
            self._notify([changed])
        return old, new

    def observe(self, callback: Callable[[list[Change]], None]) -> None:
        """Call `callback([(key, old bytes | None, new bytes | None), ...])` after every
        durable change, under the keys' locks (so per key in write order), on the event
        loop. For incremental anti-entropy trees; it must be quick and not raise."""
        self._observers.append(callback)

    def _notify(self, changes: list[Change]) -> None:
        for callback in self._observers:
            try:
                callback(changes)
            except Exception:
                logger.exception("a write observer failed; the write itself is durable")

    # -- reads and writes ---------------------------------------------------------------
    async def get(self, key: bytes) -> SiblingSet:
        """The stored state of `key` (SiblingSet() when absent). No lock."""
        key = check_user_key(key)
        self._counts["gets"] += 1
        return await self._read(key)

    async def get_many_raw(self, keys: list[bytes]) -> list[bytes | None]:
        """The stored bytes of each key (None: absent), not decoded, in one worker-thread
        hop (anti-entropy reads the keys of differing segments). No lock."""
        skeys = [self._storage_key(check_user_key(k)) for k in keys]
        engine = self._engine.engine
        return await asyncio.to_thread(lambda: [engine.get(s) for s in skeys])

    async def coordinate(self, key: bytes, context: VersionVector, value: bytes, *,
                         deleted: bool, timestamp: int) -> SiblingSet:
        """This node coordinates a write; returns the whole new state to ship to the
        other replicas. Raises SiblingLimitExceeded (nothing written) past the hard cap."""
        key = check_user_key(key)
        if not isinstance(context, VersionVector):
            raise TypeError(f"context must be a VersionVector, not {type(context).__name__}")
        return await self._sections.run(
            self._coordinate(key, context, bytes(value), deleted, timestamp))

    async def _coordinate(self, key: bytes, context: VersionVector, value: bytes,
                          deleted: bool, timestamp: int) -> SiblingSet:
        def change(current: SiblingSet) -> SiblingSet:
            if self.is_lww(key):
                new = vclock.lww_update(current, self.node, value, timestamp=timestamp,
                                        deleted=deleted)
            else:
                new = vclock.update(current, context, self.node, value, timestamp=timestamp,
                                    deleted=deleted, limits=self.limits)
            return vclock.prune(new, self.max_clock_entries, keep=self.node)

        async with self._locks.hold(key):
            try:
                _, new = await self._rmw(key, change)
            except vclock.SiblingLimitExceeded:
                self._counts["refused"] += 1
                raise
            self._counts["coordinates"] += 1
            return new

    def _sync(self, key: bytes, a: SiblingSet, b: SiblingSet) -> SiblingSet:
        return vclock.lww_sync(a, b) if self.is_lww(key) else vclock.sync(a, b)

    async def merge(self, key: bytes, state: SiblingSet) -> SiblingSet:
        """Sync a state another replica sent into ours; writes only when it changes
        anything; returns the merged state."""
        key = check_user_key(key)
        check_state(state)
        return await self._sections.run(self._merge(key, state))

    async def _merge(self, key: bytes, state: SiblingSet) -> SiblingSet:
        async with self._locks.hold(key):
            current, merged = await self._rmw(key, lambda old: self._sync(key, old, state))
            self._counts["merges"] += 1
            if merged != current:
                self._counts["merge_writes"] += 1
            return merged

    async def merge_many(self, items: list[tuple[bytes, SiblingSet]]) -> None:
        """`merge` for a batch, written as one atomic engine batch (duplicates fold)."""
        incoming: dict[bytes, SiblingSet] = {}
        for key, state in items:
            key = check_user_key(key)
            check_state(state)
            prior = incoming.get(key)
            incoming[key] = state if prior is None else self._sync(key, prior, state)
        if incoming:
            await self._sections.run(self._merge_many(incoming))

    async def _merge_many(self, incoming: dict[bytes, SiblingSet]) -> None:
        keys = list(incoming)
        skeys = [self._storage_key(k) for k in keys]
        engine = self._engine.engine

        def run() -> list[Change]:  # one worker-thread hop: read all, merge, one write
            batch, changes = WriteBatch(), []
            for key, skey in zip(keys, skeys, strict=True):
                raw = engine.get(skey)
                current = decode_stored(key, raw)
                merged = self._sync(key, current, incoming[key])
                if merged != current:
                    encoded = vclock.encode(merged)
                    batch.put(skey, encoded)
                    changes.append((key, raw, encoded))
            if changes:
                engine.write(batch)
            return changes

        async with self._locks.hold_all(keys):
            changes = await asyncio.to_thread(run)
            if changes:
                self._partitions.update(self.partition_of(k) for k, _, _ in changes)
                self._notify(changes)
        self._counts["merges"] += len(keys)
        self._counts["merge_writes"] += len(changes)
        self._counts["batches"] += 1

    # -- partitions ---------------------------------------------------------------------
    def _bounds(self, partition: int) -> tuple[bytes, bytes | None]:
        return partition_bounds(partition, self.ring_size)

    async def scan_partition(self, partition: int) -> AsyncIterator[tuple[bytes, SiblingSet]]:
        """Every (key, state) of one partition at one snapshot, in key order. Raises
        InvalidSiblingSet at a damaged state (the pairs before it were good)."""
        start, end = self._bounds(partition)
        async for skey, raw in self._engine.scan(start, end):
            key = skey[PREFIX_BYTES:]
            yield key, decode_stored(key, raw)

    async def scan_partition_raw(self, partition: int, last: int | None = None
                                 ) -> AsyncIterator[tuple[bytes, bytes]]:
        """Every (key, stored bytes) of partitions `partition`..`last` (default: just
        `partition`) at one snapshot, in storage order, not decoded (anti-entropy hashes
        the stored bytes; decoding every state would cost far more than the hash)."""
        start, _ = self._bounds(partition)
        _, end = self._bounds(partition if last is None else last)
        if end is not None and end <= start:
            raise ValueError(f"last partition {last} is before {partition}")
        async for skey, raw in self._engine.scan(start, end):
            yield skey[PREFIX_BYTES:], raw

    async def drop_partition(self, partition: int) -> int:
        """Delete every key of `partition` (after it was handed off); returns how many.
        A key whose state changed after this call's scan (a write that still arrived
        here) is kept, so a late write is never deleted unseen."""
        start, end = self._bounds(partition)
        rows = [(skey[PREFIX_BYTES:], raw) async for skey, raw in self._engine.scan(start, end)]
        dropped = 0
        for i in range(0, len(rows), 1024):
            dropped += await self._sections.run(self._delete_unchanged(rows[i:i + 1024]))
        if not await asyncio.to_thread(any_in, self._engine.engine, start, end):
            self._partitions.discard(partition)
        self._counts["dropped_keys"] += dropped
        logger.info("dropped partition %d: %d keys (%d kept: changed meanwhile)", partition,
                    dropped, len(rows) - dropped)
        return dropped

    async def remove_many(self, items: list[tuple[bytes, SiblingSet]]) -> int:
        """Delete each key whose stored state still equals the given one (e.g. what a
        transfer shipped, or a tombstone every replica holds); returns how many went."""
        rows = {check_user_key(k): vclock.encode(s) for k, s in items}
        if not rows:
            return 0
        dropped = await self._sections.run(self._delete_unchanged(list(rows.items())))
        self._counts["dropped_keys"] += dropped
        return dropped

    async def _delete_unchanged(self, rows: list[tuple[bytes, bytes]]) -> int:
        """Under the keys' locks, delete those whose stored bytes are still `raw`."""
        skeys = [self._storage_key(k) for k, _ in rows]
        engine = self._engine.engine

        def run() -> list[Change]:
            batch, changes = WriteBatch(), []
            for skey, (key, raw) in zip(skeys, rows, strict=True):
                if engine.get(skey) == raw:
                    batch.delete(skey)
                    changes.append((key, raw, None))
            if changes:
                engine.write(batch)
            return changes

        async with self._locks.hold_all(k for k, _ in rows):
            changes = await asyncio.to_thread(run)
            if changes:
                self._notify(changes)
            return len(changes)

    def partitions(self) -> set[int]:
        """The partitions holding at least one key (in memory; O(1))."""
        return set(self._partitions)

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self._counts)
        out.update(node=self.node, ring_size=self.ring_size, partitions=len(self._partitions),
                   keys_locked=len(self._locks), lww_prefixes=[p.hex() for p in
                                                                self.lww_prefixes])
        out["engine"] = self._engine.engine.stats()
        return out


__all__ = ["PREFIX_BYTES", "Change", "ReplicaStore", "check_user_key", "decode_stored"]
