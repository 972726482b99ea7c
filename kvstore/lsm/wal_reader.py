"""Reads a log back, telling a torn tail from damage in the middle (docs/formats.md, "Log").

Theory of operation. The reader walks fragments from the start. At the first fragment
that is not intact it decides:

- Torn tail (cut, logged at WARNING, `torn_tail = True`): the file ends inside a fragment
  whose header checks (the crash came mid-append), or the damaged bytes are the last
  thing in the file: no intact fragment follows them. `valid_size` is then the end of
  the last complete record; a record whose FIRST fragment was written but not its LAST
  is cut too.
- Corruption (raise CorruptionError(path, offset, reason)): an intact fragment follows the
  damage, i.e. the log went on after it, so records would be lost silently. Also any
  intact fragment out of sequence (MIDDLE without FIRST, ...).

"Intact fragment follows" is searched where a writer could have put one: for a header
that checks (so its length is trusted) but whose payload CRC fails, from the end of its
payload; for a header that does not check, at every byte after it in its block and at
the start of every later block (every block starts with a fragment header).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from .coding import crc32c as crc
from .errors import CorruptionError
from .wal_format import (
    BLOCK_SIZE,
    FIRST,
    FULL,
    HEADER,
    HEADER_SIZE,
    LAST,
    MIDDLE,
    header_ok,
    payload_ok,
)

log = logging.getLogger(__name__)

_U32 = 0xFFFFFFFF
_MASK_DELTA = 0xA282EAD8  # coding.mask, inlined in the loop


class LogReader:
    """Iterate over the payloads of a whole log held in memory.

    After iteration: `valid_size` (bytes of complete records, what to truncate to),
    `torn_tail`, and during it `record_offset` (file offset of the record just yielded).
    """

    def __init__(self, data: bytes, *, path: str) -> None:
        self._data = data
        self.path = path
        self.valid_size = 0
        self.torn_tail = False
        self.record_offset = 0

    def __iter__(self) -> Iterator[bytes]:
        data = self._data
        n = len(data)
        unpack = HEADER.unpack_from
        pos = 0
        parts: list[bytes] | None = None  # fragments of a record begun by FIRST
        start = 0  # offset of the record being assembled
        while True:
            left = BLOCK_SIZE - pos % BLOCK_SIZE
            if left < HEADER_SIZE:  # zero trailer of a block
                pos += left
                continue
            if pos >= n:
                break
            if n - pos < HEADER_SIZE:
                self._torn(parts, start, pos, "file ends inside a fragment header")
                return
            c, length, rtype, hcheck = unpack(data, pos)
            lc = crc(data[pos + 4:pos + 7])  # (length, type): hcheck, and the CRC's seed
            if (lc & 0xFFFF != hcheck or not FULL <= rtype <= LAST
                    or length > left - HEADER_SIZE):
                self._damaged(pos, pos + 1, parts, start, "fragment header check failed")
                return
            end = pos + HEADER_SIZE + length
            if end > n:
                self._torn(parts, start, pos, "file ends inside a fragment")
                return
            body = data[pos + HEADER_SIZE:end]
            actual = crc(body, lc)
            if ((((actual >> 15) | (actual << 17)) & _U32) + _MASK_DELTA) & _U32 != c:
                self._damaged(pos, end, parts, start, "fragment checksum mismatch")
                return
            if rtype == FULL:
                if parts is not None:
                    raise CorruptionError(self.path, pos, "FULL fragment inside a record")
                self.record_offset = pos
                pos = end
                self.valid_size = end
                yield body
            elif rtype == FIRST:
                if parts is not None:
                    raise CorruptionError(self.path, pos, "FIRST fragment inside a record")
                parts = [body]
                start = pos
                pos = end
            elif rtype == MIDDLE:
                if parts is None:
                    raise CorruptionError(self.path, pos, "MIDDLE fragment outside a record")
                parts.append(body)
                pos = end
            else:  # LAST
                if parts is None:
                    raise CorruptionError(self.path, pos, "LAST fragment outside a record")
                parts.append(body)
                record = b"".join(parts)
                parts = None
                self.record_offset = start
                pos = end
                self.valid_size = end
                yield record
        if parts is not None:
            self._torn(parts, start, n, "file ends inside a fragmented record")
        else:
            self.valid_size = n  # only block-trailer zeros after the last record

    def _torn(self, parts: list[bytes] | None, start: int, pos: int, reason: str) -> None:
        self.valid_size = start if parts is not None else pos
        self.torn_tail = True
        log.warning("%s: torn tail at offset %d (%s); %d bytes cut",
                    self.path, self.valid_size, reason, len(self._data) - self.valid_size)

    def _damaged(self, pos: int, search_from: int, parts: list[bytes] | None, start: int,
                 reason: str) -> None:
        found = _next_intact_fragment(self._data, search_from)
        if found is not None:
            raise CorruptionError(
                self.path, pos, f"{reason}, and an intact fragment follows at offset {found}")
        self._torn(parts, start, pos, reason)


def _next_intact_fragment(data: bytes, pos: int) -> int | None:
    """Offset of the first intact fragment at or after `pos`: any byte up to the end of
    pos's block, then the start of each later block."""
    n = len(data)
    block_end = min((pos // BLOCK_SIZE + 1) * BLOCK_SIZE, n)
    candidates = list(range(pos, block_end))
    candidates += range(block_end if block_end % BLOCK_SIZE == 0 else n, n, BLOCK_SIZE)
    for p in candidates:
        if p + HEADER_SIZE > n or BLOCK_SIZE - p % BLOCK_SIZE < HEADER_SIZE:
            continue
        if not FULL <= data[p + 6] <= LAST:  # cheap filter: the type byte
            continue
        if header_ok(data, p):
            length = HEADER.unpack_from(data, p)[1]
            if p + HEADER_SIZE + length <= n and payload_ok(data, p):
                return p
    return None
