"""Durable hints: writes a fallback node holds for an owner it could not reach.

Theory of operation (Dynamo §4.6 "hinted handoff")

- When a primary replica is down, the coordinator sends the write to the next healthy
  node with a hint naming the intended owner. That node keeps the state here, durably
  (the engine's sync policy, like the replica store), until `Handoff` delivers it.
- One hint per (owner, key): a new hint for the same pair is `vclock.sync`ed into the
  stored one, so a hint is always the join of everything the owner missed for that key.
  Hints are plain `sync` even for last-write-wins keys: the owner's `merge` applies its
  own rule on delivery, and `sync` loses nothing.
- `remove(owner, key, delivered)` deletes the hint only if it still equals `delivered`
  (compared under the hint's lock): a hint that grew while its delivery was in flight
  stays and goes out in the next round. Nothing that reached a fallback is dropped before
  some later delivery of it succeeded.
- Reads on a fallback see hinted writes: `get(key)` syncs the hints for `key` of every
  owner (a fallback may stand in for several owners of one key).

Storage layout (on disk: do not change), two records per hint written in one atomic batch:

    b"k" | key length: u16 big-endian | key | owner (UTF-8)   ->  vclock.encode(state)
    b"o" | owner length: u8 | owner (UTF-8) | key              ->  b"" (index)

The length prefixes make each prefix exact (no key is a prefix of another's record):
`get(key)` is one short range scan over `k|len|key` (one record per owner holding a hint
for it, usually none or one), `pending(owner, n)` is one range scan of `n` index records
under `o|len|owner` plus `n` point reads at the same snapshot. The trade-off: each hint
costs two records (an index record is the key and owner only), in exchange for both
look-ups being range scans of exactly the answer. Per-owner counts live in memory for
`owners()` and `count()`; open() rebuilds them by scanning the `o` records (O(hints)).
Damaged hint bytes raise InvalidSiblingSet from every read that meets them, never data.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from pathlib import Path
from typing import Any

from kvstore import vclock
from kvstore.errors import InvalidRequest, InvalidSiblingSet
from kvstore.keylocks import KeyLocks, Sections
from kvstore.lsm import MAX_KEY_SIZE, AsyncEngine, WriteBatch
from kvstore.replica_layout import decode_stored
from kvstore.vclock import MAX_NODE_NAME_BYTES, SiblingSet

logger = logging.getLogger(__name__)

HINT = b"k"  # record tags; on disk: do not change
INDEX = b"o"
MAX_HINT_KEY = MAX_KEY_SIZE - 3 - MAX_NODE_NAME_BYTES  # the record key must fit the engine


def _owner_bytes(owner: object) -> bytes:
    if not isinstance(owner, str):
        raise TypeError(f"owner must be a str, not {type(owner).__name__}")
    raw = owner.encode("utf-8")
    if not 1 <= len(raw) <= MAX_NODE_NAME_BYTES:
        raise InvalidRequest(f"owner must be 1..{MAX_NODE_NAME_BYTES} UTF-8 bytes")
    return raw


def _key(key: object) -> bytes:
    if not isinstance(key, bytes | bytearray | memoryview):
        raise TypeError(f"key must be bytes, not {type(key).__name__}")
    key = bytes(key)
    if not 1 <= len(key) <= MAX_HINT_KEY:
        raise InvalidRequest(f"key must be 1..{MAX_HINT_KEY} bytes, not {len(key)}")
    return key


def _hint_prefix(key: bytes) -> bytes:
    return HINT + len(key).to_bytes(2, "big") + key


def _index_prefix(owner: bytes) -> bytes:
    return INDEX + bytes((len(owner),)) + owner


def _prefix_end(prefix: bytes) -> bytes | None:
    """The smallest key above every key that starts with `prefix`."""
    stripped = prefix.rstrip(b"\xff")
    return stripped[:-1] + bytes((stripped[-1] + 1,)) if stripped else None


class HintStore:
    """Hints held for unreachable owners. See the module docstring."""

    def __init__(self, engine: AsyncEngine, counts: dict[str, int]) -> None:
        self._engine = engine
        self._counts = counts  # owner -> hints held; Invariant: every value >= 1
        self._locks = KeyLocks()
        self._sections = Sections()

    @classmethod
    async def open(cls, path: str | Path, *, sync: str = "interval",
                   **engine_options: Any) -> HintStore:
        engine = await AsyncEngine.open(str(path), sync=sync, **engine_options)
        try:
            counts = await asyncio.to_thread(_count_owners, engine)
        except BaseException:
            await engine.close()
            raise
        return cls(engine, counts)

    async def close(self) -> None:
        await self._sections.drain()
        await self._engine.close()

    def owners(self) -> set[str]:
        """Owners with at least one hint. O(owners)."""
        return set(self._counts)

    def count(self, owner: str | None = None) -> int:
        """Hints held (for `owner`, or in all). O(owners)."""
        if owner is not None:
            return self._counts.get(owner, 0)
        return sum(self._counts.values())

    async def add(self, owner: str, key: bytes, state: SiblingSet) -> SiblingSet:
        """Sync `state` into the hint for (owner, key); durable under the sync policy
        before it returns. Returns the stored hint."""
        raw_owner, key = _owner_bytes(owner), _key(key)
        if not isinstance(state, SiblingSet):
            raise TypeError(f"state must be a SiblingSet, not {type(state).__name__}")
        state.check()
        return await self._sections.run(self._add(owner, raw_owner, key, state))

    async def _add(self, owner: str, raw_owner: bytes, key: bytes,
                   state: SiblingSet) -> SiblingSet:
        record = _hint_prefix(key) + raw_owner
        engine = self._engine.engine

        def run() -> tuple[bool, SiblingSet]:  # one worker-thread hop; the lock is held
            raw = engine.get(record)
            current = decode_stored(key, raw)
            merged = vclock.sync(current, state)
            if raw is not None and merged == current:
                return False, current
            batch = WriteBatch().put(record, vclock.encode(merged))
            if raw is None:
                batch.put(_index_prefix(raw_owner) + key, b"")
            engine.write(batch)
            return raw is None, merged

        async with self._locks.hold((owner, key)):
            new, merged = await asyncio.to_thread(run)
            if new:
                self._counts[owner] = self._counts.get(owner, 0) + 1
            return merged

    async def get(self, key: bytes) -> SiblingSet:
        """The sync of every owner's hint for `key` (SiblingSet() when there is none).
        Free when the store holds no hints (the common case: every owner is up)."""
        key = _key(key)
        if not self._counts:
            return SiblingSet()
        prefix = _hint_prefix(key)
        engine = self._engine.engine

        def run() -> list[bytes]:
            with engine.scan(prefix, _prefix_end(prefix)) as scan:
                return [raw for _, raw in scan]

        raws = await asyncio.to_thread(run)
        return vclock.merge_all(decode_stored(key, raw) for raw in raws)

    async def pending(self, owner: str, limit: int) -> list[tuple[bytes, SiblingSet]]:
        """Up to `limit` hints for `owner`, in key order, read at one snapshot."""
        raw_owner = _owner_bytes(owner)
        if type(limit) is not int or limit < 1:
            raise ValueError(f"limit must be a positive int: {limit!r}")
        if owner not in self._counts:
            return []
        rows = await asyncio.to_thread(self._pending, raw_owner, limit)
        return [(key, decode_stored(key, raw)) for key, raw in rows]

    def _pending(self, raw_owner: bytes, limit: int) -> list[tuple[bytes, bytes]]:
        engine = self._engine.engine
        prefix = _index_prefix(raw_owner)
        with engine.snapshot() as snap, snap.scan(prefix, _prefix_end(prefix)) as scan:
            keys = [k[len(prefix):] for k, _ in itertools.islice(scan, limit)]
            rows = []
            for key in keys:
                raw = snap.get(_hint_prefix(key) + raw_owner)
                if raw is None:
                    raise InvalidSiblingSet(f"hint index names key {key!r:.100} for owner"
                                            f" {raw_owner.decode()!r} but it holds no hint")
                rows.append((key, raw))
        return rows

    async def remove(self, owner: str, key: bytes, delivered: SiblingSet) -> bool:
        """Delete the hint for (owner, key) if it still equals `delivered`; True if it
        did. A hint that changed since it was read stays for the next delivery."""
        return await self.remove_many(owner, [(key, delivered)]) == 1

    async def remove_many(self, owner: str,
                          delivered: list[tuple[bytes, SiblingSet]]) -> int:
        """`remove` for a delivered batch, in one engine write; returns how many went."""
        raw_owner = _owner_bytes(owner)
        wanted = {_key(key): state for key, state in delivered}
        if not wanted:
            return 0
        return await self._sections.run(self._remove_many(owner, raw_owner, wanted))

    async def _remove_many(self, owner: str, raw_owner: bytes,
                           wanted: dict[bytes, SiblingSet]) -> int:
        keys = list(wanted)
        records = [_hint_prefix(key) + raw_owner for key in keys]
        engine = self._engine.engine
        async with self._locks.hold_all((owner, key) for key in keys):
            raws = await asyncio.to_thread(lambda: [engine.get(r) for r in records])
            batch = WriteBatch()
            for key, record, raw in zip(keys, records, raws, strict=True):
                if raw is not None and decode_stored(key, raw) == wanted[key]:
                    batch.delete(record).delete(_index_prefix(raw_owner) + key)
            gone = len(batch) // 2
            if gone:
                await self._engine.write(batch)
                left = self._counts[owner] - gone
                if left:
                    self._counts[owner] = left
                else:
                    del self._counts[owner]
            return gone

    def stats(self) -> dict[str, Any]:
        return {"hints": self.count(), "owners": dict(sorted(self._counts.items())),
                "keys_locked": len(self._locks)}


def _count_owners(engine: AsyncEngine) -> dict[str, int]:
    """Hints per owner from the index records (worker thread; O(hints))."""
    counts: dict[str, int] = {}
    with engine.engine.scan(INDEX, _prefix_end(INDEX)) as scan:
        for record, _ in scan:
            n = record[1] if len(record) > 1 else 0
            try:
                owner = record[2:2 + n].decode("utf-8")
            except UnicodeDecodeError:
                owner = ""
            if n < 1 or len(record) <= 2 + n or not owner:
                raise InvalidSiblingSet(f"damaged hint index record {record!r:.100}")
            counts[owner] = counts.get(owner, 0) + 1
    return counts


__all__ = ["HintStore"]
