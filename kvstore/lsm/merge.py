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
from operator import eq, itemgetter

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


_CHUNK = 1024  # entries buffered per source per round of merge_visible_runs
_PLAIN = {2}  # entry widths of a batch made of plain runs only
_FULL = {4}  # ... of internal entries only


def merge_visible(
    sources: Iterable[Iterable[Entry]], snapshot_seq: int, end: bytes | None = None
) -> Iterator[tuple[bytes, bytes]]:
    """What `visible(merge_entries(sources), snapshot_seq, end)` yields (see
    merge_visible_runs, which this feeds with chunks of each source)."""
    runs = [_chunks(iter(s)) for s in sources]
    for out in merge_visible_runs(runs, snapshot_seq, end):
        yield from out


def _chunks(it: Iterator[Entry]) -> Iterator[list[Entry]]:
    while chunk := list(islice(it, _CHUNK)):
        yield chunk


def merge_visible_runs(
    sources: Iterable[Iterable[list[Entry]]], snapshot_seq: int, end: bytes | None = None
) -> Iterator[list[tuple[bytes, bytes]]]:
    """Lists of the (key, value) pairs `visible(merge_entries(...), snapshot_seq, end)`
    yields, in order, from sources that each yield runs (non-empty lists of entries,
    internal order across runs; e.g. one table block per run). A run may be plain: a
    list of (key, value) pairs, each standing for an entry that is a value visible at
    `snapshot_seq` (a source knows that of a whole table block or memtable chunk, and
    then builds no per-entry tuple of four). Each round buffers at
    least _CHUNK entries per source, takes from every source the entries below the
    smallest last key buffered by a source that may have more, sorts them by user key with
    one C-level stable sort (timsort merges the sorted runs; skipped with one source) and
    filters them in bulk: a list comprehension when no entry is newer than the snapshot
    (the common case), the per-entry rules otherwise.

    Requires (the LSM invariant the engine's scan provides): sources ordered newest
    first, i.e. for any user key every version in an earlier source is newer than every
    version in a later one; then the stable sort by key alone yields internal order."""
    iterators = [iter(s) for s in sources]
    bufs: list[list[Entry]] = []
    done: list[bool] = []
    for it in iterators:
        buf: list[Entry] = []
        finished = _fill(buf, it)
        bufs.append(buf)
        done.append(finished)
    first_key = itemgetter(0)
    second = itemgetter(1)
    single = len(bufs) == 1
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
                if batch:
                    batch += buf
                else:
                    batch = buf
                bufs[index] = []
            elif cut:
                batch += buf[:cut]
                del buf[:cut]
        if batch:
            if not single:
                batch.sort(key=first_key)
            stop = False
            if end is not None and batch[-1][0] >= end:
                batch = batch[:bisect_left(batch, end, key=first_key)]
                stop = True
            if batch:
                widths = set(map(len, batch))
                if widths == _PLAIN:
                    # Only plain runs: every entry is a value the snapshot sees, so an
                    # entry is the newest version of its key iff the entry before it
                    # has another key; usually no key repeats and the batch is the out.
                    keys = [previous]
                    keys += map(first_key, batch)
                    if any(map(eq, keys, islice(keys, 1, None))):
                        out = [e for e, p in zip(batch, keys, strict=False) if e[0] != p]
                    else:
                        out = batch
                    previous = keys[-1]
                elif widths == _FULL and max(map(second, batch)) <= snapshot_seq:
                    # Every entry is visible to the snapshot: an entry is the newest
                    # version of its key iff the entry before it has another key.
                    keys = [previous]
                    keys += map(first_key, batch)
                    out = [(k, v) for (k, _, t, v), p in zip(batch, keys, strict=False)
                           if t == KIND_VALUE and k != p]
                    previous = keys[-1]
                else:
                    out = []
                    for entry in batch:
                        key = entry[0]
                        if key == previous:
                            continue
                        if len(entry) == 2:  # from a plain run: a visible value
                            previous = key
                            out.append(entry)
                            continue
                        _, seq, kind, value = entry
                        if seq > snapshot_seq:
                            continue
                        previous = key
                        if kind == KIND_VALUE:
                            out.append((key, value))
                if out:
                    yield out
            if stop:
                return
        if bound is None:
            return
        for index, buf in enumerate(bufs):  # refill what cannot move past `bound`
            if not done[index] and (not buf or buf[-1][0] == bound):
                done[index] = _fill(buf, iterators[index])


def _fill(buf: list[Entry], runs: Iterator[list[Entry]]) -> bool:
    """Append runs to `buf` until it holds at least _CHUNK more entries; True if `runs`
    is exhausted."""
    want = len(buf) + _CHUNK
    for run in runs:
        buf += run
        if len(buf) >= want:
            return False
    return True
