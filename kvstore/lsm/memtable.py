"""The memtable: recent writes in memory, sorted by key, bounded in bytes.

Theory of operation
- `_latest` maps a user key to its newest version as an entry `(key, seq, kind, value)`
  (the tuple the merge and the table builder take, so iteration copies nothing); `_keys` is a
  `SortedList` of the same keys for ordered scans and flushes. Point reads need only the
  dict (O(1)). A new key is only appended to `_unsorted` (O(1)); the first ordered read
  after writes sorts those and merges them into `_keys` in one `update` (O(k log k) for
  k new keys, the same total work as inserting one by one, but off the write path).
- An overwritten version is kept in `_older[key]` (oldest first) only if a snapshot may
  still need it: the writer passes `keep_from`, the newest live snapshot's sequence
  number, and a version with `seq <= keep_from` is kept. Otherwise it is dropped at once
  and its bytes are given back, so overwrite-heavy loads do not grow the memtable.
- Writers are serialised by the engine (one writer at a time holds its mutex); readers
  take no lock for point reads: a dict lookup is atomic under the GIL, and `_older[key]`
  is written before `_latest[key]` is replaced, so a reader never misses a kept version.
  Ordered iteration of a memtable that is still being written takes the engine's mutex
  per chunk of keys (`lock=`), because a `SortedList` may not change under an iterator.
- Invariant: `approximate_bytes` = sum over kept versions of
  len(key) + len(value) + entry_overhead.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from itertools import chain, islice
from operator import itemgetter

from sortedcontainers import SortedList

from .coding import KIND_DELETE

# An internal entry, as stored and as the merge and the table builder see it.
Entry = tuple[bytes, int, int, bytes]

_CHUNK = 512
_SEQ = itemgetter(1)
_KIND = itemgetter(2)
_VALUE = itemgetter(3)


def _copy(older: list[Entry] | None) -> tuple[Entry, ...] | None:
    # A snapshot of the kept versions: the writer may append to the list after the chunk.
    return tuple(older) if older else None


class MemTable:
    __slots__ = ("_keys", "_latest", "_older", "_settle_lock", "_unsorted", "approximate_bytes",
                 "entry_overhead", "latest", "max_seq")

    def __init__(self, entry_overhead: int = 200) -> None:
        self._latest: dict[bytes, Entry] = {}
        # latest(key): the newest entry of `key`, whatever its seq, or None. O(1). The
        # dict's own get (no Python frame: every point read calls it).
        self.latest = self._latest.get
        self._older: dict[bytes, list[Entry]] = {}
        self._keys = SortedList()
        self._unsorted: list[bytes] = []
        self._settle_lock = threading.Lock()
        self.entry_overhead = entry_overhead
        self.approximate_bytes = 0
        self.max_seq = 0

    def __len__(self) -> int:
        """Number of distinct user keys. O(1)."""
        return len(self._latest)

    def add(self, seq: int, kind: int, key: bytes, value: bytes, keep_from: int = -1) -> None:
        """Record version `seq` of `key`. O(log n) for a new key, O(1) otherwise.

        Requires: seq greater than every seq added before (the engine's writer order);
        the caller is the only writer. `keep_from` is the newest live snapshot's seq
        (-1 if none): the replaced version is kept if `seq <= keep_from`.
        """
        latest = self._latest
        old = latest.get(key)
        charge = len(key) + len(value) + self.entry_overhead
        if old is None:
            self._unsorted.append(key)
        elif old[1] <= keep_from:
            self._older.setdefault(key, []).append(old)
        else:
            charge -= len(key) + len(old[3]) + self.entry_overhead
        latest[key] = (key, seq, kind, value)
        self.approximate_bytes += charge
        self.max_seq = seq

    def get(self, key: bytes, max_seq: int) -> Entry | None:
        """The newest entry of `key` with seq <= max_seq kept here, or None. O(1)
        plus the number of kept older versions of `key`."""
        entry = self._latest.get(key)
        if entry is None or entry[1] <= max_seq:
            return entry
        older = self._older.get(key)
        if older:
            for old in reversed(older):
                if old[1] <= max_seq:
                    return old
        return None

    def entries(
        self,
        start: bytes | None = None,
        end: bytes | None = None,
        lock: threading.Lock | None = None,
    ) -> Iterator[Entry]:
        """All kept versions with start <= key < end in internal order (key ascending,
        seq descending). With `lock`, the sorted key list is read under it in chunks,
        so writers may go on between chunks; keys added meanwhile may or may not appear,
        and the caller filters by sequence number."""
        return chain.from_iterable(self.runs(start, end, lock))

    def runs(
        self,
        start: bytes | None = None,
        end: bytes | None = None,
        lock: threading.Lock | None = None,
        visible_at: int | None = None,
    ) -> Iterator[list[Entry]] | Iterator[list[Entry | tuple[bytes, bytes]]]:
        """What `entries` yields, as lists of up to _CHUNK keys' versions (the scan's
        merge takes whole runs). With `visible_at` (a scan's snapshot), a chunk of keys
        without kept older versions whose entries are all values at or below it comes as
        a plain run: a list of (key, value) pairs (see merge.merge_visible_runs)."""
        guard: AbstractContextManager[object] = lock if lock is not None else nullcontext()
        settle = self._settle
        latest = self._latest
        older_map = self._older
        low = start
        inclusive = True
        while True:
            with guard:
                if self._unsorted:
                    settle()
                if low is None:
                    it = self._keys.irange(None, end, inclusive=(True, False))
                else:
                    it = self._keys.irange(low, end, inclusive=(inclusive, False))
                keys = list(islice(it, _CHUNK))
                plain = not older_map  # no key has kept versions (the common case)
                if plain:
                    chunk = list(map(latest.__getitem__, keys))
                else:
                    versions = [(latest[k], _copy(older_map.get(k))) for k in keys]
            if not plain:
                chunk = []
                for entry, older in versions:
                    chunk.append(entry)
                    if older:
                        chunk += reversed(older)
            if (
                plain
                and visible_at is not None
                and chunk
                and max(map(_SEQ, chunk)) <= visible_at
                and KIND_DELETE not in map(_KIND, chunk)
            ):
                chunk = list(zip(keys, map(_VALUE, chunk), strict=True))
            if chunk:
                yield chunk
            if len(keys) < _CHUNK:
                return
            low = keys[-1]
            inclusive = False

    def _settle(self) -> None:
        """Merge keys added since the last ordered read into the sorted list. Requires:
        no concurrent `add` (the engine's mutex is held, or the memtable is immutable)."""
        with self._settle_lock:
            if self._unsorted:
                fresh = self._unsorted
                self._unsorted = []
                fresh.sort()
                self._keys.update(fresh)

    def check(self) -> None:
        """Assert every invariant. O(n)."""
        self._settle()
        assert list(self._keys) == sorted(self._latest)
        total = 0
        for key, entry in self._latest.items():
            assert entry[0] == key
            total += len(key) + len(entry[3]) + self.entry_overhead
            newer = entry[1]
            for old in reversed(self._older.get(key, [])):
                assert old[0] == key and old[1] < newer, (key, old, newer)
                newer = old[1]
                total += len(key) + len(old[3]) + self.entry_overhead
        assert total == self.approximate_bytes, (total, self.approximate_bytes)
        assert set(self._older) <= set(self._latest)
