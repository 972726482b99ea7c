"""Versions: which SSTables are live at which level, and the edits between versions.

Theory of operation
- A `Version` is an immutable snapshot of the table layout. Level 0 holds flushed
  memtables, newest first; their key ranges may overlap. Each level >= 1 holds tables
  with disjoint key ranges sorted by key, so a point read looks at one table per level.
- A `VersionEdit` is the difference between two versions (tables added and removed per
  level, plus the counters the manifest records). `apply_edit` builds the next version;
  the manifest stores only edits (see manifest.py and docs/formats.md#manifest).
- Versions are reference counted by the engine (`refs`): the current version holds one,
  each open scan or in-flight read holds one. A table file is deleted only when no live
  version lists it (`live_files` in the engine), so an iterator never loses its files.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class FileMeta:
    """One SSTable: its number (name), size and the range of keys and seqs it holds."""

    number: int
    file_size: int
    smallest: bytes
    largest: bytes
    min_seq: int
    max_seq: int
    num_entries: int

    def overlaps(self, start: bytes | None, end: bytes | None) -> bool:
        """True if the table may hold a key in [start, end] (both inclusive, None open)."""
        if start is not None and self.largest < start:
            return False
        return not (end is not None and self.smallest > end)


@dataclass(slots=True)
class VersionEdit:
    """Changes from one version to the next, plus counters to persist with them."""

    log_number: int | None = None
    next_file_number: int | None = None
    last_seq: int | None = None
    compact_pointers: list[tuple[int, bytes]] = field(default_factory=list)
    deleted: list[tuple[int, int]] = field(default_factory=list)  # (level, number)
    added: list[tuple[int, FileMeta]] = field(default_factory=list)


class Version:
    """An immutable table layout. `levels[0]` newest first; deeper levels by key."""

    __slots__ = ("_largest", "levels", "readers", "refs", "search_order")

    def __init__(self, levels: list[list[FileMeta]]) -> None:
        self.levels: tuple[tuple[FileMeta, ...], ...] = tuple(tuple(files) for files in levels)
        self._largest = [[f.largest for f in files] for files in self.levels]
        # What a point read walks, in the order it must try the tables: (level, largest
        # keys, tables) per L0 table (newest first; each is its own one-table "level",
        # since L0 tables overlap), then per non-empty level >= 1. In each, the table that
        # may hold a key is at bisect_left(largest, key) if its smallest key <= key.
        self.search_order = [(0, [f.largest], (f,)) for f in self.levels[0]]
        self.search_order += [(level, self._largest[level], files)
                              for level, files in enumerate(self.levels) if level and files]
        self.refs = 0
        self.readers: list[None] = []  # point reads in flight (engine._pin), lock-free

    @classmethod
    def empty(cls, num_levels: int) -> Version:
        return cls([[] for _ in range(num_levels)])

    def files(self) -> Iterator[FileMeta]:
        for files in self.levels:
            yield from files

    def numbers(self) -> set[int]:
        return {f.number for f in self.files()}

    def level_bytes(self, level: int) -> int:
        return sum(f.file_size for f in self.levels[level])

    def tables_for_key(self, key: bytes) -> Iterator[tuple[int, FileMeta]]:
        """(level, table) pairs that may hold `key`, in the order a read must try them
        (newest data first): every overlapping L0 table newest first, then at most one
        table per deeper level."""
        for f in self.levels[0]:
            if f.smallest <= key <= f.largest:
                yield 0, f
        for level in range(1, len(self.levels)):
            largest = self._largest[level]
            if not largest:
                continue
            i = bisect.bisect_left(largest, key)
            if i < len(largest):
                f = self.levels[level][i]
                if f.smallest <= key:
                    yield level, f

    def candidates(self, key: bytes) -> list[tuple[int, FileMeta]]:
        """tables_for_key as a list, from `search_order` (the engine's get walks that
        inline)."""
        out = []
        for level, largest, files in self.search_order:
            i = bisect.bisect_left(largest, key)
            if i < len(largest):
                f = files[i]
                if f.smallest <= key:
                    out.append((level, f))
        return out

    def overlapping(self, level: int, start: bytes | None, end: bytes | None) -> list[FileMeta]:
        """Tables of `level` whose range meets [start, end] (inclusive; None is open).
        At level 0 the range grows to cover every overlapping table's range, because
        L0 tables overlap each other (LevelDB's GetOverlappingInputs)."""
        files = [f for f in self.levels[level] if f.overlaps(start, end)]
        if level != 0 or not files:
            return files
        while True:
            low = min(f.smallest for f in files)
            high = max(f.largest for f in files)
            grown = [f for f in self.levels[0] if f.overlaps(low, high)]
            if len(grown) == len(files):
                return grown
            files = grown

    def key_may_exist_below(self, level: int, key: bytes) -> bool:
        """True if a table at a level deeper than `level` may hold `key` (so a tombstone
        for it written to `level` must be kept)."""
        for deeper in range(level + 1, len(self.levels)):
            largest = self._largest[deeper]
            i = bisect.bisect_left(largest, key)
            if i < len(largest) and self.levels[deeper][i].smallest <= key:
                return True
        return False

    def check(self) -> None:
        """Assert the layout invariants. O(n)."""
        numbers = [f.number for f in self.files()]
        assert len(numbers) == len(set(numbers)), "a table listed twice"
        l0 = [f.number for f in self.levels[0]]
        assert l0 == sorted(l0, reverse=True), "L0 not newest first"
        for level, files in enumerate(self.levels):
            for f in files:
                assert f.smallest <= f.largest, (level, f)
            if level == 0:
                continue
            for a, b in itertools.pairwise(files):
                assert a.largest < b.smallest, f"L{level} tables {a.number} and {b.number} overlap"


def apply_edit(base: Version, edit: VersionEdit) -> Version:
    """The version `edit` makes of `base`. Raises ValueError if the edit removes a table
    that is not there or breaks the disjointness of a level >= 1."""
    num_levels = len(base.levels)
    deleted = set(edit.deleted)
    levels: list[list[FileMeta]] = []
    for level, files in enumerate(base.levels):
        kept = [f for f in files if (level, f.number) not in deleted]
        levels.append(kept)
        deleted -= {(level, f.number) for f in files}
    if deleted:
        raise ValueError(f"edit deletes tables not in the version: {sorted(deleted)}")
    for level, meta in edit.added:
        if not 0 <= level < num_levels:
            raise ValueError(f"edit adds table {meta.number} at level {level}")
        levels[level].append(meta)
    levels[0].sort(key=lambda f: f.number, reverse=True)
    for files in levels[1:]:
        files.sort(key=lambda f: f.smallest)
        for a, b in itertools.pairwise(files):
            if a.largest >= b.smallest:
                raise ValueError(f"tables {a.number} and {b.number} overlap in a level >= 1")
    return Version(levels)
