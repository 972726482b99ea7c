"""Record framing of the Raft log segments and snapshot files (docs/raft.md, "Raft log and
hard state").

The framing is byte for byte the storage engine's log framing (kvstore/lsm/wal_format.py,
docs/formats.md "Log"), written again here because `raft` imports nothing of ours: a file
is a sequence of 32 KiB blocks holding fragments, each a 9-byte header and a payload:

    crc: u32le      masked CRC32C (LevelDB's mask) of (length, type, payload)
    length: u16le   payload bytes in this fragment
    type: u8        FULL=1 | FIRST=2 | MIDDLE=3 | LAST=4
    hcheck: u16le   low 16 bits of CRC32C of the 7 bytes above

A record that does not fit in the rest of a block is split FIRST, MIDDLE..., LAST; fewer
than 9 bytes left in a block are zero-filled. On top of that framing, the first byte of
every Raft record payload is the record kind (ENTRY, HARD_STATE, SNAPSHOT, SNAPSHOT_MARK) and the
rest is the kind's msgpack body from raft/codec.py.

Torn tail or corruption: at the first fragment that is not intact, if the file ends inside
a fragment whose header checks, or no intact fragment follows the damage (searched at every
byte to the end of its block and at the start of every later block), the damage is a torn
tail: the end of an append that was never fsynced. It is cut and logged at WARNING. If an
intact fragment follows, synced data lies after the damage: `CorruptionError`. Damage in a
file that is never appended to (an older segment, a snapshot) is always corruption.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass

import crc32c as _crc

from raft.errors import RaftError

log = logging.getLogger(__name__)

BLOCK_SIZE = 32 * 1024  # on disk: do not change
HEADER_SIZE = 9  # on disk: do not change
MASK_DELTA = 0xA282EAD8  # on disk: do not change (LevelDB's mask)
HEADER = struct.Struct("<IHBH")  # on disk: do not change. crc, length, type, hcheck
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4  # fragment types. on disk: do not change

# Record kinds: the first payload byte. On disk: do not renumber.
RECORD_ENTRY = 1  # codec.encode_entry(entry)
RECORD_HARD_STATE = 2  # codec.encode_hard_state(hard_state)
RECORD_SNAPSHOT = 3  # codec.encode_snapshot(snapshot); only in snapshot files
RECORD_SNAPSHOT_MARK = 4  # codec.encode_snapshot_meta(meta); that snapshot takes effect here
RECORD_KINDS = frozenset(
    {RECORD_ENTRY, RECORD_HARD_STATE, RECORD_SNAPSHOT, RECORD_SNAPSHOT_MARK}
)

_U32 = 0xFFFFFFFF
_ZEROS = bytes(HEADER_SIZE)


class CorruptionError(RaftError):
    """Damaged bytes in a Raft data file that are not a torn tail: reported, never served."""

    def __init__(self, path: str, offset: int, reason: str) -> None:
        super().__init__(f"corruption in {path} at byte {offset}: {reason}")
        self.path = path
        self.offset = offset
        self.reason = reason


def crc32c(data: bytes | memoryview, value: int = 0) -> int:
    return _crc.crc32c(data, value)


def mask(crc: int) -> int:
    return ((((crc >> 15) | (crc << 17)) & _U32) + MASK_DELTA) & _U32


def unmask(masked: int) -> int:
    rot = (masked - MASK_DELTA) & _U32
    return ((rot >> 17) | (rot << 15)) & _U32


def encode_fragment(ftype: int, payload: bytes | memoryview) -> bytes:
    length_type = struct.pack("<HB", len(payload), ftype)
    head = struct.pack("<I", mask(crc32c(payload, crc32c(length_type)))) + length_type
    return head + struct.pack("<H", crc32c(head) & 0xFFFF) + bytes(payload)


def frame_records(payloads: list[bytes], file_size: int) -> bytes:
    """The bytes to append to a file of `file_size` bytes to add `payloads` as records."""
    out = bytearray()
    offset = file_size % BLOCK_SIZE
    for payload in payloads:
        view = memoryview(payload)
        pos, n, first = 0, len(payload), True
        while True:
            left = BLOCK_SIZE - offset
            if left < HEADER_SIZE:
                out += _ZEROS[:left]
                offset, left = 0, BLOCK_SIZE
            length = min(n - pos, left - HEADER_SIZE)
            last = pos + length == n
            ftype = (FULL if last else FIRST) if first else (LAST if last else MIDDLE)
            out += encode_fragment(ftype, view[pos : pos + length])
            offset = (offset + HEADER_SIZE + length) % BLOCK_SIZE
            pos += length
            first = False
            if last:
                break
    return bytes(out)


def record(kind: int, body: bytes) -> bytes:
    """A Raft record payload: the kind byte, then the body."""
    if kind not in RECORD_KINDS:
        raise ValueError(f"unknown record kind {kind}")
    return bytes([kind]) + body


@dataclass(frozen=True, slots=True)
class Record:
    kind: int
    body: bytes
    offset: int  # file offset of the record's first fragment


@dataclass(frozen=True, slots=True)
class ScanResult:
    records: list[Record]
    valid_size: int  # bytes up to the end of the last complete record
    torn_tail: bool  # bytes after valid_size were an incomplete final append


def _header_ok(data: bytes, pos: int) -> bool:
    _, length, ftype, hcheck = HEADER.unpack_from(data, pos)
    return (crc32c(data[pos : pos + 7]) & 0xFFFF == hcheck and FULL <= ftype <= LAST
            and length <= BLOCK_SIZE - pos % BLOCK_SIZE - HEADER_SIZE)


def _payload_ok(data: bytes, pos: int) -> bool:
    c, length, _, _ = HEADER.unpack_from(data, pos)
    body = data[pos + HEADER_SIZE : pos + HEADER_SIZE + length]
    return mask(crc32c(body, crc32c(data[pos + 4 : pos + 7]))) == c


def _next_intact(data: bytes, pos: int) -> int | None:
    n = len(data)
    block_end = min((pos // BLOCK_SIZE + 1) * BLOCK_SIZE, n)
    candidates = list(range(pos, block_end)) + list(range(block_end, n, BLOCK_SIZE))
    for p in candidates:
        if p + HEADER_SIZE > n or BLOCK_SIZE - p % BLOCK_SIZE < HEADER_SIZE:
            continue
        if _header_ok(data, p):
            length = HEADER.unpack_from(data, p)[1]
            if p + HEADER_SIZE + length <= n and _payload_ok(data, p):
                return p
    return None


def scan_records(data: bytes, *, path: str, tail_may_be_torn: bool) -> ScanResult:
    """Every record of a file's bytes, in order.

    Requires: `tail_may_be_torn` only for the newest segment (the only file appended to).
    Raises `CorruptionError` for damage that is not a torn tail, and for a record whose
    kind byte is unknown.
    """
    records: list[Record] = []
    n = len(data)
    pos = valid = 0
    parts: list[bytes] | None = None
    start = 0

    def damaged(at: int, search_from: int, reason: str, *, torn_if_alone: bool) -> ScanResult:
        found = _next_intact(data, search_from) if torn_if_alone else None
        if not torn_if_alone or found is not None or not tail_may_be_torn:
            extra = f"; an intact fragment follows at {found}" if found is not None else ""
            raise CorruptionError(path, at, reason + extra)
        cut = start if parts is not None else valid
        log.warning("%s: torn tail at byte %d (%s), cutting %d bytes", path, cut, reason, n - cut)
        return ScanResult(records, cut, True)

    while True:
        left = BLOCK_SIZE - pos % BLOCK_SIZE
        if left < HEADER_SIZE:
            pos += left
            continue
        if pos >= n:
            break
        if n - pos < HEADER_SIZE:
            return damaged(pos, n, "file ends inside a fragment header", torn_if_alone=True)
        _, length, ftype, _ = HEADER.unpack_from(data, pos)
        if not _header_ok(data, pos):
            return damaged(pos, pos + 1, "fragment header check failed", torn_if_alone=True)
        end = pos + HEADER_SIZE + length
        if end > n:
            return damaged(pos, n, "file ends inside a fragment", torn_if_alone=True)
        if not _payload_ok(data, pos):
            return damaged(pos, end, "checksum mismatch", torn_if_alone=True)
        body = data[pos + HEADER_SIZE : end]
        if ftype in (FULL, FIRST):
            if parts is not None:
                raise CorruptionError(path, pos, "a record starts inside another record")
            start, parts = pos, [body]
        else:
            if parts is None:
                raise CorruptionError(path, pos, "fragment outside a record")
            parts.append(body)
        pos = end
        if ftype in (FULL, LAST):
            assert parts is not None
            payload = b"".join(parts)
            parts = None
            valid = end
            if not payload or payload[0] not in RECORD_KINDS:
                kind = payload[0] if payload else None
                raise CorruptionError(path, start, f"unknown record kind {kind}")
            records.append(Record(payload[0], payload[1:], start))
    if parts is not None:
        return damaged(start, n, "file ends inside a fragmented record", torn_if_alone=True)
    return ScanResult(records, n, False)
