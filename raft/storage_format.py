"""Record framing of the Raft log segments and snapshot files (docs/raft.md, "Raft log and
hard state").

The framing is the storage engine's log framing (kvstore/lsm/wal_format.py, docs/formats.md):
a checksum, a length, a type byte, then the payload, with the checksum a *masked* CRC32C
(LevelDB's mask) over the type byte followed by the payload. `raft` imports nothing of ours,
so the few lines are repeated here. Unlike the engine's log there are no 32 KiB blocks: a
record is never fragmented, so the length is 4 bytes wide.

    record  := checksum:u32le  length:u32le  type:u8  payload:length bytes
    checksum = mask(crc32c(type || payload))
    mask(c)  = ((c >> 15) | (c << 17)) + 0xa282ead8   (mod 2^32)

How a torn tail is told from corruption: the driver writes one Ready's records with one
write and one fsync at the end of the newest segment, so a crash can damage only bytes after
the last fsync, at the end of the newest file. When a record fails to parse (short header,
a length past the end of the file, an unknown type, or a checksum mismatch) the reader looks
for any well-formed record starting at a later offset. If there is none, the damage is a
torn tail: it is cut (when allowed) and logged at WARNING. If there is one, synced data
after the damage exists, so the damage is corruption and `CorruptionError` is raised; the
same holds for any damage in a file that is not the newest segment.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass

import crc32c

log = logging.getLogger(__name__)

HEADER = struct.Struct("<IIB")  # on disk: do not change
HEADER_SIZE = HEADER.size  # 9
MASK_DELTA = 0xA282EAD8  # on disk: do not change (LevelDB's mask)
MAX_RECORD_PAYLOAD = 1 << 30  # a longer length field is damage, not a record

# Record types. On disk: do not renumber.
RECORD_ENTRY = 1  # payload: codec.encode_entry(entry)
RECORD_HARD_STATE = 2  # payload: codec.encode_hard_state(hard_state)
RECORD_SNAPSHOT = 3  # payload: codec.encode_snapshot(snapshot); only in snapshot files
RECORD_RESET = 4  # payload: codec.encode_snapshot_meta(meta); the log restarts after it
RECORD_TYPES = frozenset({RECORD_ENTRY, RECORD_HARD_STATE, RECORD_SNAPSHOT, RECORD_RESET})


class CorruptionError(Exception):
    """Damaged bytes in a Raft data file that are not a torn tail: reported, never served."""

    def __init__(self, path: str, offset: int, reason: str) -> None:
        super().__init__(f"corruption in {path} at byte {offset}: {reason}")
        self.path = path
        self.offset = offset
        self.reason = reason


def mask(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + MASK_DELTA) & 0xFFFFFFFF


def unmask(masked: int) -> int:
    rot = (masked - MASK_DELTA) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


def record_checksum(rtype: int, payload: bytes) -> int:
    return mask(crc32c.crc32c(payload, crc32c.crc32c(bytes([rtype]))))


def encode_record(rtype: int, payload: bytes) -> bytes:
    if rtype not in RECORD_TYPES:
        raise ValueError(f"unknown record type {rtype}")
    if len(payload) > MAX_RECORD_PAYLOAD:
        raise ValueError(f"record payload of {len(payload)} bytes is too large")
    return HEADER.pack(record_checksum(rtype, payload), len(payload), rtype) + payload


@dataclass(frozen=True, slots=True)
class Record:
    type: int
    payload: bytes
    offset: int


@dataclass(frozen=True, slots=True)
class ScanResult:
    records: list[Record]
    valid_size: int  # bytes of complete, checksummed records from the start
    torn_tail: bool  # bytes after valid_size were an incomplete final write


def _parse_at(data: bytes | memoryview, offset: int) -> tuple[Record | None, str]:
    """The record at `offset`, or (None, why not)."""
    end = len(data)
    if end - offset < HEADER_SIZE:
        return None, "incomplete record header"
    checksum, length, rtype = HEADER.unpack_from(data, offset)
    if rtype not in RECORD_TYPES:
        return None, f"unknown record type {rtype}"
    if length > MAX_RECORD_PAYLOAD or offset + HEADER_SIZE + length > end:
        return None, f"record length {length} runs past the end of the file"
    payload = bytes(data[offset + HEADER_SIZE : offset + HEADER_SIZE + length])
    if record_checksum(rtype, payload) != checksum:
        return None, "checksum mismatch"
    return Record(rtype, payload, offset), ""


def _valid_record_after(data: bytes, offset: int) -> int | None:
    for start in range(offset + 1, len(data) - HEADER_SIZE + 1):
        rec, _ = _parse_at(data, start)
        if rec is not None:
            return start
    return None


def scan_records(data: bytes, *, path: str, tail_may_be_torn: bool) -> ScanResult:
    """Every record of a file's bytes, in order.

    Requires: `tail_may_be_torn` only for the newest segment (the only file that is appended
    to). Raises `CorruptionError` for damage that is not a torn tail.
    """
    records: list[Record] = []
    offset = 0
    while offset < len(data):
        rec, why = _parse_at(data, offset)
        if rec is None:
            later = _valid_record_after(data, offset)
            if later is not None:
                raise CorruptionError(path, offset, f"{why}; a valid record follows at {later}")
            if not tail_may_be_torn:
                raise CorruptionError(path, offset, why)
            log.warning("%s: torn tail at byte %d (%s), cutting %d bytes",
                        path, offset, why, len(data) - offset)
            return ScanResult(records, offset, True)
        records.append(rec)
        offset += HEADER_SIZE + len(rec.payload)
    return ScanResult(records, offset, False)
