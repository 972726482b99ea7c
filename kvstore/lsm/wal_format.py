"""Framing of the write-ahead log (and of the manifest, which reuses it).

Layout (docs/formats.md, "Log"): the file is a sequence of 32 KiB blocks; each block holds
fragments, each fragment is a 9-byte header and up to BLOCK_SIZE - 9 payload bytes:

    crc: fixed32      masked CRC32C of (length, type, payload)
    length: fixed16   payload bytes in this fragment
    type: u8          FULL=1 | FIRST=2 | MIDDLE=3 | LAST=4 (0 is never written)
    hcheck: fixed16   low 16 bits of CRC32C of (length, type)

A record that does not fit in the rest of a block is split FIRST, MIDDLE..., LAST. When
fewer than 9 bytes remain in a block the writer fills them with zeros and starts the next
block. `hcheck` lets the reader trust a header (and so a length) before the payload is
complete: that is how it tells a torn tail from damage in the middle (see wal_reader).
"""

from __future__ import annotations

import struct

from .coding import crc32c

BLOCK_SIZE = 32 * 1024  # on disk: do not change
HEADER_SIZE = 9  # on disk: do not change
MAX_FRAGMENT = BLOCK_SIZE - HEADER_SIZE

# Fragment types. on disk: do not change
FULL = 1
FIRST = 2
MIDDLE = 3
LAST = 4

_U32 = 0xFFFFFFFF
_MASK_DELTA = 0xA282EAD8
LEN_TYPE = struct.Struct("<HB")
HEADER = struct.Struct("<IHBH")  # crc, length, type, hcheck


def encode_fragment(rtype: int, payload: bytes | memoryview) -> bytes:
    """Header + payload of one fragment (payload at most MAX_FRAGMENT bytes)."""
    n = len(payload)
    lc = crc32c(LEN_TYPE.pack(n, rtype))  # CRC of (length, type): hcheck, and the seed
    c = crc32c(payload, lc)
    c = ((((c >> 15) | (c << 17)) & _U32) + _MASK_DELTA) & _U32  # coding.mask, inlined
    return HEADER.pack(c, n, rtype, lc & 0xFFFF) + payload


def header_ok(data: bytes | memoryview, pos: int) -> bool:
    """Whether the 9 bytes at `pos` are a header the writer wrote: hcheck matches length
    and type, and both are possible at this position in the block.
    Requires pos + 9 <= len(data)."""
    _, length, rtype, hcheck = HEADER.unpack_from(data, pos)
    if crc32c(data[pos + 4:pos + 7]) & 0xFFFF != hcheck:
        return False
    return FULL <= rtype <= LAST and length <= BLOCK_SIZE - pos % BLOCK_SIZE - HEADER_SIZE


def payload_ok(data: bytes | memoryview, pos: int) -> bool:
    """Whether the fragment at `pos` (header_ok, payload complete) matches its CRC."""
    c, length, _, _ = HEADER.unpack_from(data, pos)
    # The CRC covers bytes 4..6 (length, type) then the payload after hcheck.
    actual = crc32c(data[pos + HEADER_SIZE:pos + HEADER_SIZE + length],
                    crc32c(data[pos + 4:pos + 7]))
    return ((((actual >> 15) | (actual << 17)) & _U32) + _MASK_DELTA) & _U32 == c
