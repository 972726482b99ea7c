"""The Raft log as the core sees it: a snapshot, the entries after it, and three cursors.

Theory of operation. The log is `snapshot` (everything up to `snap_index`, compacted) and
`entries[k]` holding index `snap_index + 1 + k`. Cursors:

    snap_index <= applied <= committed <= last_index      (Invariant, see check())
    stable <= last_index: entries up to `stable` were handed to the driver in a Ready and
    acknowledged by advance(), i.e. they are durable.

Entries are only ever removed from the tail by `maybe_append` when they conflict with the
leader's (never at or below `committed`: Raft §5.3 guarantees committed entries match), or
from the head by `compact` / `restore`. The log also knows which of its entries are
membership changes, so the core can use the latest configuration in its log (dissertation
§4.1: a server uses the latest configuration in its log, committed or not).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from raft.messages import ConfChange, ConfState, Entry, EntryType, SnapshotMeta

log = logging.getLogger(__name__)


class RaftLog:
    """In-memory log; every method is O(1) or O(entries touched) unless stated otherwise."""

    def __init__(self, snapshot: SnapshotMeta, entries: Sequence[Entry] = (), committed: int = 0):
        """Requires: entries are contiguous and start at snapshot.index + 1."""
        self.snapshot = snapshot
        self.entries: list[Entry] = []
        self.conf_indexes: list[int] = []  # indexes of CONF_CHANGE entries, ascending
        self.conf_version = 0  # bumped whenever the set of conf entries changes
        self._append(entries)
        self.stable = self.last_index  # what we were given was restored from disk
        self.committed = max(min(committed, self.last_index), snapshot.index)
        self.applied = snapshot.index
        self.check()

    # --- positions -------------------------------------------------------------------
    @property
    def snap_index(self) -> int:
        return self.snapshot.index

    @property
    def first_index(self) -> int:
        return self.snapshot.index + 1

    @property
    def last_index(self) -> int:
        return self.snapshot.index + len(self.entries)

    @property
    def last_term(self) -> int:
        return self.entries[-1].term if self.entries else self.snapshot.term

    def term(self, index: int) -> int | None:
        """Term of the entry at index; None when compacted away or beyond the end."""
        if index == self.snapshot.index:
            return self.snapshot.term
        off = index - self.snapshot.index - 1
        if 0 <= off < len(self.entries):
            return self.entries[off].term
        return None

    def match_term(self, index: int, term: int) -> bool:
        return self.term(index) == term

    def is_up_to_date(self, last_term: int, last_index: int) -> bool:
        """Raft §5.4.1: a candidate's log at least as up-to-date as ours."""
        return last_term > self.last_term or (
            last_term == self.last_term and last_index >= self.last_index
        )

    def slice(self, lo: int, hi: int, max_n: int | None = None) -> tuple[Entry, ...]:
        """Entries with lo <= index < hi (at most max_n). Requires: first_index <= lo."""
        assert lo >= self.first_index, (lo, self.first_index)
        off = self.snapshot.index + 1
        end = hi - off if max_n is None else min(hi - off, lo - off + max_n)
        return tuple(self.entries[lo - off : end])

    def unstable_entries(self) -> tuple[Entry, ...]:
        return tuple(self.entries[self.stable - self.snapshot.index :])

    def find_conflict_by_term(self, index: int, term: int) -> int:
        """Largest j <= index whose term is <= term (or the snapshot index): fast back-off."""
        j = min(index, self.last_index)
        while j > self.snapshot.index:
            t = self.term(j)
            if t is not None and t <= term:
                return j
            j -= 1
        return self.snapshot.index

    # --- mutation --------------------------------------------------------------------
    def _append(self, entries: Iterable[Entry]) -> None:
        for e in entries:
            assert e.index == self.last_index + 1, (e.index, self.last_index)
            self.entries.append(e)
            if e.type == EntryType.CONF_CHANGE:
                self.conf_indexes.append(e.index)
                self.conf_version += 1

    def _truncate_from(self, index: int) -> None:
        """Drop entries with index >= index. Requires: index > committed."""
        assert index > self.committed, (index, self.committed)
        del self.entries[index - self.snapshot.index - 1 :]
        self.stable = min(self.stable, index - 1)
        while self.conf_indexes and self.conf_indexes[-1] >= index:
            self.conf_indexes.pop()
            self.conf_version += 1

    def append(self, entries: Sequence[Entry]) -> None:
        """The leader's own appends. Requires: entries continue the log."""
        self._append(entries)

    def maybe_append(
        self, prev_index: int, prev_term: int, entries: Sequence[Entry]
    ) -> int | None:
        """The follower side of AppendEntries (Raft §5.3).

        Returns the index of the last entry the message vouches for (prev_index +
        len(entries)), or None when the consistency check fails. Existing entries that
        conflict with the new ones are deleted with everything after them; entries we
        already hold are left alone (so a stale, reordered message never truncates).
        """
        if not self.match_term(prev_index, prev_term):
            return None
        for k, e in enumerate(entries):
            t = self.term(e.index)
            if t == e.term:
                continue
            if t is not None:  # a conflict (Raft §5.3): drop it and all that follows
                self._truncate_from(e.index)
            self._append(entries[k:])
            break
        return prev_index + len(entries)

    def commit_to(self, index: int) -> bool:
        """Raise committed to index (never lowers it). Requires: index <= last_index."""
        if index > self.committed:
            assert index <= self.last_index, (index, self.last_index)
            self.committed = index
            return True
        return False

    def stable_to(self, index: int, term: int) -> None:
        """The driver persisted entries up to (index, term)."""
        if self.term(index) == term and index > self.stable:
            self.stable = index

    def applied_to(self, index: int) -> None:
        assert self.applied <= index <= self.committed, (self.applied, index, self.committed)
        self.applied = index

    def compact(self, index: int, conf_state: ConfState) -> SnapshotMeta:
        """Drop entries up to index, now covered by a snapshot.

        Requires: snap_index < index <= applied.
        """
        assert self.snapshot.index < index <= self.applied, (index, self.applied)
        term = self.term(index)
        assert term is not None
        del self.entries[: index - self.snapshot.index]
        self.snapshot = SnapshotMeta(index, term, conf_state)
        while self.conf_indexes and self.conf_indexes[0] <= index:
            self.conf_indexes.pop(0)
        return self.snapshot

    def restore(self, meta: SnapshotMeta) -> None:
        """Replace the whole log by a snapshot from the leader. Requires: meta.index > committed."""
        assert meta.index > self.committed, (meta.index, self.committed)
        self.snapshot = meta
        self.entries = []
        self.conf_indexes = []
        self.conf_version += 1
        # The Ready that carries the snapshot restores the state machine to meta.index.
        self.committed = self.stable = self.applied = meta.index

    # --- configuration ---------------------------------------------------------------
    def conf_state_at(self, index: int) -> ConfState:
        """The configuration in force after the entry at index. O(conf entries)."""
        conf = self.snapshot.conf_state
        for i in self.conf_indexes:
            if i > index:
                break
            conf = decode_conf_change(self.entries[i - self.snapshot.index - 1]).apply(conf)
        return conf

    def last_conf_index(self) -> int:
        return self.conf_indexes[-1] if self.conf_indexes else 0

    # --- invariants ------------------------------------------------------------------
    def check(self) -> None:
        """O(1): the cursor invariants and the ends of the entry array."""
        assert self.snapshot.index <= self.applied <= self.committed <= self.last_index, (
            self.snapshot.index,
            self.applied,
            self.committed,
            self.last_index,
        )
        assert self.stable <= self.last_index
        if self.entries:
            assert self.entries[0].index == self.snapshot.index + 1
            assert self.entries[-1].index == self.last_index
            assert self.entries[0].term >= self.snapshot.term

    def check_deep(self) -> None:
        """O(n): check() plus contiguous indexes and non-decreasing terms."""
        self.check()
        prev = self.snapshot.term
        for k, e in enumerate(self.entries):
            assert e.index == self.snapshot.index + 1 + k
            assert e.term >= prev
            prev = e.term
        assert self.conf_indexes == [
            e.index for e in self.entries if e.type == EntryType.CONF_CHANGE
        ]


def decode_conf_change(entry: Entry) -> ConfChange | _NoChange:
    try:
        return ConfChange.from_bytes(entry.data)
    except ValueError as exc:
        # Every node decodes the same bytes, so every node ignores the same entry.
        log.warning("ignoring undecodable conf change at %d: %s", entry.index, exc)
        return _NoChange()


class _NoChange:
    def apply(self, conf: ConfState) -> ConfState:
        return conf
