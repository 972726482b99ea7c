"""The manifest: a log of VersionEdits naming the live tables, and the CURRENT pointer.

Byte layout in docs/formats.md#manifest. The manifest file `MANIFEST-<n>` holds records in
the write-ahead log's framing (wal_writer / wal_reader); each record is one encoded
VersionEdit. The first record of a manifest is a full snapshot (every live table and
every counter); later records are deltas. `CURRENT` holds the live manifest's name.

Crash safety, step by step (each step durable before the next):
1. a new manifest is written with its snapshot record and synced, and its directory
   entry is synced (`sync_dir`);
2. `CURRENT.tmp` is written and synced, renamed over `CURRENT`, and the folder synced;
3. only then may the old manifest be deleted.
A crash before step 2's rename reopens the old manifest, which is intact; after it, the
new one. An edit appended later is applied only once it is synced; a torn final edit is
cut by the log reader (the tables it named are then orphans and are deleted at open).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from . import filenames
from .coding import decode_varint, encode_varint
from .errors import CorruptionError
from .filesystem import FileSystem
from .version import FileMeta, Version, VersionEdit, apply_edit
from .wal_reader import LogReader
from .wal_writer import LogWriter

log = logging.getLogger(__name__)

# Field tags of an encoded VersionEdit. on disk: do not change (docs/formats.md#manifest).
TAG_LOG_NUMBER = 1
TAG_NEXT_FILE_NUMBER = 2
TAG_LAST_SEQ = 3
TAG_COMPACT_POINTER = 4
TAG_DELETED_FILE = 5
TAG_NEW_FILE = 6

# Roll over to a fresh manifest (one snapshot record) when the current one grows past this.
MAX_MANIFEST_BYTES = 4 * 1024 * 1024


def _put_bytes(out: list[bytes], data: bytes) -> None:
    out.append(encode_varint(len(data)))
    out.append(data)


def encode_edit(edit: VersionEdit) -> bytes:
    """The record payload for `edit`: a sequence of (tag varint, fields)."""
    out: list[bytes] = []
    if edit.log_number is not None:
        out += [encode_varint(TAG_LOG_NUMBER), encode_varint(edit.log_number)]
    if edit.next_file_number is not None:
        out += [encode_varint(TAG_NEXT_FILE_NUMBER), encode_varint(edit.next_file_number)]
    if edit.last_seq is not None:
        out += [encode_varint(TAG_LAST_SEQ), encode_varint(edit.last_seq)]
    for level, key in edit.compact_pointers:
        out += [encode_varint(TAG_COMPACT_POINTER), encode_varint(level)]
        _put_bytes(out, key)
    for level, number in edit.deleted:
        out += [encode_varint(TAG_DELETED_FILE), encode_varint(level), encode_varint(number)]
    for level, f in edit.added:
        out += [
            encode_varint(TAG_NEW_FILE),
            encode_varint(level),
            encode_varint(f.number),
            encode_varint(f.file_size),
        ]
        _put_bytes(out, f.smallest)
        _put_bytes(out, f.largest)
        out += [encode_varint(f.min_seq), encode_varint(f.max_seq), encode_varint(f.num_entries)]
    return b"".join(out)


class _Decoder:
    def __init__(self, data: bytes, path: str, offset: int) -> None:
        self.data = data
        self.pos = 0
        self.path = path
        self.offset = offset

    def fail(self, reason: str) -> CorruptionError:
        return CorruptionError(self.path, self.offset, f"manifest record: {reason}")

    def varint(self) -> int:
        try:
            value, self.pos = decode_varint(self.data, self.pos)
        except ValueError as exc:
            raise self.fail(str(exc)) from None
        return value

    def bytes_(self) -> bytes:
        n = self.varint()
        if self.pos + n > len(self.data):
            raise self.fail("length runs past the end of the record")
        value = self.data[self.pos:self.pos + n]
        self.pos += n
        return value


def decode_edit(payload: bytes, *, path: str = "<manifest>", offset: int = 0) -> VersionEdit:
    """Parse a record payload. Raises CorruptionError (naming path and the record's
    offset) on an unknown tag or a field that runs past the record."""
    d = _Decoder(payload, path, offset)
    edit = VersionEdit()
    while d.pos < len(payload):
        tag = d.varint()
        if tag == TAG_LOG_NUMBER:
            edit.log_number = d.varint()
        elif tag == TAG_NEXT_FILE_NUMBER:
            edit.next_file_number = d.varint()
        elif tag == TAG_LAST_SEQ:
            edit.last_seq = d.varint()
        elif tag == TAG_COMPACT_POINTER:
            edit.compact_pointers.append((d.varint(), d.bytes_()))
        elif tag == TAG_DELETED_FILE:
            edit.deleted.append((d.varint(), d.varint()))
        elif tag == TAG_NEW_FILE:
            level, number, size = d.varint(), d.varint(), d.varint()
            smallest, largest = d.bytes_(), d.bytes_()
            min_seq, max_seq, entries = d.varint(), d.varint(), d.varint()
            edit.added.append(
                (level, FileMeta(number, size, smallest, largest, min_seq, max_seq, entries))
            )
        else:
            raise d.fail(f"unknown field tag {tag}")
    return edit


@dataclass
class ManifestState:
    """What the manifest records: the current version and the engine's counters."""

    version: Version
    log_number: int = 0  # logs numbered below this are fully flushed
    next_file_number: int = 1
    last_seq: int = 0
    compact_pointers: dict[int, bytes] = field(default_factory=dict)
    manifest_number: int = 0

    def new_file_number(self) -> int:
        number = self.next_file_number
        self.next_file_number += 1
        return number

    def apply(self, edit: VersionEdit) -> None:
        self.version = apply_edit(self.version, edit)
        self.absorb(edit)

    def absorb(self, edit: VersionEdit) -> None:
        """Take the counters of `edit` (not its tables)."""
        if edit.log_number is not None:
            self.log_number = edit.log_number
        if edit.next_file_number is not None:
            self.next_file_number = max(self.next_file_number, edit.next_file_number)
        if edit.last_seq is not None:
            self.last_seq = max(self.last_seq, edit.last_seq)
        for _, f in edit.added:  # never hand out a number a recorded table has
            self.next_file_number = max(self.next_file_number, f.number + 1)
        for level, key in edit.compact_pointers:
            self.compact_pointers[level] = key

    def snapshot_edit(self) -> VersionEdit:
        """One edit that rebuilds this whole state from an empty version."""
        return VersionEdit(
            log_number=self.log_number,
            next_file_number=self.next_file_number,
            last_seq=self.last_seq,
            compact_pointers=sorted(self.compact_pointers.items()),
            added=[(level, f) for level, files in enumerate(self.version.levels) for f in files],
        )


