"""The engine's background work: the flush thread, the compaction thread and, under
sync="interval", the log syncer. A mixin of `Engine` (engine.py), split out to keep
files small; it shares the engine's mutex and state and follows its rules:

- Each loop waits on `_bg_cv` (the engine's condition on its mutex) and does its I/O with
  the mutex released; it installs results with `_apply_edit` (manifest first, then the
  version) with the mutex held.
- A flush writes `_imm` to one level-0 table, records it together with the new log
  number (older logs become obsolete), then drops `_imm` and wakes stalled writers.
- A compaction (compaction.py picks it) runs under `_compact_lock`, so it never overlaps
  a `compact_range()`; merges run in this thread or, with `compaction_process`, in one
  worker process. When no size or seek compaction is due, level 0 still has tables and
  no write has come for `idle_compaction_ms` (the last sequence number has not moved;
  no memtable is waiting to be flushed), every L0 table is merged into level 1 (an idle
  compaction): reads after a burst of writes then consult one table per level.
- An error in background I/O makes the engine read-only (`_bg_error`): writes fail with
  a StorageError naming it, reads go on.
"""

from __future__ import annotations

import concurrent.futures
import logging
import multiprocessing
import os
import time
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING

from . import filenames
from .compaction import (
    Compaction,
    pick_compaction,
    pick_range_compaction,
    pick_seek_compaction,
)
from .compaction_job import MergeJob, exit_with_parent, run_merge
from .filesystem import RealFileSystem
from .tables import CompactionAborted
from .version import VersionEdit

if TYPE_CHECKING:
    from .engine import Engine

log = logging.getLogger(__name__)


