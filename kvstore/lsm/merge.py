"""K-way merge of internal-order entry streams, and the view a reader sees of it.

Internal order: user key ascending (plain bytes order), then seq descending (newest
first). Every source (memtables, SSTables, levels) yields entries
`(user_key, seq, kind, value)` in that order; `merge_entries` interleaves them keeping
the order, and `visible` turns the merged stream into what a reader at snapshot `seq`
sees: for each user key the newest version with seq <= snapshot, tombstones hidden.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from itertools import islice
from operator import itemgetter

from .coding import KIND_VALUE

Entry = tuple[bytes, int, int, bytes]


def merge_entries(sources: Iterable[Iterable[Entry]]) -> Iterator[Entry]:
    """Merge internal-order streams into one internal-order stream. O(log k) per entry
    for k sources. Requires: each source in internal order; no (key, seq) in two
    sources (sequence numbers are unique per write)."""
    iterators = [iter(s) for s in sources]
    if not iterators:
        return
    if len(iterators) == 1:
        yield from iterators[0]
        return
    heap: list[tuple[bytes, int, int, Entry]] = []
    for index, it in enumerate(iterators):
        for entry in it:
            heap.append((entry[0], -entry[1], index, entry))
            break
    heapq.heapify(heap)
    replace = heapq.heapreplace
    pop = heapq.heappop
    while len(heap) > 1:
        top = heap[0]
        yield top[3]
        index = top[2]
        entry = next(iterators[index], None)
        if entry is None:
            pop(heap)
        else:
            replace(heap, (entry[0], -entry[1], index, entry))
    if heap:
        last = heap[0]
        yield last[3]
        yield from iterators[last[2]]


def visible(
    entries: Iterable[Entry], snapshot_seq: int, end: bytes | None = None
) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) pairs a reader at `snapshot_seq` sees, in key order, stopping before
    `end` (exclusive, None: no bound). Requires: `entries` in internal order."""
    previous: bytes | None = None
    for key, seq, kind, value in entries:
        if key == previous:
            continue
        if end is not None and key >= end:
            return
        if seq > snapshot_seq:
            continue
        previous = key
        if kind == KIND_VALUE:
            yield key, value


_CHUNK = 1024  # entries pulled from each source per round of merge_visible


def merge_visible(
    sources: Iterable[Iterable[Entry]], snapshot_seq: int, end: bytes | None = None
) -> Iterator[tuple[bytes, bytes]]:
    """What `visible(merge_entries(sources), snapshot_seq, end)` yields, computed in chunks:
    each round pulls up to _CHUNK entries per source, takes from every source the
    entries below the smallest last key pulled by a source that may have more, and sorts
    them by user key with one C-level stable sort (timsort merges the sorted runs).

    Requires (the LSM invariant the engine's scan provides): sources ordered newest
    first, i.e. for any user key every version in an earlier source is newer than every
    version in a later one; then the stable sort by key alone yields internal order."""
    iterators = [iter(s) for s in sources]
    bufs: list[list[Entry]] = []
    done: list[bool] = []
    for it in iterators:
        buf = list(islice(it, _CHUNK))
        bufs.append(buf)
        done.append(len(buf) < _CHUNK)
    first_key = itemgetter(0)
    previous: bytes | None = None
    while True:
        bound: bytes | None = None  # entries below it are final in every source
        for buf, finished in zip(bufs, done, strict=True):
            if not finished:
                last = buf[-1][0]
                if bound is None or last < bound:
                    bound = last
        batch: list[Entry] = []
        for index, buf in enumerate(bufs):
            if not buf:
                continue
            cut = len(buf) if bound is None else bisect_left(buf, bound, key=first_key)
            if cut == len(buf):
                batch += buf
                bufs[index] = []
            elif cut:
                batch += buf[:cut]
                del buf[:cut]
        if len(batch) > 1:
            batch.sort(key=first_key)
        for key, seq, kind, value in batch:
            if key == previous:
                continue
            if end is not None and key >= end:
                return
            if seq > snapshot_seq:
                continue
            previous = key
            if kind == KIND_VALUE:
                yield key, value
        if bound is None:
            return
        for index, buf in enumerate(bufs):  # refill what cannot move past `bound`
            if not done[index] and (not buf or buf[-1][0] == bound):
                more = list(islice(iterators[index], _CHUNK))
                buf += more
                done[index] = len(more) < _CHUNK
