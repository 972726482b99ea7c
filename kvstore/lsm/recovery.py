"""Opening an engine folder after a clean close or a crash: the manifest's state, then the
logs it does not cover replayed into level-0 tables.

Steps (engine.py finishes them by starting a fresh manifest and log, then deleting every
file no version refers to):
1. CURRENT names the manifest; its edits give the tables per level and the counters
   (manifest.recover). No CURRENT and no logs or tables: a new, empty engine. No CURRENT
   but logs or tables: refuse (something deleted CURRENT; starting empty would hide data).
2. `next_file_number` is raised above every numbered file in the folder, so no orphan
   left by a crash is ever overwritten; a table the manifest lists but the folder lacks
   is a CorruptionError at open (not a read error later).
3. Logs numbered >= the manifest's log number are replayed in order, each record a write
   batch; a memtable that fills up is written to a level-0 table at once. A torn tail is
   cut (counted); damage followed by intact records raises CorruptionError.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from . import filenames
from .batch import decode_ops
from .errors import CorruptionError, StorageError
from .filesystem import FileSystem
from .manifest import ManifestState, recover
from .memtable import MemTable
from .options import Options
from .tables import TableSet
from .version import Version, VersionEdit
from .wal_reader import LogReader

log = logging.getLogger(__name__)


@dataclass
class Replayed:
    """What replaying the logs produced."""

    edit: VersionEdit = field(default_factory=VersionEdit)  # the level-0 tables written
    last_seq: int = 0
    records: int = 0
    torn_tails: int = 0


def load_state(fs: FileSystem, folder: str, options: Options) -> ManifestState:
    """The manifest's state (or a new one), with next_file_number above every file."""
    state = recover(fs, folder, options.num_levels)
    names = fs.listdir(folder)
    parsed = [p for n in names if (p := filenames.parse(n)) is not None]
    if state is None:
        leftovers = [n for n in names if (p := filenames.parse(n)) is not None
                     and p[0] in (filenames.FileKind.LOG, filenames.FileKind.TABLE)]
        if leftovers:
            raise StorageError(
                f"{folder}: has engine files ({', '.join(leftovers[:3])}) but no CURRENT; "
                "refusing to start an empty engine over them")
        state = ManifestState(Version.empty(options.num_levels))
    state.next_file_number = max([state.next_file_number, *(n + 1 for _, n in parsed)])
    present = {n for kind, n in parsed if kind == filenames.FileKind.TABLE}
    for meta in state.version.files():
        if meta.number not in present:
            path = filenames.join(folder, filenames.table_name(meta.number))
            raise CorruptionError(path, 0, "the manifest lists this table but it is missing")
    return state


def replay_logs(fs: FileSystem, folder: str, state: ManifestState, options: Options,
                tables: TableSet) -> Replayed:
    """Replay every log the manifest does not cover into level-0 tables (synced, folder
    synced); the caller records `edit` in a new manifest before deleting the logs."""
    numbers = sorted(p[1] for n in fs.listdir(folder) if (p := filenames.parse(n)) is not None
                     and p[0] == filenames.FileKind.LOG and p[1] >= state.log_number)
    out = Replayed(last_seq=state.last_seq)
    mem = MemTable(options.memtable_entry_overhead)
    for number in numbers:
        path = filenames.join(folder, filenames.log_name(number))
        reader = LogReader(fs.read_file(path), path=path)
        for payload in reader:
            first_seq, ops = decode_ops(payload, path, reader.record_offset)
            seq = first_seq
            for kind, key, value in ops:
                mem.add(seq, kind, key, value)
                seq += 1
            out.last_seq = max(out.last_seq, seq - 1)
            out.records += 1
            if mem.approximate_bytes >= options.memtable_bytes:
                _write_level0(fs, folder, state, tables, mem, out.edit)
                mem = MemTable(options.memtable_entry_overhead)
        if reader.torn_tail:
            out.torn_tails += 1
            log.warning("%s: torn tail cut after %d bytes", path, reader.valid_size)
    if len(mem):
        _write_level0(fs, folder, state, tables, mem, out.edit)
    return out


def _write_level0(fs: FileSystem, folder: str, state: ManifestState, tables: TableSet,
                  mem: MemTable, edit: VersionEdit) -> None:
    outputs = tables.write(mem.entries(), state.new_file_number)
    fs.sync_dir(folder)
    edit.added.extend((0, meta) for meta in outputs)
