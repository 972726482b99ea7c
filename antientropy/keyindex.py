"""Which keys each segment holds, in memory, so an exchange reads only the keys of the
segments that differ instead of scanning whole partitions (Riak keeps the same index on
disk, per segment, beside its trees).

Per partition: `{key: segment}`, exact for the partitions in it (`has(p)`). It follows
the store through the same change feed as the trees (`note`), and is filled by a scan of
the partition (`begin` ... `finish`): changes noted between `begin` and `finish` are
replayed over what the scan saw, as trees.py does for tree rebuilds, so the index is
exact when `finish` installs it. Nothing is saved: after a restart a background scan
rebuilds it (an exchange of a partition not indexed yet scans that partition instead).

Cost: about 100 bytes of memory per key (the key, an int and a dict slot); at 10 million
keys per node, 1 GB, when an on-disk index would be the better trade.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable


class KeyIndex:
    """partition -> {key: segment} for the partitions whose index is exact."""

    def __init__(self, segment_of: Callable[[bytes], int]) -> None:
        self._segment_of = segment_of
        self._keys: dict[int, dict[bytes, int]] = {}
        self._pending: dict[int, dict[bytes, bool]] = {}

    def has(self, partition: int) -> bool:
        return partition in self._keys

    def empty(self, partitions: Iterable[int]) -> None:
        """Partitions known to hold no key: their (empty) index is exact."""
        for p in partitions:
            self._keys[p] = {}

    def begin(self, partition: int) -> None:
        """A scan of `partition` starts: note changes until `finish`."""
        self._keys.pop(partition, None)
        self._pending[partition] = {}

    def abort(self, partition: int) -> None:
        self._pending.pop(partition, None)

    def finish(self, partition: int, scanned: dict[bytes, int]) -> None:
        """Install what the scan found, with the changes noted meanwhile replayed."""
        for key, present in self._pending.pop(partition, {}).items():
            if present:
                scanned[key] = self._segment_of(key)
            else:
                scanned.pop(key, None)
        self._keys[partition] = scanned

    def note(self, partition: int, key: bytes, present: bool) -> None:
        """`key` of `partition` now exists (present) or is gone. O(1)."""
        keys = self._keys.get(partition)
        if keys is not None:
            if present:
                keys[key] = self._segment_of(key)
            else:
                keys.pop(key, None)
        elif partition in self._pending:
            self._pending[partition][key] = present

    def keys_in(self, partition: int, segments: set[int]) -> list[bytes]:
        """The keys of `segments` of an indexed partition. O(keys of the partition)."""
        return [k for k, s in self._keys[partition].items() if s in segments]

    def size(self) -> int:
        return sum(len(keys) for keys in self._keys.values())


__all__ = ["KeyIndex"]
