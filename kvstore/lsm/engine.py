"""The storage engine: the API, group commit, write stalls, reads, snapshots, recovery.

Theory of operation
- One mutex guards the engine's state (memtables, log, version, snapshots, writer queue).
- Writes (LevelDB's writer queue): each write joins `_writers`; the writer at the front
  is the leader. It makes room (may switch the memtable or stall), takes the batches
  queued behind it (up to `max_group_bytes`), gives them consecutive sequence numbers,
  appends one log record per batch and, under sync="always", releases the mutex for the
  one fsync they all share (group commit), then applies them to the memtable, publishes
  the new `_last_seq` and wakes the writers it wrote for. Only the leader touches the log
  and the mutable memtable, so nothing else needs the mutex released around I/O.
- Reads take no lock for memtable hits: `_last_seq` is published only after a whole group
  is in the memtable, so a read at that seq never sees half a batch. A table read pins the
  current version (a reference count) so its files cannot be deleted under it.
- A full memtable becomes `_imm` and a new log and memtable take the writes; the flush
  thread writes `_imm` to a level-0 table, records it in the manifest (with the new
  log's number, making older logs obsolete) and drops `_imm`. The compaction thread
  (compaction.py) merges tables down the levels. Writers stall while `_imm` is still
  being flushed and while level 0 holds `l0_stop_trigger` tables; at
  `l0_slowdown_trigger` each write group is delayed 1 ms once (counted in stats()).
- Recovery (open): the manifest CURRENT names gives the tables; logs numbered at or above
  its log number are replayed into memtables (a torn tail is cut, damage before intact
  records raises CorruptionError) and written to level-0 tables; a fresh manifest and
  log are started; files no version refers to are deleted.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Iterator
from typing import Any

from . import filenames
from .background import BackgroundWork
from .batch import BATCH_HEADER, MAX_KEY_SIZE, WriteBatch, check_key, check_value, encode_ops
from .bloom import key_hashes
from .coding import KIND_DELETE, KIND_VALUE
from .compaction import allowed_seeks, pick_range_compaction
from .errors import EngineClosedError, StorageError
from .filesystem import FileSystem, RealFileSystem
from .manifest import ManifestState, ManifestWriter
from .memtable import MemTable
from .merge import merge_visible_runs
from .options import Options
from .recovery import load_state, replay_logs
from .snapshot import Scan, Snapshot
from .tables import CompactionAborted, TableSet
from .version import FileMeta, Version, VersionEdit, apply_edit
from .wal_writer import LogWriter

log = logging.getLogger(__name__)

Op = tuple[int, bytes, bytes]

_BYTE = [bytes((i,)) for i in range(256)]
_PUT_BYTE = _BYTE[KIND_VALUE]


class _Writer:
    __slots__ = ("done", "error", "ops", "size", "wake")

    def __init__(self, ops: list[Op] | tuple[Op, ...], size: int) -> None:
        self.ops = ops
        self.size = size
        self.done = False
        self.error: BaseException | None = None
        self.wake: threading.Lock | None = None  # held until the leader releases it


class Engine(BackgroundWork):
    """A log-structured merge key-value store in one folder. Thread-safe.

    Open with `Engine.open(path, sync="always" | "interval" | "none", **options)`
    (options: options.Options). Keys are non-empty bytes up to 64 KiB, values bytes up to
    64 MiB (bytearray and memoryview are accepted and stored as bytes).

    Sync policies (what a crash can lose):
    - "always": a write returns only after its log record is fsynced; writers arriving
      meanwhile share the next fsync (group commit). Nothing acknowledged is lost.
    - "interval": each write is handed to the OS before it returns (a process crash
      loses nothing); a background thread fsyncs every `sync_interval_ms`, so a power
      loss loses at most that window. The fsync holds the writers' mutex.
    - "none": the log is buffered in the process (256 KiB) and fsynced only when the
      memtable is switched and at close(); a crash may lose the buffered writes. For
      bulk loads and tests.
    After a process crash every policy recovers a prefix of the writes, batches whole.
    """

    # -- opening ------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str, sync: str = "always", *, fs: FileSystem | None = None,
             **options: Any) -> Engine:
        """Open (creating if needed) the engine in folder `path`; recovers after a crash.
        Raises LockHeldError if another engine has the folder open, CorruptionError if
        the manifest or the middle of a log is damaged."""
        if not isinstance(path, str):
            path = str(path)
        opts = Options.from_kwargs(sync, options)
        return cls(path, opts, fs if fs is not None else RealFileSystem())

    def __init__(self, path: str, options: Options, fs: FileSystem) -> None:
        self.path = path
        self.options = options
        self.fs = fs
        self._mutex = threading.Lock()
        self._bg_cv = threading.Condition(self._mutex)  # background progress, shutdown
        self._writers: deque[_Writer] = deque()
        self._deferred: deque[tuple[Version | None, int]] = deque()
        self._closed = False
        self._closing = False
        self._bg_error: BaseException | None = None
        self._snapshots: dict[int, int] = {}  # seq -> count
        self._newest_snapshot = -1
        self._live_versions: dict[int, Version] = {}
        self._obsolete_tables: set[int] = set()
        self._pending_outputs: set[int] = set()
        self._imm: MemTable | None = None
        self._imm_log_number = 0
        self._compact_lock = threading.Lock()  # one compaction job at a time
        self._seeks_left: dict[int, int] = {}  # table number -> wasted reads still allowed
        self._seek_target: tuple[int, int] | None = None  # (level, table) to compact
        self._idle_seq = -1  # last_seq when the compaction thread last saw it move ...
        self._idle_since = 0.0  # ... and when (monotonic): see _idle_compaction
        self._executor: concurrent.futures.ProcessPoolExecutor | None = None
        self._process_failed = False  # the worker process broke: merge in a thread
        self._manual_waiters = 0
        self._log_dirty = False
        self._stats = dict.fromkeys(
            ("puts", "deletes", "write_groups", "log_syncs", "gets",
             "get_memtable_hits", "scans", "flushes", "compactions", "trivial_moves",
             "seek_compactions", "idle_compactions",
             "compaction_bytes_read", "compaction_bytes_written", "flush_bytes_written",
             "stalls", "slowdowns", "recovered_records", "torn_tails", "files_deleted"),
            0,
        )
        self._stall_seconds = 0.0
        self._sync_always = options.sync == "always"
        self._flush_each = options.sync == "interval"
        self._memtable_bytes = options.memtable_bytes
        self._write_fast = False
        fs.mkdir(path)
        self._lock_file = fs.lock(filenames.join(path, filenames.LOCK))
        try:
            self.tables = TableSet(fs, path, options)
            self._manifest = ManifestWriter(fs, path)
            self._recover()
        except BaseException:
            self._lock_file.close()
            raise
        self._threads = [
            threading.Thread(target=self._flush_loop, name=f"lsm-flush:{path}", daemon=True),
            threading.Thread(target=self._compact_loop, name=f"lsm-compact:{path}",
                             daemon=True),
        ]
        if options.sync == "interval":
            self._threads.append(threading.Thread(
                target=self._sync_loop, name=f"lsm-sync:{path}", daemon=True))
        for t in self._threads:
            t.start()

    def _recover(self) -> None:
        """Mutex not needed: no other thread exists yet. See recovery.py."""
        fs, folder, opts = self.fs, self.path, self.options
        state = self._state = load_state(fs, folder, opts)
        replayed = replay_logs(fs, folder, state, opts, self.tables)
        self._stats["recovered_records"] = replayed.records
        self._stats["torn_tails"] = replayed.torn_tails
        self._last_seq = state.last_seq = replayed.last_seq
        self._log_number = state.new_file_number()
        edit = replayed.edit
        edit.log_number = self._log_number
        state.apply(edit)
        self._manifest.start(state)
        # After the manifest: a crash between the two leaves a missing log, which is empty.
        self._log = LogWriter(fs.open_writable(
            filenames.join(folder, filenames.log_name(self._log_number))))
        fs.sync_dir(folder)
        self._mem = MemTable(opts.memtable_entry_overhead)
        self._install(state.version)
        self._delete_obsolete_files(full_scan=True)

    def _new_output_number(self) -> int:
        number = self._state.new_file_number()
        self._pending_outputs.add(number)
        return number

    def _locked_new_output_number(self) -> int:
        with self._mutex:
            return self._new_output_number()

    # -- writes -------------------------------------------------------------------------
    def put(self, key: bytes, value: bytes) -> None:
        """Store `value` under `key`. Durable on return under sync="always"."""
        key = check_key(key)
        value = check_value(value)
        with self._mutex:
            if (
                not self._writers
                and self._write_fast
                and self._mem.approximate_bytes < self._memtable_bytes
            ):
                # The fast path of _write inlined for the hottest call: one log append,
                # one memtable insert, under the one mutex.
                seq = self._last_seq + 1
                lk = len(key)
                lv = len(value)
                if lk < 128 and lv < 128:  # the same bytes as encode_ops for one put
                    payload = b"".join((BATCH_HEADER.pack(seq, 1), _PUT_BYTE, _BYTE[lk], key,
                                        _BYTE[lv], value))
                else:
                    payload = encode_ops(seq, ((KIND_VALUE, key, value),))
                self._append_log(payload)
                self._mem.add(seq, KIND_VALUE, key, value, self._newest_snapshot)
                self._last_seq = seq
                self._stats["puts"] += 1
                return
        self._write(((KIND_VALUE, key, value),), len(key) + len(value))

    def delete(self, key: bytes) -> None:
        """Remove `key` (a tombstone; absent keys are fine)."""
        key = check_key(key)
        self._write(((KIND_DELETE, key, b""),), len(key))

    def write(self, batch: WriteBatch) -> None:
        """Apply every put and delete of `batch` atomically (all or nothing)."""
        if not isinstance(batch, WriteBatch):
            raise TypeError(f"batch must be a WriteBatch, not {type(batch).__name__}")
        ops = list(batch)
        if ops:
            self._write(ops, batch.approximate_size)

    def _write(self, ops: list[Op] | tuple[Op, ...], size: int) -> None:
        mutex = self._mutex
        mutex.acquire()
        held = True
        try:
            queue = self._writers
            if (
                ops
                and not queue
                and self._write_fast
                and self._mem.approximate_bytes < self._memtable_bytes
            ):
                # Fast path (sync "none"/"interval", nobody queued, no stall due): the
                # caller is the whole group; no fsync, so nothing to release the mutex for.
                self._write_unsynced(ops)
                return
            if self._closed or self._closing:
                raise EngineClosedError(f"{self.path}: engine is closed")
            w = _Writer(ops, size)
            queue.append(w)
            if queue[0] is not w:
                # Wait off the mutex on a private lock that the leader releases when our
                # write is done (we return without re-taking the mutex, so woken
                # followers do not convoy on it) or when we reach the front (we lead).
                w.wake = wake = threading.Lock()
                wake.acquire()
                mutex.release()
                held = False
                wake.acquire()
                if w.done:
                    if w.error is not None:
                        raise w.error
                    return
                mutex.acquire()
                held = True
            self._lead(w)
        finally:
            if held:
                mutex.release()

    def _lead(self, w: _Writer) -> None:
        """Mutex held; `w` is at the front of the queue. Write `w` and the writes queued
        behind it as one group, then hand the front to the next writer."""
        queue = self._writers
        group = [w]
        try:
            if not w.ops:  # flush(): switch the memtable as the leader, write nothing
                self._wait_for_imm()
                if len(self._mem):
                    self._switch_memtable()
                return
            self._make_room_for_write()
            if len(queue) > 1:
                total = w.size
                limit = self.options.max_group_bytes
                for other in list(queue)[1:]:
                    if not other.ops:  # a flush request leads its own turn
                        break
                    total += other.size
                    if total > limit:
                        break
                    group.append(other)
            self._write_group(group)
        except BaseException as exc:
            for member in group:
                member.error = exc
            raise
        finally:
            for member in group:
                queue.popleft()
                member.done = True
                if member is not w:
                    member.wake.release()  # type: ignore[union-attr]
            if queue:
                queue[0].wake.release()  # type: ignore[union-attr]
            elif self._closing:
                self._bg_cv.notify_all()

    def _write_group(self, group: list[_Writer]) -> None:
        """Log and apply `group` (mutex held; released around an fsync)."""
        if self._bg_error is not None:
            raise StorageError(f"{self.path}: engine is read-only after an earlier "
                               f"error: {self._bg_error}") from self._bg_error
        seq = self._last_seq + 1
        payloads = []
        for member in group:
            payloads.append(encode_ops(seq, member.ops))
            seq += len(member.ops)
        logw = self._log
        try:
            if self._sync_always:
                self._mutex.release()
                try:
                    for payload in payloads:
                        logw.add_record(payload)
                    logw.sync()
                finally:
                    self._mutex.acquire()
                self._stats["log_syncs"] += 1
            else:
                for payload in payloads:
                    logw.add_record(payload)
                if self._flush_each:
                    logw.flush()
                self._log_dirty = True
        except BaseException as exc:
            # The log's end is unknown now; stop accepting writes rather than risk a hole.
            self._set_bg_error(exc)
            raise
        add = self._mem.add
        keep = self._newest_snapshot
        seq = self._last_seq + 1
        deletes = 0
        for member in group:
            for kind, key, value in member.ops:
                add(seq, kind, key, value, keep)
                seq += 1
                deletes += kind == KIND_DELETE
        self._stats["puts"] += seq - self._last_seq - 1 - deletes
        self._stats["deletes"] += deletes
        self._last_seq = seq - 1
        self._stats["write_groups"] += 1

    def _append_log(self, payload: bytes) -> None:
        """Requires: the mutex. Append one record to the log (to the OS when flushing each
        write); a failure latches the engine's background error, as a failed log write
        leaves the log's tail unknown."""
        logw = self._log
        try:
            logw.add_record(payload)
            if self._flush_each:
                logw.flush()
        except BaseException as exc:
            self._set_bg_error(exc)
            raise
        self._log_dirty = True

    def _write_unsynced(self, ops: list[Op] | tuple[Op, ...]) -> None:
        """Log and apply one write with the mutex held throughout (no fsync)."""
        seq = self._last_seq + 1
        self._append_log(encode_ops(seq, ops))
        add = self._mem.add
        keep = self._newest_snapshot
        deletes = 0
        for kind, key, value in ops:
            add(seq, kind, key, value, keep)
            seq += 1
            deletes += kind == KIND_DELETE
        self._last_seq = seq - 1
        self._stats["puts"] += len(ops) - deletes
        self._stats["deletes"] += deletes

    def _update_write_fast(self) -> None:
        """Mutex held. Whether a write may skip the writer queue (see _write)."""
        self._write_fast = (
            not self._sync_always
            and not self._closing
            and self._bg_error is None
            and len(self._state.version.levels[0]) < self.options.l0_slowdown_trigger
        )

    def _make_room_for_write(self) -> None:
        """Mutex held, leader only. Switch to a new memtable when this one is full;
        stall while the previous one is still flushing or level 0 is too deep."""
        delayed = False
        opts = self.options
        while True:
            if self._bg_error is not None:
                raise StorageError(f"{self.path}: engine is read-only after an earlier "
                                   f"error: {self._bg_error}") from self._bg_error
            l0 = len(self._state.version.levels[0])
            if not delayed and l0 >= opts.l0_slowdown_trigger:
                delayed = True
                self._stats["slowdowns"] += 1
                started = time.monotonic()
                self._mutex.release()
                try:
                    time.sleep(0.001)
                finally:
                    self._mutex.acquire()
                self._stall_seconds += time.monotonic() - started
            elif self._mem.approximate_bytes < self._memtable_bytes:
                return
            elif self._imm is not None or l0 >= opts.l0_stop_trigger:
                self._stats["stalls"] += 1
                started = time.monotonic()
                log.debug("write stall: memtable flush pending=%s, L0 files=%d",
                          self._imm is not None, l0)
                self._bg_cv.notify_all()
                self._bg_cv.wait(1.0)
                self._stall_seconds += time.monotonic() - started
            else:
                self._switch_memtable()

    def _switch_memtable(self) -> None:
        """Mutex held. Start a new log and memtable; hand the full one to the flusher."""
        number = self._state.new_file_number()
        old = self._log
        new_log = None
        try:
            new_log = LogWriter(self.fs.open_writable(
                filenames.join(self.path, filenames.log_name(number))))
            self.fs.sync_dir(self.path)  # the new log's name must survive with its records
            old.sync()  # every record of a log is durable before a later log gets any
        except BaseException as exc:
            if new_log is not None:
                new_log.close()
            self._set_bg_error(exc)
            raise
        old.close()
        self._log_dirty = False
        self._log = new_log
        self._imm_log_number = self._log_number
        self._log_number = number
        self._imm = self._mem
        self._mem = MemTable(self.options.memtable_entry_overhead)
        self._bg_cv.notify_all()

    # -- reads --------------------------------------------------------------------------
    def get(self, key: bytes, *, snapshot: Snapshot | None = None) -> bytes | None:
        """The value stored under `key`, or None. Reads at `snapshot` if given."""
        if type(key) is not bytes or not 0 < len(key) <= MAX_KEY_SIZE:
            key = check_key(key)
        if self._closed:
            raise EngineClosedError(f"{self.path}: engine is closed")
        if snapshot is not None:
            snapshot._check()
        self._stats["gets"] += 1
        if snapshot is None:
            seq = self._last_seq
            mem = self._mem
            found = mem.latest(key)
            while found is not None and found[1] > seq:
                # A write to `key` is being applied; read once it is published.
                with self._mutex:
                    seq = self._last_seq
                mem = self._mem
                found = mem.latest(key)
        else:
            seq = snapshot.seq
            mem = self._mem
            found = mem.get(key, seq)
        if found is None:
            imm = self._imm
            if imm is not None:
                found = imm.get(key, seq)
        if found is not None:
            self._stats["get_memtable_hits"] += 1
            return found[3] if found[2] == KIND_VALUE else None
        # Pin the current version without the mutex (see _pin; its first try inlined):
        # its tables stay on disk and their readers open until the pin is dropped.
        version = self._state.version
        pins = version.readers
        pins.append(None)
        if not version.refs:
            pins.pop()
            if not pins:
                self._retire_unpinned(version)
            version = self._pin()
            pins = version.readers
        try:
            # The tables that may hold `key`, newest first (Version.search_order), each
            # asked through its bloom filter (probed here: the hottest loop of a read)
            # and then for one block (TableReader.search).
            readers = self.tables.readers
            first: tuple[int, FileMeta] | None = None  # first table whose block was in vain
            charged = False
            h1 = h2 = 0
            hashed = False
            for level, largest, files in version.search_order:
                i = bisect_left(largest, key)
                if i == len(largest):
                    continue
                meta = files[i]
                if meta.smallest > key:
                    continue
                reader = readers.get(meta.number) or self.tables.reader(meta.number)
                bits = reader.bloom_bits
                if bits is not None:
                    if not hashed:
                        h1, h2 = key_hashes(key)
                        hashed = True
                    nbits = reader.bloom_nbits
                    h = h1
                    for _ in reader.bloom_probes:
                        pos = h % nbits
                        if not bits[pos >> 3] & (1 << (pos & 7)):
                            break
                        h += h2
                    else:
                        bits = None  # every probed bit is set: the key may be here
                    if bits is not None:
                        # No block read: a lookup the filter answers costs no seek (it
                        # is ~1 us; charging it made random reads over two levels start
                        # seek compactions that cost far more CPU than they saved).
                        continue
                hit = reader.search(key, seq)
                if hit is not None:
                    if first is not None and not charged:
                        self._charge_seek(*first)
                    return hit[2] if hit[1] == KIND_VALUE else None
                if first is None:
                    first = (level, meta)
                elif not charged:  # a second table consulted: the first cost a seek
                    self._charge_seek(*first)
                    charged = True
            return None
        finally:
            pins.pop()  # _unpin, inlined
            if not version.refs and not pins:
                self._retire_unpinned(version)

    def _pin(self) -> Version:
        """The current version, pinned for a point read by an entry in its `readers`
        list, taken without the mutex (two lock round trips less per read).

        Why this is safe (CPython: list append/pop and attribute reads are atomic under
        the GIL, so all threads see one order of these steps): a reader appends its pin,
        then reads `refs`; _unref sets `refs` to 0, then reads `readers`. Whichever comes
        second sees the other's write. If the reader sees refs > 0, _unref has not yet
        looked at `readers`, will see the pin, and keeps the version live (its files are
        not deleted, their readers not closed); the last reader to unpin a version with
        refs == 0 retires it (_retire_unpinned). If the reader sees refs == 0 the version
        may already be retired: it unpins and tries the new current version. A version
        with refs == 0 is never referenced again (only the current one is ref'd)."""
        while True:
            version = self._state.version
            pins = version.readers
            pins.append(None)
            if version.refs:
                return version
            pins.pop()
            if not pins:
                self._retire_unpinned(version)

    def _unpin(self, version: Version) -> None:
        """Drop a pin taken by _pin; the last pin of a version without refs retires it."""
        pins = version.readers
        pins.pop()
        if not version.refs and not pins:
            self._retire_unpinned(version)

    def _retire_unpinned(self, version: Version) -> None:
        """Drop a version that lost its last ref while point reads had it pinned, and
        delete the tables only it listed. Idempotent (two unpinning readers may race)."""
        with self._mutex:
            if (
                not version.refs
                and not version.readers
                and self._live_versions.pop(id(version), None) is not None
                and self._obsolete_tables
            ):
                self._delete_obsolete_files()

    def _charge_seek(self, level: int, meta: FileMeta) -> None:
        """Count a read `meta` cost in vain; at its allowance, ask for a seek compaction.
        Lock-free counting (a lost decrement under a race only delays it a little)."""
        left = self._seeks_left.get(meta.number)
        if left is None:
            left = allowed_seeks(meta)
        self._seeks_left[meta.number] = left - 1
        if left == 1 and self._seek_target is None:
            with self._mutex:
                self._seek_target = (level, meta.number)
                self._bg_cv.notify_all()

    def snapshot(self) -> Snapshot:
        """A read view of the engine as of now; release it when done (or use `with`)."""
        with self._mutex:
            self._check_open()
            seq = self._last_seq
            self._add_snapshot(seq)
        return Snapshot(self, seq)

    def scan(self, start: bytes | None = None, end: bytes | None = None, *,
             snapshot: Snapshot | None = None) -> Scan:
        """(key, value) pairs with start <= key < end in key order (None: unbounded),
        as of one snapshot taken now (or `snapshot`). Writes made meanwhile are not seen."""
        start = None if start is None else check_key(start)
        end = None if end is None else check_key(end)
        if snapshot is not None:
            snapshot._check()
        with self._mutex:
            self._check_open()
            seq = self._last_seq if snapshot is None else snapshot.seq
            self._add_snapshot(seq)
            mem, imm, version = self._mem, self._imm, self._state.version
            self._ref(version)
        self._stats["scans"] += 1
        if start is not None and end is not None and start >= end:
            return Scan(self, iter(()), version, seq)
        # Each source yields runs (lists or iterators of entries: memtable chunks, table
        # blocks), newest source first, as merge_visible_runs requires.
        # Sources give plain runs ((key, value) pairs) where every entry is a value
        # visible at `seq`.
        sources: list[Iterator[Any]] = [mem.runs(start, end, lock=self._mutex,
                                                 visible_at=seq)]
        if imm is not None:
            sources.append(imm.runs(start, end, visible_at=seq))
        tables = self.tables
        last = None if end is None else end
        for meta in version.levels[0]:
            if meta.overlaps(start, last):
                sources.append(tables.reader(meta.number).runs(start, visible_at=seq))
        for files in version.levels[1:]:
            chosen = [f for f in files if f.overlaps(start, last)]
            if chosen:
                sources.append(tables.level_runs(chosen, start, visible_at=seq))
        return Scan(self, merge_visible_runs(sources, seq, end), version, seq)

    def _release(self, version: Version | None, seq: int) -> None:
        """Drop a scan's version pin and snapshot, or a snapshot. Never blocks: called
        from __del__ too, which the garbage collector may run while this very thread
        holds the mutex; then the release is queued and done at the next chance."""
        if self._mutex.acquire(blocking=False):
            try:
                self._release_locked(version, seq)
                self._drain_releases()
            finally:
                self._mutex.release()
        else:
            self._deferred.append((version, seq))

    def _release_locked(self, version: Version | None, seq: int) -> None:
        if version is not None:
            self._unref(version)
        self._remove_snapshot(seq)

    def _drain_releases(self) -> None:
        deferred = self._deferred
        while deferred:
            self._release_locked(*deferred.popleft())

    # -- snapshots and versions (mutex held) ---------------------------------------------
    def _add_snapshot(self, seq: int) -> None:
        self._drain_releases()
        self._snapshots[seq] = self._snapshots.get(seq, 0) + 1
        if seq > self._newest_snapshot:
            self._newest_snapshot = seq

    def _remove_snapshot(self, seq: int) -> None:
        count = self._snapshots[seq] - 1
        if count:
            self._snapshots[seq] = count
        else:
            del self._snapshots[seq]
            self._newest_snapshot = max(self._snapshots, default=-1)

    def _smallest_snapshot(self) -> int:
        return min(self._snapshots, default=self._last_seq)

    def _ref(self, version: Version) -> None:
        version.refs += 1
        if version.refs == 1:
            self._live_versions[id(version)] = version

    def _unref(self, version: Version) -> None:
        version.refs -= 1
        if version.refs == 0:
            if version.readers:  # pinned by point reads: the last of them retires it
                return
            del self._live_versions[id(version)]
            if self._obsolete_tables:
                self._delete_obsolete_files()

    def _install(self, version: Version) -> None:
        """Make `version` current (mutex held); its predecessor's tables that no live
        version lists any more are deleted."""
        old = self._state.version
        self._state.version = version
        self._ref(version)
        if old is not version and old.refs:
            self._obsolete_tables.update(old.numbers() - version.numbers())
            self._unref(old)
        self._update_write_fast()
        self._delete_obsolete_files()

    def _apply_edit(self, edit: VersionEdit) -> None:
        """Durably record `edit` in the manifest and install the version (mutex held)."""
        edit.next_file_number = self._state.next_file_number
        edit.last_seq = self._last_seq
        new = apply_edit(self._state.version, edit)
        self._state.absorb(edit)
        try:
            stale_manifest = self._manifest.append(self._state_with(new), edit)
        except BaseException as exc:
            self._set_bg_error(exc)
            raise
        self._install(new)
        if stale_manifest:
            self._remove_file(filenames.manifest_name(stale_manifest))

    def _state_with(self, version: Version) -> ManifestState:
        s = self._state
        return ManifestState(version, s.log_number, s.next_file_number, s.last_seq,
                             s.compact_pointers, s.manifest_number)

    def _delete_obsolete_files(self, full_scan: bool = False) -> None:
        """Delete tables no live version lists, and logs the manifest made obsolete."""
        live: set[int] = set(self._pending_outputs)
        for v in self._live_versions.values():
            live |= v.numbers()
        if full_scan:
            for name in self.fs.listdir(self.path):
                parsed = filenames.parse(name)
                if parsed is None:
                    continue
                kind, number = parsed
                if (
                    (kind == filenames.FileKind.TABLE and number not in live)
                    or (kind == filenames.FileKind.LOG and number < self._state.log_number)
                    or (kind == filenames.FileKind.MANIFEST
                        and number != self._manifest.number)
                    or kind == filenames.FileKind.TEMP
                ):
                    self._remove_file(name)
            self._obsolete_tables.clear()
            return
        for number in list(self._obsolete_tables):
            if number not in live:
                self._obsolete_tables.discard(number)
                self._seeks_left.pop(number, None)
                self.tables.evict(number)
                self._remove_file(filenames.table_name(number))

    def _remove_file(self, name: str) -> None:
        try:
            self.fs.remove(filenames.join(self.path, name))
            self._stats["files_deleted"] += 1
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("%s: could not delete obsolete %s: %s", self.path, name, exc)

    # -- maintenance ----------------------------------------------------------------------
    def flush(self) -> None:
        """Write the memtable to a level-0 table now and wait until it is recorded."""
        # The switch goes through the writer queue: a leader may be appending to the
        # log with the mutex released (sync="always"), and only a leader may replace it.
        self._write((), 0)
        with self._mutex:
            self._wait_for_imm()

    def _wait_for_imm(self) -> None:
        while self._imm is not None:
            if self._bg_error is not None:
                raise StorageError(f"{self.path}: background error: {self._bg_error}") \
                    from self._bg_error
            self._check_open()
            self._bg_cv.wait(1.0)

    def compact_range(self, start: bytes | None = None, end: bytes | None = None) -> None:
        """Flush, then merge every table meeting [start, end] (None: open) down to the
        deepest level that holds any of them; afterwards overwritten versions and
        tombstones in the range are gone (unless a live snapshot still needs them)."""
        start = None if start is None else check_key(start)
        end = None if end is None else check_key(end)
        self.flush()
        with self._mutex:
            self._manual_waiters += 1
        try:
            with self._compact_lock, self._mutex:
                version = self._state.version
                deepest = max((lvl for lvl, files in enumerate(version.levels)
                               if any(f.overlaps(start, end) for f in files)), default=0)
                for level in range(max(deepest, 1)):
                    self._check_open()
                    c = pick_range_compaction(self._state.version, level, start, end)
                    if c is not None:
                        try:
                            self._run_compaction(c)
                        except CompactionAborted:
                            raise EngineClosedError(f"{self.path}: closed during "
                                                    "compact_range") from None
        finally:
            with self._mutex:
                self._manual_waiters -= 1
                self._bg_cv.notify_all()

    def stats(self) -> dict[str, Any]:
        """Counters and the current shape: files and bytes per level, memtable bytes,
        write stalls (count and seconds), compaction traffic, log syncs."""
        with self._mutex:
            self._drain_releases()
            version = self._state.version
            out: dict[str, Any] = dict(self._stats)
            out["stall_seconds"] = round(self._stall_seconds, 6)
            out["last_seq"] = self._last_seq
            out["memtable_bytes"] = self._mem.approximate_bytes
            out["immutable_memtable"] = self._imm is not None
            out["files_per_level"] = [len(files) for files in version.levels]
            out["bytes_per_level"] = [version.level_bytes(lvl)
                                      for lvl in range(len(version.levels))]
            out["table_bytes"] = sum(out["bytes_per_level"])
            out["live_snapshots"] = sum(self._snapshots.values())
            out["background_error"] = None if self._bg_error is None else repr(self._bg_error)
            out["sync"] = self.options.sync
        return out

    def check(self) -> None:
        """Assert internal invariants (tests). O(n) in memtable entries and tables."""
        with self._mutex:
            self._mem.check()
            self._state.version.check()

    # -- closing ------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed or self._closing:
            raise EngineClosedError(f"{self.path}: engine is closed")

    def close(self) -> None:
        """Finish in-flight writes, stop background work, make the log durable, release
        the folder. Idempotent. Unflushed memtable data is recovered from the log."""
        with self._mutex:
            if self._closed or self._closing:
                return
            self._closing = True
            self._write_fast = False
            while self._writers:
                self._bg_cv.wait()
            self._bg_cv.notify_all()
        for t in self._threads:
            t.join()
        with self._compact_lock, self._mutex:  # a compact_range() in flight aborts
            self._closed = True
            try:
                if self._bg_error is None:
                    self._log.sync()
            finally:
                self._log.close()
                self._manifest.close()
                self.tables.close()
                if self._executor is not None:
                    self._executor.shutdown(wait=True)
                self._lock_file.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
