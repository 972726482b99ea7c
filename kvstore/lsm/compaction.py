"""Leveled compaction: which tables to merge next, and how entries are dropped.

Theory of operation (LevelDB's leveled compaction)
- Level 0 is compacted when it holds `l0_compaction_trigger` tables (its tables overlap,
  so every L0 table costs each read); level n >= 1 when its bytes exceed
  `level1_bytes * ratio ** (n - 1)`. The level with the highest score (count or size over
  its budget) goes first; a score below 1 means no work.
- Seek compaction (LevelDB's allowed_seeks): a read that consults two or more tables
  charges the first one it consulted in vain; a table charged `allowed_seeks` times
  (see there: one per SEEK_BYTES of its size, at least 100) costs reads more than
  compacting it would, so it is merged one level down once no size compaction is due.
- Idle compaction (this engine's own rule, background.py): once writes pause for
  `idle_compaction_ms` with no size or seek compaction due, every L0 table is merged
  into level 1 (pick_range_compaction over L0), since each L0 table costs every point
  read a filter probe for as long as it stays.
- Inputs: at L0 the oldest table and every L0 table overlapping it; at level n >= 1 the
  first table after the level's compact pointer (round robin over the key space). Then
  every table of level n + 1 that overlaps their key range. A single input with nothing
  below to merge with is moved down without rewriting (a trivial move).
- Merging keeps, for each user key, the newest version and every older version that some
  live snapshot can still see (`smallest_snapshot`: the oldest live snapshot, or the last
  sequence number when there is none). A tombstone is dropped only if no snapshot needs
  it and no deeper level may hold an older version of the key (the bottom for that key).
- Outputs are cut near `table_file_bytes`, only between user keys, so each level >= 1
  keeps disjoint key ranges.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from .coding import KIND_DELETE
from .options import Options
from .version import FileMeta, Version, VersionEdit

Entry = tuple[bytes, int, int, bytes]


@dataclass(slots=True)
class Compaction:
    """One compaction job: `inputs` at `level` merged with `overlaps` at level + 1."""

    level: int
    inputs: list[FileMeta]
    overlaps: list[FileMeta]
    # Merge in the compaction thread even with compaction_process (background.py).
    in_thread: bool = False

    @property
    def output_level(self) -> int:
        return self.level + 1

    @property
    def is_trivial_move(self) -> bool:
        return len(self.inputs) == 1 and not self.overlaps

    def all_inputs(self) -> list[tuple[int, FileMeta]]:
        return [(self.level, f) for f in self.inputs] + [
            (self.level + 1, f) for f in self.overlaps
        ]

    def input_bytes(self) -> int:
        return sum(f.file_size for _, f in self.all_inputs())

    def key_range(self) -> tuple[bytes, bytes]:
        files = self.inputs + self.overlaps
        return min(f.smallest for f in files), max(f.largest for f in files)

    def edit(self, outputs: list[FileMeta]) -> VersionEdit:
        """The version edit that replaces the inputs by `outputs` at the output level."""
        edit = VersionEdit(deleted=[(level, f.number) for level, f in self.all_inputs()])
        edit.added = [(self.output_level, f) for f in outputs]
        if self.level > 0:
            edit.compact_pointers.append((self.level, max(f.largest for f in self.inputs)))
        return edit


def level_scores(version: Version, options: Options) -> list[float]:
    """Score per level below the last: >= 1 means the level needs compaction."""
    scores = [len(version.levels[0]) / options.l0_compaction_trigger]
    for level in range(1, len(version.levels) - 1):
        scores.append(version.level_bytes(level) / options.max_bytes_for_level(level))
    return scores


def pick_compaction(
    version: Version, options: Options, compact_pointers: dict[int, bytes]
) -> Compaction | None:
    """The most urgent compaction, or None if every level is within its budget."""
    scores = level_scores(version, options)
    level = max(range(len(scores)), key=scores.__getitem__)
    if scores[level] < 1:
        return None
    files = version.levels[level]
    if level == 0:
        oldest = files[-1]
        inputs = version.overlapping(0, oldest.smallest, oldest.largest)
    else:
        pointer = compact_pointers.get(level)
        first = next((f for f in files if pointer is None or f.largest > pointer), files[0])
        inputs = [first]
    return _with_overlaps(version, level, inputs)


# Bytes of a table's size per wasted read it is allowed (LevelDB's allowed_seeks rule
# with this engine's costs). LevelDB's derivation: a seek costs 10 ms, and compacting
# 1 MB of a level costs ~25 MB of I/O (250 ms), so one seek ~ compaction of 40 KB; it
# allows one per 16 KiB. Here a read in vain is a block from the page cache (~2.5 us of
# CPU: slice, checksum, search) and a merge runs at ~15 MB/s of input; compacting 1 MB
# of a level merges ~11 MB of the next (~0.75 s) ~ 300,000 wasted reads, so one wasted
# read ~ compaction of 3 bytes. Measured at 1M keys with LevelDB's 16 KiB rule: random
# reads merged the 12 MB level-0 table left by a bulk load (and 40 MB of level 1 with it)
# after ~100k reads, 4.5 s of merging inside the read workload, to save each later read
# one filter probe (~0.4 us) and the 1% of block reads its filter passes in vain.
# RocksDB dropped seek compaction for reasons of this kind.
SEEK_BYTES = 4


def allowed_seeks(meta: FileMeta) -> int:
    """Wasted reads a table may cause before it is compacted (LevelDB's rule, with
    SEEK_BYTES for this engine's costs; at least 100, for tiny tables)."""
    return max(100, meta.file_size // SEEK_BYTES)


def pick_seek_compaction(version: Version, level: int, number: int) -> Compaction | None:
    """Compaction of table `number` at `level` (and, at L0, the tables overlapping it),
    or None if it is gone or at the last level."""
    if level >= len(version.levels) - 1:
        return None
    meta = next((f for f in version.levels[level] if f.number == number), None)
    if meta is None:
        return None
    inputs = version.overlapping(0, meta.smallest, meta.largest) if level == 0 else [meta]
    return _with_overlaps(version, level, inputs)


def pick_range_compaction(
    version: Version, level: int, start: bytes | None, end: bytes | None
) -> Compaction | None:
    """A compaction of every table of `level` meeting [start, end] (None: open), or None
    if there is none. `level` must be below the last level."""
    inputs = version.overlapping(level, start, end)
    if not inputs:
        return None
    return _with_overlaps(version, level, inputs)


def _with_overlaps(version: Version, level: int, inputs: list[FileMeta]) -> Compaction:
    low = min(f.smallest for f in inputs)
    high = max(f.largest for f in inputs)
    overlaps = version.overlapping(level + 1, low, high)
    if level > 0 and overlaps:
        # Widen the inputs to every table of `level` inside the combined range, so no
        # table left behind at `level` overlaps the outputs (keeps levels disjoint).
        low = min(low, *(f.smallest for f in overlaps))
        high = max(high, *(f.largest for f in overlaps))
        inputs = version.overlapping(level, low, high)
        overlaps = version.overlapping(level + 1, min(f.smallest for f in inputs),
                                       max(f.largest for f in inputs))
    return Compaction(level, list(inputs), list(overlaps))


def drop_obsolete(
    entries: Iterable[Entry],
    smallest_snapshot: int,
    may_exist_below: Callable[[bytes], bool],
) -> Iterator[Entry]:
    """The entries a compaction must keep (LevelDB's DoCompactionWork rules).

    Requires: `entries` in internal order. A version is dropped if a newer version of
    the same key is visible to every snapshot (seq <= smallest_snapshot); a tombstone is
    dropped if it is visible to every snapshot and `may_exist_below(key)` is False.
    """
    current: bytes | None = None
    last_seq = -1  # seq of the previous entry of `current`; -1: none yet
    for entry in entries:
        key, seq, kind, _ = entry
        if key != current:
            current = key
            last_seq = -1
        hidden = last_seq != -1 and last_seq <= smallest_snapshot
        last_seq = seq
        if hidden:
            continue
        if kind == KIND_DELETE and seq <= smallest_snapshot and not may_exist_below(key):
            continue
        yield entry
