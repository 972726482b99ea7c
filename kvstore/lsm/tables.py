"""The engine's SSTables: open readers (one per live table), writing new tables.

Writing a table: the entries go through a `TableBuilder` into `NNNNNN.sst`, the file is
fsynced and closed; the caller syncs the folder once for all the tables of a job before a
manifest edit names them (a table must be durable before the manifest refers to it).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterable, Iterator

from . import filenames
from .cache import BlockCache
from .filesystem import FileSystem
from .options import Options
from .sstable_builder import TableBuilder, TableOptions
from .sstable_reader import TableReader
from .version import FileMeta

log = logging.getLogger(__name__)

Entry = tuple[bytes, int, int, bytes]


class CompactionAborted(Exception):
    """A job stopped early because the engine is closing; its outputs are discarded."""


class TableSet:
    """Readers of live tables, opened on first use and closed when their file goes."""

    def __init__(self, fs: FileSystem, folder: str, options: Options,
                 cache_bytes: int | None = None) -> None:
        self.fs = fs
        self.folder = folder
        self.options = options
        size = options.block_cache_bytes if cache_bytes is None else cache_bytes
        self.cache = BlockCache(size) if size else None
        self.table_options = TableOptions(
            block_size=options.block_size,
            bloom_bits_per_key=options.bloom_bits_per_key,
            compression=options.compression,
        )
        self.readers: dict[int, TableReader] = {}
        self._lock = threading.Lock()

    def path(self, number: int) -> str:
        return filenames.join(self.folder, filenames.table_name(number))

    def reader(self, number: int) -> TableReader:
        """The open reader of table `number`. O(1) once open."""
        reader = self.readers.get(number)  # readers: read-only outside this class
        if reader is None:
            with self._lock:
                reader = self.readers.get(number)
                if reader is None:
                    reader = TableReader.open(
                        self.fs, self.path(number), number, self.cache,
                        verify_checksums=self.options.verify_checksums,
                    )
                    self.readers[number] = reader
        return reader

    def iterate(self, meta: FileMeta, start: bytes | None = None) -> Iterator[Entry]:
        return self.reader(meta.number).iterate(start)

    def iterate_level(
        self, files: Iterable[FileMeta], start: bytes | None = None
    ) -> Iterator[Entry]:
        """Entries of a level's disjoint, ordered tables, opening each only when reached."""
        for meta in files:
            yield from self.reader(meta.number).iterate(start)

    def level_runs(
        self, files: Iterable[FileMeta], start: bytes | None = None,
        visible_at: int | None = None,
    ) -> Iterator[Iterable[Entry]]:
        """iterate_level's entries one data block at a time (TableReader.runs)."""
        for meta in files:
            yield from self.reader(meta.number).runs(start, visible_at=visible_at)

    def evict(self, number: int) -> None:
        """Close the reader of a table whose file is being deleted."""
        with self._lock:
            reader = self.readers.pop(number, None)
        if reader is not None:
            reader.close()

    def close(self) -> None:
        with self._lock:
            readers = list(self.readers.values())
            self.readers.clear()
        for reader in readers:
            reader.close()

    def write(
        self,
        entries: Iterable[Entry],
        new_number: Callable[[], int],
        target_bytes: int | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> list[FileMeta]:
        """Write `entries` (internal order) into one table, or several of about
        `target_bytes` each, cut only between user keys. Each table is synced and closed;
        the folder is not synced (the caller does it once). `new_number` gives each
        table's number (registered by the caller as a pending output). `should_stop` is
        polled every few thousand entries; if it says so, the outputs written so far are
        removed and CompactionAborted is raised."""
        outputs: list[FileMeta] = []
        builder: TableBuilder | None = None
        file = None
        number = 0
        previous: bytes | None = None
        count = 0
        try:
            for key, seq, kind, value in entries:
                if builder is None:
                    number = new_number()
                    file = self.fs.open_writable(self.path(number))
                    builder = TableBuilder(file, self.table_options)
                elif (
                    target_bytes is not None
                    and key != previous
                    and builder.estimated_size >= target_bytes
                ):
                    outputs.append(self._finish(builder, file, number))
                    number = new_number()
                    file = self.fs.open_writable(self.path(number))
                    builder = TableBuilder(file, self.table_options)
                builder.add(key, seq, kind, value)
                previous = key
                count += 1
                if should_stop is not None and count & 4095 == 0 and should_stop():
                    raise CompactionAborted
            if builder is not None:
                outputs.append(self._finish(builder, file, number))
                builder = None
        except BaseException:
            if builder is not None:
                builder.abandon()
                if file is not None:
                    file.close()
                outputs.append(FileMeta(number, 0, b"", b"", 0, 0, 0))
            for meta in outputs:
                with contextlib.suppress(OSError):
                    self.fs.remove(self.path(meta.number))
            raise
        return outputs

    def _finish(self, builder: TableBuilder, file: object, number: int) -> FileMeta:
        info = builder.finish()
        file.sync()  # type: ignore[attr-defined]
        file.close()  # type: ignore[attr-defined]
        return FileMeta(
            number=number,
            file_size=info.file_size,
            smallest=info.smallest,
            largest=info.largest,
            min_seq=info.min_seq,
            max_seq=info.max_seq,
            num_entries=info.num_entries,
        )