class BackgroundWork:
    def _set_bg_error(self: Engine, exc: BaseException) -> None:
        if self._bg_error is None:
            self._bg_error = exc
            log.error("%s: background error, engine is now read-only: %r", self.path, exc)
        self._write_fast = False
        self._bg_cv.notify_all()

    def _flush_loop(self: Engine) -> None:
        with self._mutex:
            while True:
                while self._imm is None and not self._closing:
                    self._bg_cv.wait()
                if self._closing or self._bg_error is not None:
                    return
                try:
                    self._flush_imm()
                except BaseException as exc:
                    self._set_bg_error(exc)
                    return

    def _flush_imm(self: Engine) -> None:
        """Write `_imm` to a level-0 table and record it (mutex held on entry and exit)."""
        imm = self._imm
        assert imm is not None
        # Flushes stay in this process even with compaction_process: queued behind a long
        # merge in the one worker, a flush would stall every writer meanwhile.
        self._mutex.release()
        try:
            outputs = self.tables.write(imm.entries(), self._locked_new_output_number)
            self.fs.sync_dir(self.path)
        finally:
            self._mutex.acquire()
        edit = VersionEdit(log_number=self._log_number,
                           added=[(0, meta) for meta in outputs])
        self._apply_edit(edit)
        for meta in outputs:
            self._pending_outputs.discard(meta.number)
            self._stats["flush_bytes_written"] += meta.file_size
        self._imm = None
        for number in range(self._imm_log_number, self._log_number):
            if self.fs.exists(filenames.join(self.path, filenames.log_name(number))):
                self._remove_file(filenames.log_name(number))
        self._stats["flushes"] += 1
        self._bg_cv.notify_all()

    def _compact_loop(self: Engine) -> None:
        while True:
            with self._mutex:
                while not self._closing and self._bg_error is None and (
                    self._manual_waiters or self._next_compaction(consume=False) is None
                ):
                    self._bg_cv.wait(self._idle_wait())
                if self._closing or self._bg_error is not None:
                    return
            with self._compact_lock, self._mutex:
                self._drain_releases()
                c = self._next_compaction(consume=True)
                if c is None:
                    continue
                try:
                    self._run_compaction(c)
                except CompactionAborted:
                    return
                except BaseException as exc:
                    self._set_bg_error(exc)
                    return

    def _next_compaction(self: Engine, consume: bool) -> Compaction | None:
        """Mutex held. A size compaction if one is due, else a seek compaction, else an
        idle compaction."""
        version = self._state.version
        c = pick_compaction(version, self.options, self._state.compact_pointers)
        if c is not None:
            return c
        if self._seek_target is None:
            return self._idle_compaction(consume)
        level, number = self._seek_target
        c = pick_seek_compaction(version, level, number)
        if consume or c is None:
            self._seek_target = None
            if c is not None:
                self._stats["seek_compactions"] += 1
        return c

    def _idle_compaction(self: Engine, consume: bool) -> Compaction | None:
        """Mutex held. The merge of every L0 table into level 1 if writes have paused for
        idle_compaction_ms (see the module docstring), else None. Notes when the last
        sequence number last moved (no clock read per write)."""
        idle_ms = self.options.idle_compaction_ms
        version = self._state.version
        if not idle_ms or not version.levels[0] or self._imm is not None:
            return None
        now = time.monotonic()
        if self._last_seq != self._idle_seq:
            self._idle_seq = self._last_seq
            self._idle_since = now
            return None
        if now - self._idle_since < idle_ms / 1000:
            return None
        c = pick_range_compaction(version, 0, None, None)
        if c is not None:
            # A small idle merge (e.g. the table a reopen flushed from the log) does not
            # start the worker process: spawning it costs more than the merge.
            c.in_thread = (self._executor is None
                           and c.input_bytes() <= self.options.table_file_bytes)
            if consume:
                self._stats["idle_compactions"] += 1
        return c

    def _idle_wait(self: Engine) -> float | None:
        """Mutex held. How long the compaction thread may sleep: until an idle compaction
        could be due (None: until woken, when there is no L0 table to fold)."""
        idle_ms = self.options.idle_compaction_ms
        if not idle_ms or not self._state.version.levels[0]:
            return None
        return idle_ms / 1000

    def _run_compaction(self: Engine, c: Compaction) -> None:
        """Mutex held on entry and exit (released during the merge)."""
        if c.is_trivial_move:
            meta = c.inputs[0]
            edit = VersionEdit(deleted=[(c.level, meta.number)],
                               added=[(c.output_level, meta)])
            self._apply_edit(edit)
            self._stats["trivial_moves"] += 1
            self._bg_cv.notify_all()
            return
        version = self._state.version
        self._ref(version)
        sources = [[f] for f in c.inputs] if c.level == 0 else [list(c.inputs)]
        sources.append(list(c.overlaps))
        in_process = self._worker_process_ok() and not c.in_thread
        numbers: list[int] = []
        if in_process:
            count = c.input_bytes() // self.options.table_file_bytes + 3
            numbers = [self._new_output_number() for _ in range(count)]
        job = MergeJob(self.path, self.options, c.level, sources, version,
                       self._smallest_snapshot(), numbers)
        self._mutex.release()
        try:
            outputs = None
            if in_process:
                try:
                    outputs = self._worker().submit(run_merge, job).result()
                except BrokenProcessPool as exc:
                    # The worker could not start or died (e.g. a main module without the
                    # `if __name__ == "__main__"` guard under spawn): merge here instead.
                    log.warning("%s: compaction worker process failed (%s); compacting "
                                "in a thread from now on", self.path, exc)
                    self._process_failed = True
            if outputs is None:
                outputs = run_merge(job, self.tables, self._locked_new_output_number,
                                    should_stop=lambda: self._closing)
            self.fs.sync_dir(self.path)
        finally:
            self._mutex.acquire()
            self._unref(version)
            self._pending_outputs.difference_update(numbers)
        self._apply_edit(c.edit(outputs))
        for meta in outputs:
            self._pending_outputs.discard(meta.number)
        self._stats["compactions"] += 1
        self._stats["compaction_bytes_read"] += c.input_bytes()
        self._stats["compaction_bytes_written"] += sum(m.file_size for m in outputs)
        self._bg_cv.notify_all()

    def _worker_process_ok(self: Engine) -> bool:
        # A worker process writes through the real file system only.
        return (self.options.compaction_process and not self._process_failed
                and type(self.fs) is RealFileSystem)

    def _worker(self: Engine) -> concurrent.futures.ProcessPoolExecutor:
        """The one worker process for merges (spawned on first use; it exits by itself
        if this process dies)."""
        if self._executor is None:
            self._executor = concurrent.futures.ProcessPoolExecutor(
                max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                initializer=exit_with_parent, initargs=(os.getpid(),))
        return self._executor

    def _sync_loop(self: Engine) -> None:
        interval = self.options.sync_interval_ms / 1000
        with self._mutex:
            while not self._closing:
                self._bg_cv.wait(interval)
                if self._log_dirty and not self._closing and self._bg_error is None:
                    try:
                        self._log.sync()
                        self._log_dirty = False
                        self._stats["log_syncs"] += 1
                    except BaseException as exc:
                        self._set_bg_error(exc)
