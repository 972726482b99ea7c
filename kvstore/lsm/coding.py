"""Byte-level helpers shared by every on-disk format: constants, varints, fixed-width
integers and masked CRC32C checksums. Layouts are described in docs/formats.md.

All multi-byte integers on disk are little-endian.
"""

from __future__ import annotations

import struct

import crc32c as _crc32c

# Kinds of an internal entry. on disk: do not change (docs/formats.md).
KIND_DELETE = 0
KIND_VALUE = 1

SEQ_BITS = 56
MAX_SEQ = (1 << SEQ_BITS) - 1  # sequence numbers are 56 bits: seq << 8 | kind fits in 64

_crc = _crc32c.crc32c
_MASK_DELTA = 0xA282EAD8  # LevelDB's mask constant. on disk: do not change
_U32 = 0xFFFFFFFF

FIXED32 = struct.Struct("<I")
FIXED64 = struct.Struct("<Q")


# crc32c(data, value=0) -> int: CRC32C (Castagnoli) of `data` continuing from `value`.
# The C function itself, not a wrapper: it is called for every record and block.
crc32c = _crc32c.crc32c


def mask(crc: int) -> int:
    """Rotate right by 15 bits and add a constant, as LevelDB does: a CRC stored next to
    data that itself contains CRCs would otherwise be easy to collide with."""
    return ((((crc >> 15) | (crc << 17)) & _U32) + _MASK_DELTA) & _U32


def unmask(masked: int) -> int:
    """Inverse of `mask`."""
    rot = (masked - _MASK_DELTA) & _U32
    return ((rot >> 17) | (rot << 15)) & _U32


def masked_crc32c(data: bytes | bytearray | memoryview, value: int = 0) -> int:
    """The masked CRC32C stored on disk for `data`."""
    crc = _crc(data, value)
    return ((((crc >> 15) | (crc << 17)) & _U32) + _MASK_DELTA) & _U32


def pack_tag(seq: int, kind: int) -> int:
    """The 64-bit tag stored for an internal entry: seq in the high 56 bits, kind low."""
    return (seq << 8) | kind


def unpack_tag(tag: int) -> tuple[int, int]:
    """(seq, kind) from a tag."""
    return tag >> 8, tag & 0xFF


_SMALL_VARINTS = [bytes((i,)) for i in range(128)]


def encode_varint(value: int) -> bytes:
    """Unsigned LEB128: 7 bits per byte, low groups first, high bit set on all but the last."""
    if value < 128:
        if value < 0:
            raise ValueError("varint must be non-negative")
        return _SMALL_VARINTS[value]
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_varint(data: bytes | memoryview, offset: int = 0) -> tuple[int, int]:
    """(value, offset after it). Raises ValueError on a truncated or over-long varint
    (callers turn that into a CorruptionError naming the file)."""
    result = 0
    shift = 0
    end = len(data)
    while True:
        if offset >= end:
            raise ValueError("truncated varint")
        byte = data[offset]
        offset += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, offset
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 64 bits")


def encode_fixed32(value: int) -> bytes:
    return FIXED32.pack(value)


def encode_fixed64(value: int) -> bytes:
    return FIXED64.pack(value)


def decode_fixed32(data: bytes | memoryview, offset: int = 0) -> int:
    return FIXED32.unpack_from(data, offset)[0]


def decode_fixed64(data: bytes | memoryview, offset: int = 0) -> int:
    return FIXED64.unpack_from(data, offset)[0]
