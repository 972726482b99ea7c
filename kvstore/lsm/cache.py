"""A small LRU cache of decoded blocks shared by all tables of an engine.

Keys name a block of a table (the reader uses one int per block: file number and block
index); file numbers are never reused, so a deleted table's blocks simply age out.
Bounded by the sum of the entries' charges (bytes).
Thread-safe: one lock around an OrderedDict for changes (`lookup`, the point read's
probe, takes none); every operation is O(1).

Admission (`offer`): a block read for a point lookup enters the cache only the second
time it is offered within a window of recent offers (a "doorkeeper" in front of the
LRU, as in TinyLFU). Blocks read once (uniform random reads over data much larger than
the cache) then never displace blocks that are reused, and the reads do not pay for
inserting and evicting them: measured on random reads of a 130 MB table with a 16 MiB
cache, an insert plus its eviction cost more than the rest of the block read.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable


class BlockCache:
    def __init__(self, capacity_bytes: int) -> None:
        if capacity_bytes < 0:
            raise ValueError("cache capacity must be >= 0")
        self.capacity = capacity_bytes
        self._map: OrderedDict[Hashable, tuple[object, int]] = OrderedDict()
        self._usage = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self._offered: set[Hashable] = set()
        # Remember the last ~1/4 as many misses as blocks fit: a block missed twice within
        # that many misses is hot; uniformly random misses rarely repeat so soon.
        self._offer_window = max(256, capacity_bytes // 16384)
        # probe(key) -> (value, charge) or None: the dict's own get, for the hottest
        # caller (a point read); a hit is then reported with `touch`. Lock-free like
        # `lookup` (see there); does not count a miss (the caller does).
        self.probe = self._map.get

    def get(self, key: Hashable) -> object | None:
        with self._lock:
            item = self._map.get(key)
            if item is None:
                self.misses += 1
                return None
            self._map.move_to_end(key)
            self.hits += 1
            return item[0]

    def insert(self, key: Hashable, value: object, charge: int) -> None:
        """Add or replace `key`, then evict least recently used entries over capacity.
        An entry larger than the whole capacity is not kept."""
        with self._lock:
            old = self._map.pop(key, None)
            if old is not None:
                self._usage -= old[1]
            if charge > self.capacity:
                return
            self._map[key] = (value, charge)
            self._usage += charge
            while self._usage > self.capacity:
                _, (_, c) = self._map.popitem(last=False)
                self._usage -= c

    def lookup(self, key: Hashable) -> tuple[object | None, bool]:
        """(value, False) on a hit; on a miss (None, admit): admit is True if `key` missed
        before within the window of recent misses (then the caller should `insert` the
        value it reads), False the first time (the miss is remembered).

        Takes no lock (the point read's path; the lock cost as much as the probe): each
        step is one dict or set operation, atomic under the GIL. A race with another
        thread can only lose a counter increment or an LRU touch, or admit a block one
        miss early or late; `usage` is changed only under the lock."""
        item = self._map.get(key)
        if item is not None:
            try:  # noqa: SIM105 (contextlib.suppress costs two calls on every hit)
                self._map.move_to_end(key)
            except KeyError:  # evicted by another thread since the probe
                pass
            self.hits += 1
            return item[0], False
        self.misses += 1
        return None, self.admit(key)

    def admit(self, key: Hashable) -> bool:
        """The doorkeeper, for a block a point read missed: True if `key` missed before
        within the window of recent misses (then the caller should `insert` the value it
        reads), False the first time (the miss is remembered). Lock-free (see lookup)."""
        offered = self._offered
        if key in offered:
            offered.discard(key)
            return True
        if len(offered) >= self._offer_window:
            offered.clear()
        offered.add(key)
        return False

    def touch(self, key: Hashable, item: tuple[object, int]) -> object:
        """Count a hit that `probe` found (`item`), mark `key` recently used; its value."""
        try:  # noqa: SIM105 (contextlib.suppress costs two calls)
            self._map.move_to_end(key)
        except KeyError:  # evicted by another thread since the probe
            pass
        self.hits += 1
        return item[0]

    def offer(self, key: Hashable, value: object, charge: int) -> bool:
        """Insert `key` if it was offered before within the window; True if inserted."""
        offered = self._offered
        with self._lock:
            if key not in offered:
                if len(offered) >= self._offer_window:
                    offered.clear()
                offered.add(key)
                return False
            offered.discard(key)
        self.insert(key, value, charge)
        return True

    def erase(self, key: Hashable) -> None:
        with self._lock:
            old = self._map.pop(key, None)
            if old is not None:
                self._usage -= old[1]

    def clear(self) -> None:
        with self._lock:
            self._map.clear()
            self._offered.clear()
            self._usage = 0

    @property
    def usage(self) -> int:
        return self._usage

    def __len__(self) -> int:
        return len(self._map)

    def stats(self) -> dict[str, int]:
        return {"capacity": self.capacity, "usage": self._usage, "entries": len(self._map),
                "hits": self.hits, "misses": self.misses}