def read_current(fs: FileSystem, folder: str) -> str | None:
    """The manifest name CURRENT points at, or None if there is no CURRENT."""
    path = filenames.join(folder, filenames.CURRENT)
    if not fs.exists(path):
        return None
    data = fs.read_file(path)
    name = data.decode("ascii", "replace").rstrip("\n")
    parsed = filenames.parse(name)
    if not data.endswith(b"\n") or parsed is None or parsed[0] != filenames.FileKind.MANIFEST:
        raise CorruptionError(path, 0, f"CURRENT does not name a manifest: {data[:80]!r}")
    return name


def recover(fs: FileSystem, folder: str, num_levels: int) -> ManifestState | None:
    """The state recorded by the manifest CURRENT names, or None for a new folder."""
    name = read_current(fs, folder)
    if name is None:
        return None
    path = filenames.join(folder, name)
    if not fs.exists(path):
        raise CorruptionError(path, 0, "CURRENT names a manifest that does not exist")
    state = ManifestState(Version.empty(num_levels))
    state.manifest_number = filenames.parse(name)[1]  # type: ignore[index]
    reader = LogReader(fs.read_file(path), path=path)
    records = 0
    for payload in reader:
        edit = decode_edit(payload, path=path, offset=reader.record_offset)
        try:
            state.apply(edit)
        except ValueError as exc:
            raise CorruptionError(path, 0, f"edit {records} does not apply: {exc}") from None
        records += 1
    if records == 0:
        raise CorruptionError(path, 0, "manifest holds no complete record")
    if reader.torn_tail:
        log.warning("%s: cut a torn final edit after %d bytes", path, reader.valid_size)
    return state


class ManifestWriter:
    """Appends edits to the live manifest; rolls to a new one when it grows large."""

    def __init__(self, fs: FileSystem, folder: str) -> None:
        self.fs = fs
        self.folder = folder
        self._writer: LogWriter | None = None
        self.number = 0

    def start(self, state: ManifestState) -> int:
        """Write a new manifest holding `state` as one snapshot edit, point CURRENT at
        it durably, and return the old manifest's number (0 if none) for deletion."""
        number = state.new_file_number()
        old = self.number or state.manifest_number
        path = filenames.join(self.folder, filenames.manifest_name(number))
        writer = LogWriter(self.fs.open_writable(path))
        try:
            writer.add_record(encode_edit(state.snapshot_edit()))
            writer.sync()
            self.fs.sync_dir(self.folder)
            set_current(self.fs, self.folder, number)
        except BaseException:
            writer.close()
            raise
        if self._writer is not None:
            self._writer.close()
        self._writer = writer
        self.number = number
        state.manifest_number = number
        return old

    def append(self, state: ManifestState, edit: VersionEdit) -> int:
        """Durably record `edit` (already applied to `state`). Returns the number of a
        manifest made obsolete by a rollover, else 0."""
        assert self._writer is not None
        if self._writer.size >= MAX_MANIFEST_BYTES:
            return self.start(state)
        self._writer.add_record(encode_edit(edit))
        self._writer.sync()
        return 0

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def set_current(fs: FileSystem, folder: str, manifest_number: int) -> None:
    """Atomically point CURRENT at MANIFEST-<manifest_number>, durably."""
    tmp = filenames.join(folder, filenames.CURRENT_TMP)
    f = fs.open_writable(tmp)
    try:
        f.append((filenames.manifest_name(manifest_number) + "\n").encode("ascii"))
        f.sync()
    finally:
        f.close()
    fs.rename(tmp, filenames.join(folder, filenames.CURRENT))
    fs.sync_dir(folder)
