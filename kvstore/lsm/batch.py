"""Write batches: several puts and deletes applied atomically, as one log record.

Payload layout (docs/formats.md, "Write batch"), all integers little-endian:

    first_seq: fixed64 | count: fixed32 | op * count
    op := kind: u8 (0 delete, 1 value) | key_len: varint | key | [value_len: varint | value]

Op i of a batch gets sequence number first_seq + i. The argument checks every write path
shares (`check_key`, `check_value`) live here too.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from .coding import KIND_DELETE, KIND_VALUE, MAX_SEQ, decode_varint, encode_varint
from .errors import CorruptionError, InvalidArgumentError

MAX_KEY_SIZE = 64 * 1024  # keys live in index blocks and memory; keep them small
MAX_VALUE_SIZE = 64 * 1024 * 1024  # a value is read whole into memory

BATCH_HEADER = struct.Struct("<QI")  # first_seq, count. on disk: do not change
BATCH_HEADER_SIZE = BATCH_HEADER.size
_OP_OVERHEAD = 1 + 2 + 2  # kind byte plus two short varints, for size estimates

_KIND_VALUE_BYTE = bytes((KIND_VALUE,))
_KIND_DELETE_BYTE = bytes((KIND_DELETE,))
_BYTES_LIKE = (bytes, bytearray, memoryview)


def check_key(key: object) -> bytes:
    """The key as bytes; TypeError if it is not bytes-like, InvalidArgumentError if empty
    or longer than MAX_KEY_SIZE."""
    if type(key) is not bytes:
        if not isinstance(key, _BYTES_LIKE):
            raise TypeError(
                f"key must be bytes, bytearray or memoryview, not {type(key).__name__}")
        key = bytes(key)
    if 0 < len(key) <= MAX_KEY_SIZE:  # one test on the hot path
        return key
    if not key:
        raise InvalidArgumentError("key must not be empty")
    raise InvalidArgumentError(f"key is {len(key)} bytes; the limit is {MAX_KEY_SIZE} bytes")


def check_value(value: object) -> bytes:
    """The value as bytes; TypeError if it is not bytes-like, InvalidArgumentError if
    longer than MAX_VALUE_SIZE. Empty values are allowed."""
    if type(value) is not bytes:
        if not isinstance(value, _BYTES_LIKE):
            raise TypeError(
                f"value must be bytes, bytearray or memoryview, not {type(value).__name__}")
        value = bytes(value)
    if len(value) > MAX_VALUE_SIZE:
        raise InvalidArgumentError(
            f"value is {len(value)} bytes; the limit is {MAX_VALUE_SIZE} bytes")
    return value


class WriteBatch:
    """An ordered list of puts and deletes, applied all or nothing."""

    __slots__ = ("_ops", "_size")

    def __init__(self) -> None:
        self._ops: list[tuple[int, bytes, bytes]] = []
        self._size = BATCH_HEADER_SIZE

    def put(self, key: bytes, value: bytes) -> WriteBatch:
        key = check_key(key)
        value = check_value(value)
        self._ops.append((KIND_VALUE, key, value))
        self._size += len(key) + len(value) + _OP_OVERHEAD
        return self

    def delete(self, key: bytes) -> WriteBatch:
        key = check_key(key)
        self._ops.append((KIND_DELETE, key, b""))
        self._size += len(key) + _OP_OVERHEAD
        return self

    def clear(self) -> None:
        self._ops.clear()
        self._size = BATCH_HEADER_SIZE

    def __len__(self) -> int:
        return len(self._ops)

    def __iter__(self) -> Iterator[tuple[int, bytes, bytes]]:
        """(kind, key, value) in the order they were added."""
        return iter(self._ops)

    @property
    def approximate_size(self) -> int:
        """About the encoded size in bytes (exact for keys and values under 128 bytes)."""
        return self._size

    def encode(self, first_seq: int) -> bytes:
        """The log payload; op i gets sequence number first_seq + i."""
        n = len(self._ops)
        if first_seq < 0 or first_seq + max(n - 1, 0) > MAX_SEQ:
            raise InvalidArgumentError(f"sequence numbers {first_seq}+{n} exceed 56 bits")
        return encode_ops(first_seq, self._ops)

    @staticmethod
    def decode(
        payload: bytes, *, path: str = "<write batch>", offset: int = 0
    ) -> tuple[int, list[tuple[int, bytes, bytes]]]:
        """(first_seq, [(kind, key, value), ...]) from `encode`'s output.

        Raises CorruptionError (naming `path` and `offset` + the position in the payload)
        on any structural error; a log record's checksum passed, so this means a bug or
        damage that slipped past the checksum, and nothing of the batch is applied.
        """
        return decode_ops(payload, path, offset)


def encode_ops(first_seq: int, ops: list[tuple[int, bytes, bytes]]) -> bytes:
    """Encode already-checked ops (the engine's fast path for one put skips WriteBatch)."""
    parts = [BATCH_HEADER.pack(first_seq, len(ops))]
    append = parts.append
    for kind, key, value in ops:
        if kind == KIND_VALUE:
            lk = len(key)
            lv = len(value)
            append(_KIND_VALUE_BYTE)
            append(encode_varint(lk))
            append(key)
            append(encode_varint(lv))
            append(value)
        else:
            append(_KIND_DELETE_BYTE)
            append(encode_varint(len(key)))
            append(key)
    return b"".join(parts)


def decode_ops(
    payload: bytes, path: str = "<write batch>", offset: int = 0
) -> tuple[int, list[tuple[int, bytes, bytes]]]:
    n = len(payload)
    if n < BATCH_HEADER_SIZE:
        raise CorruptionError(path, offset, f"write batch of {n} bytes is shorter than "
                              f"its {BATCH_HEADER_SIZE}-byte header")
    first_seq, count = BATCH_HEADER.unpack_from(payload, 0)
    if count and first_seq + count - 1 > MAX_SEQ:
        raise CorruptionError(path, offset, f"write batch sequence {first_seq}+{count} "
                              "exceeds 56 bits")
    ops: list[tuple[int, bytes, bytes]] = []
    append = ops.append
    pos = BATCH_HEADER_SIZE
    try:
        for _ in range(count):
            kind = payload[pos]
            pos += 1
            b = payload[pos]
            if b < 0x80:
                pos += 1
                klen = b
            else:
                klen, pos = decode_varint(payload, pos)
            end = pos + klen
            if end > n:
                raise ValueError(f"key of {klen} bytes runs past the end")
            key = payload[pos:end]
            pos = end
            if kind == KIND_VALUE:
                b = payload[pos]
                if b < 0x80:
                    pos += 1
                    vlen = b
                else:
                    vlen, pos = decode_varint(payload, pos)
                end = pos + vlen
                if end > n:
                    raise ValueError(f"value of {vlen} bytes runs past the end")
                append((KIND_VALUE, key, payload[pos:end]))
                pos = end
            elif kind == KIND_DELETE:
                append((KIND_DELETE, key, b""))
            else:
                raise ValueError(f"unknown op kind {kind}")
    except IndexError:
        raise CorruptionError(path, offset + pos, "write batch ends inside an op") from None
    except ValueError as e:
        raise CorruptionError(path, offset + pos, f"write batch: {e}") from None
    if pos != n:
        raise CorruptionError(path, offset + pos,
                              f"write batch has {n - pos} bytes after its {count} ops")
    return first_seq, ops
