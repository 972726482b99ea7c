"""Writes an SSTable (docs/formats.md, "SSTable"):

    data block 0 | ... | data block n-1 | filter block | index block | props block | footer

Every block is followed by its 5-byte trailer (block.py). The footer (52 bytes):

    filter_handle, index_handle, props_handle: 3 x (offset: fixed64, size: fixed32)
    format_version: fixed32 = 1
    footer_crc: fixed32   masked CRC32C of the 40 bytes above
    magic: 8 bytes        b"rlSSTab1"

Index block: one entry per data block; key = the block's last user key, tag = 0, value =
the block's handle (offset: fixed64, size: fixed32). All versions of one user key are in
one data block (a block is cut only between user keys), so a point read touches exactly
one data block. Props block contents: num_entries, min_seq, max_seq (3 x fixed64),
num_data_blocks (fixed32), then smallest and largest user keys (each varint length +
bytes). Filter and props blocks are never compressed; data and index blocks may be.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .block import COMPRESSION_TYPES, NO_COMPRESSION, TRAILER_SIZE, encode_block, seal_block
from .bloom import build_filter
from .coding import MAX_SEQ, encode_varint, masked_crc32c
from .errors import InvalidArgumentError
from .filesystem import WritableFile

MAGIC = b"rlSSTab1"  # on disk: do not change
FORMAT_VERSION = 1  # on disk: do not change
FOOTER_BODY = struct.Struct("<QIQIQII")  # three handles, format version
FOOTER_SIZE = FOOTER_BODY.size + 4 + len(MAGIC)  # 52
PROPS = struct.Struct("<QQQI")
HANDLE = struct.Struct("<QI")


@dataclass(frozen=True)
class TableOptions:
    block_size: int = 4096  # bytes of entries per data block before it is cut
    bloom_bits_per_key: int = 10  # about 1% false positives; 0 means no filter
    compression: str = "none"  # "none" | "zlib", per data block when it saves >= 1/8

    def __post_init__(self) -> None:
        if self.compression not in COMPRESSION_TYPES:
            raise InvalidArgumentError(
                f"compression must be one of {sorted(COMPRESSION_TYPES)}, "
                f"not {self.compression!r}")
        if self.block_size < 1 or self.bloom_bits_per_key < 0:
            raise InvalidArgumentError("block_size must be >= 1, bloom_bits_per_key >= 0")


@dataclass(frozen=True)
class TableInfo:
    smallest: bytes
    largest: bytes
    num_entries: int
    file_size: int
    min_seq: int
    max_seq: int


class TableBuilder:
    """Streams entries in internal order into `file`; the caller syncs and closes it.

    Requires: `add` calls in internal order (user_key ascending, then seq descending);
    anything else raises InvalidArgumentError before a byte of it is written.
    """

    def __init__(self, file: WritableFile, options: TableOptions | None = None) -> None:
        options = options or TableOptions()
        self._file = file
        self._block_size = options.block_size
        self._bits_per_key = options.bloom_bits_per_key
        self._ctype = COMPRESSION_TYPES[options.compression]
        self._offset = file.size
        self._keys: list[bytes] = []
        self._tags: list[int] = []
        self._values: list[bytes] = []
        # Bound appends of the lists above (cleared in place, never replaced).
        self._add_key = self._keys.append
        self._add_tag = self._tags.append
        self._add_value = self._values.append
        self._block_bytes = 0
        self._index_keys: list[bytes] = []
        self._index_handles: list[bytes] = []
        self._filter_keys: list[bytes] = []
        self._last_key = b""  # user keys are never empty, so every first key is greater
        self._min_seq = MAX_SEQ
        self._max_seq = 0
        self._num_entries = 0
        self._smallest: bytes | None = None
        self._done = False

    def add(self, user_key: bytes, seq: int, kind: int, value: bytes) -> None:
        if user_key > self._last_key:
            if self._block_bytes >= self._block_size:
                self._flush_block()
            self._last_key = user_key
        elif user_key != self._last_key or not self._tags or seq >= self._tags[-1] >> 8:
            last_seq = self._tags[-1] >> 8 if self._tags else None
            raise InvalidArgumentError(
                f"table entries out of internal order: ({user_key!r}, {seq}) after "
                f"({self._last_key!r}, {last_seq})")
        self._add_key(user_key)
        self._add_tag((seq << 8) | kind)
        self._add_value(value)
        self._block_bytes += len(user_key) + len(value) + 16

    @property
    def estimated_size(self) -> int:
        """Bytes written so far plus the pending block: the file size, roughly."""
        return self._offset + self._block_bytes

    @property
    def num_entries(self) -> int:
        return self._num_entries + len(self._keys)

    def _write_block(self, contents: bytes, ctype: int) -> bytes:
        stored = seal_block(contents, ctype)
        self._file.append(stored)
        handle = HANDLE.pack(self._offset, len(stored) - TRAILER_SIZE)
        self._offset += len(stored)
        return handle

    def _flush_block(self) -> None:
        keys = self._keys
        if self._smallest is None:
            self._smallest = keys[0]
        tags = self._tags
        lo, hi = min(tags) >> 8, max(tags) >> 8
        if hi > MAX_SEQ or lo < 0:
            raise InvalidArgumentError("sequence numbers must be in 0..2**56-1")
        self._min_seq = min(self._min_seq, lo)
        self._max_seq = max(self._max_seq, hi)
        self._filter_keys.extend(dict.fromkeys(keys))  # distinct user keys, in order
        contents = encode_block(keys, self._tags, self._values)
        self._index_handles.append(self._write_block(contents, self._ctype))
        self._index_keys.append(keys[-1])
        self._num_entries += len(keys)
        keys.clear()
        tags.clear()
        self._values.clear()
        self._block_bytes = 0

    def finish(self) -> TableInfo:
        """Write the last data block, filter, index, props and footer (not synced)."""
        if self._done:
            raise InvalidArgumentError("finish() or abandon() was already called")
        if self._keys:
            self._flush_block()
        self._done = True
        empty = HANDLE.pack(0, 0)
        if self._bits_per_key:
            filter_handle = self._write_block(
                build_filter(self._filter_keys, self._bits_per_key), NO_COMPRESSION)
        else:
            filter_handle = empty
        n = len(self._index_keys)
        index_handle = self._write_block(
            encode_block(self._index_keys, [0] * n, self._index_handles), self._ctype)
        smallest = self._smallest or b""
        largest = self._index_keys[-1] if n else b""
        min_seq = self._min_seq if self._num_entries else 0
        props = b"".join((
            PROPS.pack(self._num_entries, min_seq, self._max_seq, n),
            encode_varint(len(smallest)), smallest, encode_varint(len(largest)), largest,
        ))
        props_handle = self._write_block(props, NO_COMPRESSION)
        body = b"".join((filter_handle, index_handle, props_handle,
                         struct.pack("<I", FORMAT_VERSION)))
        self._file.append(body + struct.pack("<I", masked_crc32c(body)) + MAGIC)
        self._offset += FOOTER_SIZE
        self._file.flush()
        return TableInfo(smallest, largest, self._num_entries, self._offset, min_seq,
                         self._max_seq)

    def abandon(self) -> None:
        """Stop without writing the rest; the caller closes and removes the file."""
        self._done = True
        self._keys.clear()
        self._tags.clear()
        self._values.clear()
        self._filter_keys = []
