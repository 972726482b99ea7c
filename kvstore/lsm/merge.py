"""K-way merge of internal-order entry streams, and the view a reader sees of it.

Internal order: user key ascending (plain bytes order), then seq descending (newest
first). Every source (memtables, SSTables, levels) yields entries
`(user_key, seq, kind, value)` in that order; `merge_entries` interleaves them keeping
the order, and `visible` turns the merged stream into what a reader at snapshot `seq`
sees: for each user key the newest version with seq <= snapshot, tombstones hidden.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from itertools import chain

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


def merge_visible(
    sources: Iterable[Iterable[Entry]], snapshot_seq: int, end: bytes | None = None
) -> Iterator[tuple[bytes, bytes]]:
    """`visible(merge_entries(sources), snapshot_seq, end)` in one generator (a scan's
    hot loop: one frame per key instead of three)."""
    iterators = [iter(s) for s in sources]
    heap: list[tuple[bytes, int, int, Entry]] = []
    for index, it in enumerate(iterators):
        for entry in it:
            heap.append((entry[0], -entry[1], index, entry))
            break
    heapq.heapify(heap)
    replace = heapq.heapreplace
    pop = heapq.heappop
    previous: bytes | None = None
    while len(heap) > 1:
        key, negseq, index, entry = heap[0]
        following = next(iterators[index], None)
        if following is None:
            pop(heap)
        else:
            replace(heap, (following[0], -following[1], index, following))
        if key == previous:
            continue
        if end is not None and key >= end:
            return
        if -negseq > snapshot_seq:
            continue
        previous = key
        if entry[2] == KIND_VALUE:
            yield key, entry[3]
    if not heap:
        return
    last = heap[0]
    for key, seq, kind, value in chain((last[3],), iterators[last[2]]):
        if key == previous:
            continue
        if end is not None and key >= end:
            return
        if seq > snapshot_seq:
            continue
        previous = key
        if kind == KIND_VALUE:
            yield key, value
