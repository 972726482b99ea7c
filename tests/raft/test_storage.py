"""Raft storage on real files: durability of hard state and entries (Raft section 5.1, "updated
on stable storage before responding to RPCs"), suffix truncation (section 5.3), snapshots and
compaction (section 7), recovery from a torn tail and from a crash that loses unsynced data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from raft.messages import ConfState, Entry, HardState, Snapshot, SnapshotMeta
from raft.storage import RaftStorage, segment_name
from raft.storage_format import (
    BLOCK_SIZE,
    HEADER_SIZE,
    RECORD_ENTRY,
    CorruptionError,
    frame_records,
    mask,
    record,
    scan_records,
    unmask,
)
from raft.storage_fs import FaultInjectionFileSystem


def ents(lo: int, hi: int, term: int = 1) -> list[Entry]:
    return [Entry(term=term, index=i, data=f"cmd{i}".encode()) for i in range(lo, hi + 1)]


def snap(index: int, term: int, data: bytes = b"state") -> Snapshot:
    return Snapshot(SnapshotMeta(index, term, ConfState(voters=frozenset({1, 2, 3}))), data)


def test_hard_state_and_entries_survive_reopen(tmp_path: Path) -> None:
    s = RaftStorage(str(tmp_path))
    s.save(HardState(term=2, vote=3, commit=1), ents(1, 5))
    s.close()
    r = RaftStorage(str(tmp_path))
    assert r.hard_state == HardState(2, 3, 1)
    assert r.entries == ents(1, 5)
    assert r.last_index == 5 and r.term(3) == 1


def test_an_entry_already_in_the_log_changes_nothing(tmp_path: Path) -> None:
    """§5.3: only a conflicting entry (same index, other term) truncates the log."""
    s = RaftStorage(str(tmp_path))
    s.save(HardState(1, 1, 0), ents(1, 6, term=1))
    s.save(None, ents(3, 3, term=1))
    assert s.entries == ents(1, 6)
    s.close()
    assert RaftStorage(str(tmp_path)).entries == ents(1, 6)


def test_conflicting_suffix_is_truncated_and_stays_truncated(tmp_path: Path) -> None:
    """Section 5.3: a conflicting entry and all that follow it are deleted."""
    s = RaftStorage(str(tmp_path))
    s.save(HardState(1, 1, 0), ents(1, 6, term=1))
    s.save(HardState(2, 2, 0), ents(4, 4, term=2))
    assert [(e.index, e.term) for e in s.entries] == [(1, 1), (2, 1), (3, 1), (4, 2)]
    s.close()
    r = RaftStorage(str(tmp_path))
    assert [(e.index, e.term) for e in r.entries] == [(1, 1), (2, 1), (3, 1), (4, 2)]


def test_a_gap_is_refused(tmp_path: Path) -> None:
    s = RaftStorage(str(tmp_path))
    s.save(None, ents(1, 2))
    with pytest.raises(ValueError, match="after last 2"):
        s.save(None, ents(4, 4))


def test_segments_roll_and_are_compacted_below_a_snapshot(tmp_path: Path) -> None:
    s = RaftStorage(str(tmp_path), segment_bytes=200)
    for i in range(1, 41):
        s.save(HardState(1, 1, i - 1), ents(i, i))
    segs = [n for n in os.listdir(tmp_path) if n.startswith("wal-")]
    assert len(segs) > 5
    s.save_snapshot(snap(30, 1))
    left = sorted(n for n in os.listdir(tmp_path) if n.startswith("wal-"))
    assert len(left) < len(segs)
    assert s.entries == ents(31, 40)
    s.close()
    r = RaftStorage(str(tmp_path), segment_bytes=200)
    assert r.snapshot == snap(30, 1)
    assert r.entries == ents(31, 40)
    assert r.hard_state == HardState(1, 1, 39)


def test_snapshot_from_leader_that_conflicts_discards_the_log(tmp_path: Path) -> None:
    s = RaftStorage(str(tmp_path))
    s.save(HardState(1, 1, 2), ents(1, 20, term=1))
    s.save(HardState(3, 0, 10), [], snap(10, 3))  # term at 10 differs: the log is stale
    assert s.entries == [] and s.last_index == 10
    s.save(None, ents(11, 12, term=3))
    s.close()
    r = RaftStorage(str(tmp_path))
    assert r.snapshot == snap(10, 3)
    assert r.entries == ents(11, 12, term=3)
    assert r.hard_state == HardState(3, 0, 10)


def test_snapshot_that_matches_keeps_the_suffix(tmp_path: Path) -> None:
    s = RaftStorage(str(tmp_path))
    s.save(HardState(1, 1, 2), ents(1, 20, term=1))
    s.save(None, [], snap(10, 1))
    assert s.entries == ents(11, 20)
    s.close()
    assert RaftStorage(str(tmp_path)).entries == ents(11, 20)


def test_only_the_newest_snapshots_are_kept(tmp_path: Path) -> None:
    s = RaftStorage(str(tmp_path))
    s.save(None, ents(1, 10))
    for i in (2, 4, 6, 8):
        s.save_snapshot(snap(i, 1))
    names = sorted(n for n in os.listdir(tmp_path) if n.endswith(".snap"))
    assert len(names) == 2 and names[-1].startswith(f"snap-{8:020d}")


# -- damage ------------------------------------------------------------------------------


def test_record_framing_masks_the_checksum() -> None:
    assert unmask(mask(0x12345678)) == 0x12345678
    rec = frame_records([record(RECORD_ENTRY, b"payload")], 0)
    assert len(rec) == HEADER_SIZE + 8
    assert scan_records(rec, path="x", tail_may_be_torn=False).records[0].body == b"payload"


def test_records_larger_than_a_block_are_fragmented_and_read_back() -> None:
    bodies = [b"a" * 10, b"b" * (BLOCK_SIZE * 2 + 5), b"c" * (BLOCK_SIZE - 30), b"d"]
    data = frame_records([record(RECORD_ENTRY, b) for b in bodies], 0)
    scan = scan_records(data, path="x", tail_may_be_torn=False)
    assert [r.body for r in scan.records] == bodies
    assert scan.valid_size == len(data) and not scan.torn_tail


def test_a_fragmented_record_cut_short_is_a_torn_tail() -> None:
    head = frame_records([record(RECORD_ENTRY, b"first")], 0)
    data = head + frame_records([record(RECORD_ENTRY, b"z" * BLOCK_SIZE * 2)], len(head))
    scan = scan_records(data[: BLOCK_SIZE + 100], path="x", tail_may_be_torn=True)
    assert [r.body for r in scan.records] == [b"first"]
    assert scan.torn_tail and scan.valid_size == len(head)
    with pytest.raises(CorruptionError):
        scan_records(data[: BLOCK_SIZE + 100], path="x", tail_may_be_torn=False)


def test_torn_tail_is_cut(tmp_path: Path) -> None:
    s = RaftStorage(str(tmp_path))
    s.save(HardState(1, 1, 0), ents(1, 3))
    s.close()
    path = tmp_path / segment_name(1)
    size = path.stat().st_size
    with open(path, "ab") as f:  # half of a record: a write cut short by a crash
        f.write(frame_records([record(RECORD_ENTRY, b"x" * 50)], size)[:30])
    r = RaftStorage(str(tmp_path))
    assert r.entries == ents(1, 3)
    assert path.stat().st_size == size
    r.save(None, ents(4, 4))
    r.close()
    assert RaftStorage(str(tmp_path)).entries == ents(1, 4)


def test_checksum_mismatch_in_the_last_record_is_a_torn_tail(tmp_path: Path) -> None:
    s = RaftStorage(str(tmp_path))
    s.save(HardState(1, 1, 0), ents(1, 3))
    s.save(None, ents(4, 4))
    s.close()
    path = tmp_path / segment_name(1)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    r = RaftStorage(str(tmp_path))
    assert r.entries == ents(1, 3)
    assert r.hard_state == HardState(1, 1, 0)


def test_mid_log_checksum_mismatch_is_reported(tmp_path: Path) -> None:
    s = RaftStorage(str(tmp_path))
    s.save(HardState(1, 1, 0), ents(1, 3))
    s.save(HardState(1, 1, 2), ents(4, 6))
    s.close()
    path = tmp_path / segment_name(1)
    data = bytearray(path.read_bytes())
    data[40] ^= 0xFF  # inside the first entry record, valid records follow
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptionError, match="an intact fragment follows") as info:
        RaftStorage(str(tmp_path))
    assert info.value.path == str(path)


def test_damage_in_an_older_segment_is_reported(tmp_path: Path) -> None:
    s = RaftStorage(str(tmp_path), segment_bytes=100)
    for i in range(1, 10):
        s.save(None, ents(i, i))
    s.close()
    first = tmp_path / segment_name(1)
    first.write_bytes(first.read_bytes()[:-3])
    with pytest.raises(CorruptionError, match="file ends inside a fragment"):
        RaftStorage(str(tmp_path), segment_bytes=100)


def test_damaged_snapshot_file_is_reported(tmp_path: Path) -> None:
    s = RaftStorage(str(tmp_path))
    s.save(None, ents(1, 5))
    s.save_snapshot(snap(5, 1, b"x" * 100))
    s.close()
    (name,) = [n for n in os.listdir(tmp_path) if n.endswith(".snap")]
    p = tmp_path / name
    data = bytearray(p.read_bytes())
    data[50] ^= 1
    p.write_bytes(bytes(data))
    with pytest.raises(CorruptionError, match="checksum mismatch"):
        RaftStorage(str(tmp_path))


def test_unknown_record_kind_is_reported(tmp_path: Path) -> None:
    s = RaftStorage(str(tmp_path))
    s.save(HardState(1, 1, 0), ents(1, 3))
    s.close()
    path = tmp_path / segment_name(1)
    with open(path, "ab") as f:  # well framed, but a kind this version does not know
        f.write(frame_records([bytes([77]) + b"future"], path.stat().st_size))
    with pytest.raises(CorruptionError, match="unknown record kind 77"):
        RaftStorage(str(tmp_path))


# -- crashes through the file-system seam ------------------------------------------------


def test_crash_keeps_every_saved_ready_and_loses_nothing_else(tmp_path: Path) -> None:
    fs = FaultInjectionFileSystem()
    s = RaftStorage(str(tmp_path), fs=fs, segment_bytes=300)
    for i in range(1, 30):
        s.save(HardState(2, 1, i - 1), ents(i, i, term=2))
    s.save_snapshot(snap(20, 2))
    # Bytes appended without the fsync that save() does: a crash must drop them.
    s._append([record(RECORD_ENTRY, b"never synced")])
    s.close()
    fs.crash()
    r = RaftStorage(str(tmp_path))
    assert r.snapshot == snap(20, 2)
    assert r.entries == ents(21, 29, term=2)
    assert r.hard_state == HardState(2, 1, 28)


def test_crash_before_the_snapshot_rename_is_durable_loses_only_the_snapshot(
    tmp_path: Path,
) -> None:
    fs = FaultInjectionFileSystem()
    s = RaftStorage(str(tmp_path), fs=fs)
    s.save(HardState(1, 1, 5), ents(1, 8))
    s.close()
    # Write a snapshot file by hand up to the rename, without the folder fsync.
    from raft import codec
    from raft.storage_format import RECORD_SNAPSHOT

    tmp = str(tmp_path / "snap.tmp")
    f = fs.open_writable(tmp)
    f.append(frame_records([record(RECORD_SNAPSHOT, codec.encode_snapshot(snap(5, 1)))], 0))
    f.sync()
    f.close()
    fs.rename(tmp, str(tmp_path / f"snap-{5:020d}-{1:020d}.snap"))
    fs.crash()
    r = RaftStorage(str(tmp_path))
    assert r.snapshot is None
    assert r.entries == ents(1, 8)
    assert not [n for n in os.listdir(tmp_path) if n.endswith((".snap", ".tmp"))]


# -- random histories against a model ------------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

ops = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(0, 6), st.integers(1, 4)),  # back, count
        st.tuples(st.just("vote"), st.integers(0, 1), st.integers(0, 3)),  # term bump, vote
        st.tuples(st.just("commit"), st.integers(0, 5), st.just(0)),
        st.tuples(st.just("compact"), st.integers(0, 5), st.just(0)),
        st.tuples(st.just("install"), st.integers(1, 8), st.booleans()),  # ahead, same term
    ),
    max_size=25,
)


@settings(max_examples=60, deadline=None)
@given(ops)
def test_recovery_after_a_crash_matches_what_was_saved(tmp_path_factory, history) -> None:
    """Whatever sequence of appends, truncations, votes, compactions and installed
    snapshots ran, a crash that loses every unsynced byte recovers exactly the saved log,
    term, vote and snapshot (a commit index may fall back, never past the synced one)."""
    folder = str(tmp_path_factory.mktemp("model"))
    fs = FaultInjectionFileSystem()
    s = RaftStorage(folder, fs=fs, segment_bytes=256)
    term, vote, commit = 1, 0, 0
    s.save(HardState(term, vote, commit), [])
    model: list[Entry] = []  # the log after the snapshot
    snap_meta: tuple[int, int] | None = None
    synced_commit = 0
    for op, a, b in history:
        base = snap_meta[0] if snap_meta else 0
        last = model[-1].index if model else base
        if op == "append":
            first = max(base + 1, commit + 1, last + 1 - a)  # never below commit (§5.3)
            if first <= last:  # a new leader's entries conflict with the tail (§5.3)
                term, vote = term + 1, 0
            new = [Entry(term, i, data=b"%d" % i) for i in range(first, first + b)]
            model = [e for e in model if e.index < first] + new
            s.save(HardState(term, vote, commit), new)
            synced_commit = commit
        elif op == "vote":
            if (a, b) != (0, vote):  # a changed term or vote is fsynced, commit with it
                synced_commit = commit
            term += a
            vote = b
            s.save(HardState(term, vote, commit), [])
        elif op == "commit":
            commit = max(commit, min(last, commit + a))
            s.save(HardState(term, vote, commit), [])
        elif op == "compact" and model:
            e = model[min(a, len(model) - 1)]
            s.save_snapshot(Snapshot(SnapshotMeta(e.index, e.term), b"at%d" % e.index))
            snap_meta = (e.index, e.term)
            model = [x for x in model if x.index > e.index]
        elif op == "install":
            index = last + a if not b or not model else model[min(a, len(model)) - 1].index
            t = term if not b or not model else model[min(a, len(model)) - 1].term
            if index <= base:
                continue
            s.save(None, [], Snapshot(SnapshotMeta(index, t), b"in%d" % index))
            keep = any(x.index == index and x.term == t for x in model)
            model = [x for x in model if x.index > index] if keep else []
            snap_meta = (index, t)
            commit = max(commit, index)
    s.close()
    fs.crash()
    r = RaftStorage(folder)
    assert r.entries == model
    assert (r.hard_state.term, r.hard_state.vote) == (term, vote)
    assert synced_commit <= r.hard_state.commit <= commit
    got = (r.snapshot.meta.index, r.snapshot.meta.term) if r.snapshot else None
    assert got == snap_meta


class Crash(Exception):
    pass


class CrashAfter(FaultInjectionFileSystem):
    """Raises `Crash` at the n-th file-system step (create, sync, rename, remove, ...)."""

    def __init__(self) -> None:
        super().__init__()
        self.left = 1 << 30

    def step(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise Crash

    def _wrap(self, f):
        sync = f.sync

        def crashing_sync() -> None:
            self.step()
            sync()

        f.sync = crashing_sync
        return f

    def open_writable(self, path):
        self.step()
        return self._wrap(super().open_writable(path))

    def open_appendable(self, path):
        self.step()
        return self._wrap(super().open_appendable(path))

    def rename(self, src, dst):
        self.step()
        super().rename(src, dst)

    def remove(self, path):
        self.step()
        super().remove(path)

    def sync_dir(self, path):
        self.step()
        super().sync_dir(path)


@pytest.mark.parametrize("conflicting", [True, False], ids=["reset", "matching"])
def test_crash_at_every_step_of_installing_a_snapshot(tmp_path: Path, conflicting: bool) -> None:
    """Whichever step a crash interrupts, recovery finds the log either as it was or with
    the snapshot fully installed; never a mix (old entries on top of the snapshot)."""
    before = ents(1, 20, term=1)
    snap_term = 2 if conflicting else 1
    after_entries = [] if conflicting else ents(11, 20, term=1)
    n, completed = 0, False
    while not completed:
        folder = tmp_path / f"crash{n}"
        fs = CrashAfter()
        s = RaftStorage(str(folder), fs=fs, segment_bytes=400)
        s.save(HardState(2, 1, 5), before)
        fs.left = n
        try:
            s.save(None, [], snap(10, snap_term))
            completed = True
        except Crash:
            pass
        s.close()
        fs.crash()
        r = RaftStorage(str(folder))
        if r.snapshot is None:
            assert r.entries == before, f"crash at step {n}"
        else:
            assert r.snapshot == snap(10, snap_term), f"crash at step {n}"
            assert r.entries == after_entries, f"crash at step {n}"
        assert r.hard_state == HardState(2, 1, 5)
        n += 1
    assert n > 3  # the install really went through several crash points
