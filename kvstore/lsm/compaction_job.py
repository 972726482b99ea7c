"""The merge of one compaction, runnable in the engine's thread or in a worker process.

The engine can hand these jobs to a `ProcessPoolExecutor` (max_workers=1, spawn context)
so that the CPU-heavy part, decoding input tables and building output tables, does not
hold the engine process's GIL while writers run. The job carries only picklable values:
the folder, the options, the input tables (FileMeta), the version (for the tombstone
rule), pre-allocated output numbers; it returns the FileMeta of each output. The worker
uses the real file system (a fault-injection file system cannot follow into another
process, so the engine runs jobs in its own thread when given one).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .compaction import drop_obsolete
from .filesystem import RealFileSystem
from .merge import merge_entries
from .options import Options
from .tables import TableSet
from .version import FileMeta, Version


class NumbersExhausted(Exception):
    """The job needed more output numbers than were allocated for it."""


@dataclass(frozen=True)
class MergeJob:
    folder: str
    options: Options
    level: int
    sources: list[list[FileMeta]]  # each list: tables read one after another, in order
    version: Version  # the version the inputs come from (tombstone rule)
    smallest_snapshot: int
    output_numbers: list[int]


def run_merge(job: MergeJob, tables: TableSet | None = None,
              new_number: Callable[[], int] | None = None,
              should_stop: Callable[[], bool] | None = None) -> list[FileMeta]:
    """Merge the job's inputs, drop what no reader can see, write tables of about
    `table_file_bytes` each. Returns their FileMeta (outputs are synced, the folder not).
    In the engine's thread it passes its own `tables` and `new_number`; in a worker
    process the job's `output_numbers` are used."""
    own = tables is None
    if tables is None:
        tables = TableSet(RealFileSystem(), job.folder, job.options, cache_bytes=0)
    try:
        sources = [tables.iterate_level(files) for files in job.sources]
        out_level = job.level + 1
        version = job.version
        kept = drop_obsolete(merge_entries(sources), job.smallest_snapshot,
                             lambda key: version.key_may_exist_below(out_level, key))
        numbers = iter(job.output_numbers)

        def next_number() -> int:
            number = next(numbers, None)
            if number is None:
                raise NumbersExhausted
            return number

        return tables.write(kept, new_number or next_number, job.options.table_file_bytes,
                            should_stop=should_stop)
    finally:
        if own:
            tables.close()


def exit_with_parent(parent_pid: int) -> None:
    """Worker initializer: end this worker soon after the engine's process dies (even by
    SIGKILL, which gives the pool no chance to stop it), so no orphan outlives it."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.2)
        os._exit(0)

    threading.Thread(target=watch, name="lsm-worker-watchdog", daemon=True).start()
