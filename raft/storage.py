"""Durable Raft state: hard state and log entries in checksummed segment files, snapshots.

Layout of a data folder (docs/raft.md, "Raft log and hard state"):

    wal-00000001.log  wal-00000002.log ...   log segments, appended to in order
    snap-<index:020d>-<term:020d>.snap      snapshots (the newest two are kept)

Theory of operation:
- `save(hard_state, entries, snapshot)` is the driver's step 1 of a Ready: it appends one
  record per entry and one for the hard state to the newest segment with a single write and
  a single fsync; when it returns, everything given is durable. A hard state that differs
  only in `commit` is written without an fsync (as etcd's MustSync): a commit index lost in
  a crash is learned again from the leader, while term, vote and entries never may be lost.
- Entries are written log-structured with Raft's rule (section 5.3): an entry whose index
  is already in the log with another term replaces it and everything after it (the
  truncation of a conflicting suffix); one with the same term is already there (Log
  Matching) and changes nothing. Recovery replays the records in order with the same rule.
- A new segment starts once the newest one passes `segment_bytes`; each segment begins with
  the hard state and the snapshot mark current at its creation, so dropping older segments
  never loses them.
- A snapshot file is written to a temporary name, fsynced, renamed, and its folder fsynced;
  it takes effect only when a SNAPSHOT_MARK record naming it is durable in the log (the
  commit point). The mark goes at the start of a fresh segment, followed by copies of the
  entries the snapshot does not cover (none when its term at its index differs from the
  log's: a conflicting snapshot from the leader discards the log). Once that segment is
  durable every older segment is dead and is removed. A crash anywhere leaves either the
  old log or the snapshot fully installed: recovery applies marks in log order exactly as
  the running node did; a snapshot file with no durable mark is an orphan and is removed.
- Recovery cuts a torn tail of the newest segment and raises `CorruptionError` for damage
  anywhere else (see raft/storage_format.py for how the two are told apart).
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from raft import codec
from raft.messages import Entry, HardState, Snapshot, SnapshotMeta
from raft.storage_format import (
    RECORD_ENTRY,
    RECORD_HARD_STATE,
    RECORD_SNAPSHOT,
    RECORD_SNAPSHOT_MARK,
    CorruptionError,
    frame_records,
    record,
    scan_records,
)
from raft.storage_fs import FileSystem, RealFileSystem, WritableFile

log = logging.getLogger(__name__)

SEGMENT_RE = re.compile(r"^wal-(\d{8})\.log$")  # on disk: do not change
SNAPSHOT_RE = re.compile(r"^snap-(\d{20})-(\d{20})\.snap$")  # on disk: do not change
DEFAULT_SEGMENT_BYTES = 16 << 20  # big enough that rolling is rare, small enough to drop often
SNAPSHOTS_KEPT = 2  # the newest, and one older in case the newest is being sent to a peer


def segment_name(seq: int) -> str:
    return f"wal-{seq:08d}.log"


def snapshot_name(meta: SnapshotMeta) -> str:
    return f"snap-{meta.index:020d}-{meta.term:020d}.snap"


@dataclass
class _Segment:
    seq: int
    path: str
    max_index: int = 0  # highest entry index written into this segment, 0 if none


@dataclass
class RecoveredState:
    hard_state: HardState
    snapshot: Snapshot | None
    entries: list[Entry] = field(default_factory=list)  # the log after the snapshot


class RaftStorage:
    """The Raft log, hard state and snapshots of one node in one folder.

    Not thread-safe by itself: the driver calls `save` and `save_snapshot` from one worker
    thread at a time (an internal lock enforces it).
    Invariant: `entries` is contiguous and starts at `snapshot_index + 1`.
    """

    def __init__(self, folder: str, *, fs: FileSystem | None = None,
                 segment_bytes: int = DEFAULT_SEGMENT_BYTES, sync: bool = True) -> None:
        self.folder = folder
        self.fs: FileSystem = fs or RealFileSystem()
        self.segment_bytes = segment_bytes
        self.sync_enabled = sync
        self._lock = threading.Lock()
        self._segments: list[_Segment] = []
        self._active: WritableFile | None = None
        self.hard_state = HardState()
        self.snapshot: Snapshot | None = None
        self._snap_meta: SnapshotMeta | None = None  # the newest durable mark
        self.entries: list[Entry] = []
        self.fs.mkdir(folder)
        self._recover()

    # -- reading -----------------------------------------------------------------------

    @property
    def snapshot_index(self) -> int:
        return self._snap_meta.index if self._snap_meta else 0

    @property
    def snapshot_term(self) -> int:
        return self._snap_meta.term if self._snap_meta else 0

    @property
    def last_index(self) -> int:
        return self.entries[-1].index if self.entries else self.snapshot_index

    def recovered(self) -> RecoveredState:
        return RecoveredState(self.hard_state, self.snapshot, list(self.entries))

    def term(self, index: int) -> int | None:
        """Term of the entry at `index`, or None when it is compacted or beyond the log."""
        if index == self.snapshot_index:
            return self.snapshot_term
        pos = index - self.snapshot_index - 1
        if 0 <= pos < len(self.entries):
            return self.entries[pos].term
        return None

    def entries_between(self, lo: int, hi: int) -> list[Entry]:
        """Entries with lo <= index < hi. Requires: snapshot_index < lo <= hi <= last+1."""
        base = self.snapshot_index + 1
        if lo < base or hi > self.last_index + 1 or lo > hi:
            raise IndexError(f"entries [{lo}, {hi}) outside [{base}, {self.last_index + 1})")
        return self.entries[lo - base : hi - base]

    # -- recovery ----------------------------------------------------------------------

    def _path(self, name: str) -> str:
        return os.path.join(self.folder, name)

    def _recover(self) -> None:
        names = self.fs.listdir(self.folder)
        for name in names:
            if name.endswith(".tmp"):
                log.info("removing leftover temporary file %s", name)
                self.fs.remove(self._path(name))
        self.entries = []
        segs = sorted((int(m.group(1)), n) for n in names if (m := SEGMENT_RE.match(n)))
        for i, (seq, name) in enumerate(segs):
            seg = _Segment(seq, self._path(name))
            self._replay(seg, newest=(i == len(segs) - 1))
            self._segments.append(seg)
        if self._snap_meta is not None:
            path = self._path(snapshot_name(self._snap_meta))
            if not self.fs.exists(path):
                raise CorruptionError(path, 0, "the log installs this snapshot but it is missing")
            self.snapshot = self._read_snapshot(path)
            if self.snapshot.meta != self._snap_meta:
                raise CorruptionError(path, 0, "snapshot metadata differs from its log mark")
        for name in names:
            m = SNAPSHOT_RE.match(name)
            if m and int(m.group(1)) > self.snapshot_index:
                log.info("removing orphan snapshot %s (written, never installed)", name)
                self.fs.remove(self._path(name))
        if not self._segments:
            self._roll()
        else:
            self._active = self.fs.open_appendable(self._segments[-1].path)
        log.info("recovered %s: %s, snapshot %d, log up to %d (%d segments)", self.folder,
                 self.hard_state, self.snapshot_index, self.last_index, len(self._segments))

    def _read_snapshot(self, path: str) -> Snapshot:
        scan = scan_records(self.fs.read_file(path), path=path, tail_may_be_torn=False)
        if len(scan.records) != 1 or scan.records[0].kind != RECORD_SNAPSHOT:
            raise CorruptionError(path, 0, "a snapshot file holds exactly one snapshot record")
        try:
            return codec.decode_snapshot(scan.records[0].body)
        except codec.CodecError as exc:
            raise CorruptionError(path, 0, f"undecodable snapshot: {exc}") from None

    def _replay(self, seg: _Segment, *, newest: bool) -> None:
        data = self.fs.read_file(seg.path)
        scan = scan_records(data, path=seg.path, tail_may_be_torn=newest)
        if scan.torn_tail:
            self.fs.truncate(seg.path, scan.valid_size)
        for rec in scan.records:
            try:
                if rec.kind == RECORD_ENTRY:
                    e = codec.decode_entry(rec.body)
                    seg.max_index = max(seg.max_index, e.index)
                    if not self._apply_entry(e):
                        raise CorruptionError(seg.path, rec.offset,
                                              f"entry {e.index} leaves a gap after "
                                              f"{self.last_index}")
                elif rec.kind == RECORD_HARD_STATE:
                    self.hard_state = codec.decode_hard_state(rec.body)
                elif rec.kind == RECORD_SNAPSHOT_MARK:
                    self._apply_mark(codec.decode_snapshot_meta(rec.body))
                else:
                    raise CorruptionError(seg.path, rec.offset, "snapshot record in a segment")
            except codec.CodecError as exc:
                raise CorruptionError(seg.path, rec.offset, f"undecodable record: {exc}") from None

    def _apply_entry(self, e: Entry) -> bool:
        """Put `e` into the in-memory log with Raft's rule (section 5.3); False on a gap."""
        if e.index <= self.snapshot_index:
            return True  # covered by the snapshot (save never writes such an entry)
        if e.index > self.last_index + 1:
            return False
        if e.index <= self.last_index:
            if self.term(e.index) == e.term:
                return True  # already there (Log Matching)
            del self.entries[e.index - self.snapshot_index - 1 :]
        self.entries.append(e)
        return True

    def _apply_mark(self, meta: SnapshotMeta) -> bool:
        """Install the snapshot `meta` in the in-memory log; the same at runtime and replay.

        Returns whether the log was kept after it (False: it was discarded). A mark at or
        below the current snapshot (one repeated at a segment's start) changes nothing.
        """
        base = self.snapshot_index
        if meta.index <= base:
            return True
        keep = self.term(meta.index) == meta.term
        if keep:
            del self.entries[: meta.index - base]
        else:
            self.entries = []
        self._snap_meta = meta
        return keep

    # -- writing -----------------------------------------------------------------------

    def _roll(self, extra: list[bytes] | None = None) -> None:
        """Start a new segment that begins with the current hard state and snapshot mark
        (or with `extra`, which then starts with a new mark)."""
        seq = self._segments[-1].seq + 1 if self._segments else 1
        if self._active is not None:
            self._active.close()
        seg = _Segment(seq, self._path(segment_name(seq)))
        self._active = self.fs.open_writable(seg.path)
        head = [record(RECORD_HARD_STATE, codec.encode_hard_state(self.hard_state))]
        if extra:
            head += extra
        elif self._snap_meta is not None:
            head.append(record(RECORD_SNAPSHOT_MARK, codec.encode_snapshot_meta(self._snap_meta)))
        self._append(head)
        self._sync(self._active)
        self._segments.append(seg)
        self._sync_dir()

    def _append(self, payloads: list[bytes]) -> None:
        assert self._active is not None
        self._active.append(frame_records(payloads, self._active.size))

    def _sync(self, f: WritableFile) -> None:
        if self.sync_enabled:
            f.sync()

    def _sync_dir(self) -> None:
        if self.sync_enabled:
            self.fs.sync_dir(self.folder)

    def must_sync(self, hard_state: HardState | None, entries: Sequence[Entry],
                  snapshot: Snapshot | None = None) -> bool:
        """Whether `save` of these would fsync (and so belongs off the event loop)."""
        if not self.sync_enabled:
            return False
        if entries or snapshot is not None:
            return True
        hs = self.hard_state
        return hard_state is not None and (hard_state.term, hard_state.vote) != (hs.term, hs.vote)

    def save(self, hard_state: HardState | None, entries: Sequence[Entry],
             snapshot: Snapshot | None = None) -> None:
        """Make a Ready's hard state, entries and snapshot durable (driver step 1).

        Requires: entries contiguous, the first at most last_index + 1 (after the snapshot).
        """
        with self._lock:
            if snapshot is not None:
                self._install_snapshot(snapshot)
            # Entries a snapshot in this Ready already covers are not written (replay would
            # read them as a truncation).
            entries = [e for e in entries if e.index > self.snapshot_index]
            if entries:
                first = entries[0].index
                if first > self.last_index + 1:
                    raise ValueError(f"entries start at {first}, after last {self.last_index}")
            payloads = []
            seg = self._segments[-1]
            for e in entries:
                payloads.append(record(RECORD_ENTRY, codec.encode_entry(e)))
                self._apply_entry(e)
                seg.max_index = max(seg.max_index, e.index)
            must_sync = bool(entries)
            if hard_state is not None and hard_state != self.hard_state:
                payloads.append(record(RECORD_HARD_STATE, codec.encode_hard_state(hard_state)))
                old, self.hard_state = self.hard_state, hard_state
                must_sync |= (old.term, old.vote) != (hard_state.term, hard_state.vote)
            if payloads:
                self._append(payloads)
                assert self._active is not None
                if must_sync:
                    self._sync(self._active)
                if self._active.size >= self.segment_bytes:
                    self._roll()

    def _write_snapshot_file(self, snapshot: Snapshot) -> None:
        final = self._path(snapshot_name(snapshot.meta))
        tmp = final + ".tmp"
        f = self.fs.open_writable(tmp)
        try:
            f.append(frame_records([record(RECORD_SNAPSHOT, codec.encode_snapshot(snapshot))], 0))
            self._sync(f)
        finally:
            f.close()
        self.fs.rename(tmp, final)
        self._sync_dir()

    def _install_snapshot(self, snapshot: Snapshot) -> None:
        """Make `snapshot` the log's base (from the leader, or of the local state machine).

        The file first; then a fresh segment holding its mark (the commit point) and the
        entries after it that the log keeps; then the older segments go.
        """
        meta = snapshot.meta
        if meta.index <= self.snapshot_index:
            return
        self._write_snapshot_file(snapshot)
        keep = self.term(meta.index) == meta.term
        suffix = self.entries[meta.index - self.snapshot_index :] if keep else []
        self._roll(extra=[record(RECORD_SNAPSHOT_MARK, codec.encode_snapshot_meta(meta))]
                   + [record(RECORD_ENTRY, codec.encode_entry(e)) for e in suffix])
        self._apply_mark(meta)
        self._segments[-1].max_index = suffix[-1].index if suffix else meta.index
        self.snapshot = snapshot
        dead = self._segments[:-1]
        for seg in dead:
            log.debug("removing segment %s (snapshot %d)", seg.path, meta.index)
            self.fs.remove(seg.path)
        self._segments = self._segments[-1:]
        snaps = sorted(n for n in self.fs.listdir(self.folder) if SNAPSHOT_RE.match(n))
        for name in snaps[:-SNAPSHOTS_KEPT]:
            self.fs.remove(self._path(name))
        if dead or len(snaps) > SNAPSHOTS_KEPT:
            self._sync_dir()

    def save_snapshot(self, snapshot: Snapshot) -> None:
        """A snapshot of the local state machine at an applied index: compacts the log."""
        with self._lock:
            if snapshot.meta.index <= self.snapshot_index:
                return
            if snapshot.meta.index > self.last_index:
                raise ValueError(f"snapshot at {snapshot.meta.index} is beyond the log "
                                 f"(last {self.last_index})")
            self._install_snapshot(snapshot)

    def close(self) -> None:
        with self._lock:
            if self._active is not None:
                self._active.close()
                self._active = None
