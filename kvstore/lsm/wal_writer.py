"""Appends records to a log in the framing of wal_format (docs/formats.md, "Log")."""

from __future__ import annotations

from .coding import crc32c as _crc
from .filesystem import WritableFile
from .wal_format import (
    BLOCK_SIZE,
    FIRST,
    FULL,
    HEADER_SIZE,
    LAST,
    MIDDLE,
    encode_fragment,
)
from .wal_format import HEADER as _HEADER
from .wal_format import LEN_TYPE as _LEN_TYPE

_ZEROS = bytes(HEADER_SIZE)
_MASK_DELTA = 0xA282EAD8
# CRC32C of (length, FULL) per length: at most one entry per possible fragment length.
_FULL_LT_CRC: dict[int, int] = {}


class LogWriter:
    """Frames payloads into fragments and appends them to `file`.

    Appending to an existing log is fine: the block position is taken from `file.size`.
    Not thread-safe: the engine lets one writer at a time append (group commit).
    """

    __slots__ = ("_block_offset", "_file")

    def __init__(self, file: WritableFile) -> None:
        self._file = file
        self._block_offset = file.size % BLOCK_SIZE

    @property
    def size(self) -> int:
        return self._file.size

    def add_record(self, payload: bytes | bytearray | memoryview) -> None:
        """Append one record; it is durable only after `sync()`."""
        n = len(payload)
        offset = self._block_offset
        if n + HEADER_SIZE <= BLOCK_SIZE - offset:  # the common case: one FULL fragment
            lc = _FULL_LT_CRC.get(n)  # encode_fragment, inlined
            if lc is None:
                lc = _FULL_LT_CRC[n] = _crc(_LEN_TYPE.pack(n, FULL))
            c = _crc(payload, lc)
            c = ((((c >> 15) | (c << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF
            self._file.append(_HEADER.pack(c, n, FULL, lc & 0xFFFF) + payload)
            offset += n + HEADER_SIZE
            self._block_offset = 0 if offset == BLOCK_SIZE else offset
            return
        view = memoryview(payload)
        pos = 0
        begin = True
        while True:
            left = BLOCK_SIZE - offset
            if left < HEADER_SIZE:
                if left:
                    self._file.append(_ZEROS[:left])
                offset = 0
                left = BLOCK_SIZE
            length = min(n - pos, left - HEADER_SIZE)
            end = pos + length == n
            if begin:
                rtype = FULL if end else FIRST
            else:
                rtype = LAST if end else MIDDLE
            self._file.append(encode_fragment(rtype, view[pos:pos + length]))
            offset += HEADER_SIZE + length
            if offset == BLOCK_SIZE:
                offset = 0
            pos += length
            begin = False
            if end:
                break
        self._block_offset = offset

    def flush(self) -> None:
        """Hand appended bytes to the OS (survives a process crash, not a power loss)."""
        self._file.flush()

    def sync(self) -> None:
        """Flush and fsync: every record added so far survives a power loss."""
        self._file.sync()

    def close(self) -> None:
        self._file.close()
