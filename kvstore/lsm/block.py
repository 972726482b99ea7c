"""Blocks of an SSTable: contents layout, on-disk trailer, and the decoded form.

Contents of a block with n entries (docs/formats.md, "Blocks"), integers little-endian:

    keys:        key 0 | key 1 | ... | key n-1           (concatenated, no separators)
    values:      value 0 | ... | value n-1
    tags:        n x fixed64   seq << 8 | kind (0 in index blocks)
    key_ends:    n x fixed32   end offset of key i in the contents
    value_ends:  n x fixed32   end offset of value i (value 0 starts at key_ends[n-1])
    count:       fixed32       n

A column layout rather than LevelDB's prefix-compressed entries: decoding is a handful of
C-level calls (struct.unpack_from of each array, one slice per key) instead of a Python
loop over varints, which is what makes reads fast in CPython.

On disk each block is followed by a 5-byte trailer: type (u8: 0 none, 1 zlib) and the
masked CRC32C of the stored bytes and the type byte. A handle (offset, size) names the
stored bytes without the trailer.
"""

from __future__ import annotations

import struct
import sys
import zlib
from bisect import bisect_left
from collections.abc import Callable
from itertools import accumulate, repeat
from operator import and_, rshift

from .coding import KIND_DELETE, crc32c, masked_crc32c
from .errors import CorruptionError

TRAILER_SIZE = 5  # on disk: do not change
NO_COMPRESSION = 0  # on disk: do not change
ZLIB_COMPRESSION = 1  # on disk: do not change
COMPRESSION_TYPES = {"none": NO_COMPRESSION, "zlib": ZLIB_COMPRESSION}
ENTRY_OVERHEAD = 16  # tag + two ends per entry
_MIN_SAVING = 8  # keep a compressed block only if it is at least 1/8 smaller

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_LITTLE_ENDIAN = sys.byteorder == "little"
_TRAILER = struct.Struct("<BI")
_MASK_DELTA = 0xA282EAD8


def encode_block(keys: list[bytes], tags: list[int], values: list[bytes]) -> bytes:
    """The contents of a block (keys in the order they are to be read)."""
    n = len(keys)
    key_data = b"".join(keys)
    value_ends = list(accumulate(map(len, values), initial=len(key_data)))
    del value_ends[0]
    return b"".join((
        key_data,
        b"".join(values),
        struct.pack(f"<{n}Q", *tags),
        struct.pack(f"<{n}I", *accumulate(map(len, keys))),
        struct.pack(f"<{n}I", *value_ends),
        _U32.pack(n),
    ))


def seal_block(contents: bytes, compression: int = NO_COMPRESSION) -> bytes:
    """Stored bytes plus trailer, compressing when asked and when it pays."""
    ctype = NO_COMPRESSION
    if compression == ZLIB_COMPRESSION:
        packed = zlib.compress(contents, 1)
        if len(packed) < len(contents) - len(contents) // _MIN_SAVING:
            contents = packed
            ctype = ZLIB_COMPRESSION
    typ = bytes((ctype,))
    return b"".join((contents, typ, _U32.pack(masked_crc32c(typ, crc32c(contents)))))


def unseal_block(stored: bytes, path: str, offset: int, verify: bool = True) -> bytes:
    """The contents from stored bytes + trailer (a copy; see `open_block`)."""
    buf, size = open_block(stored, path, offset, verify)
    return buf[:size] if size != len(buf) else buf


def open_block(stored: bytes, path: str, offset: int, verify: bool = True
               ) -> tuple[bytes, int]:
    """(buffer, size): the block's contents are buffer[:size]. For an uncompressed block
    the buffer is `stored` itself (no copy). CorruptionError on a checksum mismatch, an
    unknown type or a block that does not decompress."""
    n = len(stored) - TRAILER_SIZE
    if n < 0:
        raise CorruptionError(path, offset, "block shorter than its trailer")
    ctype, expected = _TRAILER.unpack_from(stored, n)
    if verify:
        c = crc32c(memoryview(stored)[:n + 1])  # the stored bytes and the type byte
        if ((((c >> 15) | (c << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF != expected:
            raise CorruptionError(path, offset, "block checksum mismatch")
    if ctype == NO_COMPRESSION:
        return stored, n
    if ctype == ZLIB_COMPRESSION:
        try:
            contents = zlib.decompress(memoryview(stored)[:n])
        except zlib.error as e:
            raise CorruptionError(path, offset, f"block does not decompress: {e}") from None
        return contents, len(contents)
    raise CorruptionError(path, offset, f"unknown block type {ctype}")


def _layout(raw: bytes, size: int, path: str, offset: int
            ) -> tuple[int, int, memoryview | tuple[int, ...], int]:
    """(n, tags_at, ends, vbase) of the block raw[:size], checked for consistency.
    ends[i] = end of key i, ends[n + i] = end of value i (the two arrays are adjacent)."""
    if size < 4:
        raise CorruptionError(path, offset, "block shorter than its entry count")
    n = _U32.unpack_from(raw, size - 4)[0]
    tags_at = size - 4 - 16 * n
    if tags_at < 0:
        raise CorruptionError(path, offset, f"block of {size} bytes cannot hold {n} entries")
    if _LITTLE_ENDIAN:  # a view: no int objects until an offset is read
        ends = memoryview(raw)[tags_at + 8 * n:size - 4].cast("I")
    else:
        ends = _array_struct("I", 2 * n).unpack_from(raw, tags_at + 8 * n)
    vbase = 0
    if n:
        vbase = ends[n - 1]
        if vbase > tags_at or ends[-1] != tags_at or ends[n] < vbase:
            raise CorruptionError(path, offset, "block entry offsets are inconsistent")
    return n, tags_at, ends, vbase


def _find(raw: bytes, ends, n: int, tags_at: int, vbase: int, i: int, user_key: bytes,
          max_seq: int) -> tuple[int, int, bytes] | None:
    """The newest version with seq <= max_seq of `user_key`, whose first entry (if any)
    is at index i (the result of a bisect)."""
    if i == n or raw[ends[i - 1] if i else 0:ends[i]] != user_key:
        return None
    return _newest_version(raw, ends, n, tags_at, vbase, i, user_key, max_seq)


def _newest_version(raw: bytes, ends, n: int, tags_at: int, vbase: int, i: int,
                    user_key: bytes, max_seq: int) -> tuple[int, int, bytes] | None:
    """Requires: entry i holds `user_key` (its newest version). Walks the key's versions,
    newest first, to the first with seq <= max_seq."""
    while True:
        tag = _U64.unpack_from(raw, tags_at + 8 * i)[0]
        if tag >> 8 <= max_seq:
            return tag >> 8, tag & 0xFF, raw[ends[n + i - 1] if i else vbase:ends[n + i]]
        i += 1  # an older version of the same key, if there is one
        if i == n or raw[ends[i - 1]:ends[i]] != user_key:
            return None


def _bisect_in_place(raw: bytes, ends, n: int, user_key: bytes) -> int:
    """Index of the first key >= user_key, slicing only the keys compared."""
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi) >> 1
        if raw[ends[mid - 1] if mid else 0:ends[mid]] < user_key:
            lo = mid + 1
        else:
            hi = mid
    return lo


_U32_AT = _U32.unpack_from
_U32_PAIR = struct.Struct("<II").unpack_from
_U64_AT = _U64.unpack_from


def search_block(raw, size: int, user_key: bytes, max_seq: int, path: str, offset: int,
                 base: int = 0) -> tuple[int, int, bytes] | None:
    """Block.get without building a Block: for a block read once and not cached. The
    contents are raw[base:base + size]: `raw` is the block's bytes (base 0) or a whole
    table's memory map (base = offset: searched in place, no copy). Reads only the few
    array slots it needs with struct.unpack_from (no memoryview, no list of ends): the
    hot path of a point read that misses the cache."""
    if size < 4:
        raise CorruptionError(path, offset, "block shorter than its entry count")
    end_at = base + size
    n = _U32_AT(raw, end_at - 4)[0]
    tags_at = end_at - 4 - 16 * n  # absolute positions in raw from here on
    if tags_at < base:
        raise CorruptionError(path, offset, f"block of {size} bytes cannot hold {n} entries")
    if not n:
        return None
    ends_at = tags_at + 8 * n  # key_ends[j] at ends_at + 4 j, value_ends[j] at + 4 (n + j)
    vbase, first_value_end = _U32_PAIR(raw, ends_at + 4 * n - 4)  # key_ends[n-1], value 0
    if (vbase > tags_at - base or first_value_end < vbase
            or _U32_AT(raw, end_at - 8)[0] != tags_at - base):
        raise CorruptionError(path, offset, "block entry offsets are inconsistent")
    # The key's first entry: a C-level substring search of the concatenated keys
    # raw[base:base + vbase], a match accepted only where a key starts and ends exactly
    # there. Equal keys are adjacent, so the first whole-key match is the newest version.
    # The match's entry index is guessed from the mean key width (exact for fixed-size
    # keys) and checked against key_ends; a wrong guess falls back to a bisect of them.
    width = len(user_key)
    p = raw.find(user_key, base, base + vbase) - base
    while p >= 0:
        i = p * n // vbase
        if i:
            start, end = _U32_PAIR(raw, ends_at + 4 * i - 4)
        else:
            start, end = 0, _U32_AT(raw, ends_at)[0]
        if start != p:
            i = _key_ending_at(raw, ends_at, n, p + width)
            if i >= 0:
                start = _U32_AT(raw, ends_at + 4 * i - 4)[0] if i else 0
                end = p + width
        if start == p and end == p + width:
            break
        p = raw.find(user_key, base + p + 1, base + vbase) - base
    else:
        return None
    # The key's versions, newest first, to the first with seq <= max_seq.
    while True:
        tag = _U64_AT(raw, tags_at + 8 * i)[0]
        if tag >> 8 <= max_seq:
            if i:
                start, end = _U32_PAIR(raw, ends_at + 4 * (n + i - 1))
            else:
                start, end = vbase, first_value_end
            return tag >> 8, tag & 0xFF, raw[base + start:base + end]
        i += 1  # an older version of the same key, if there is one
        if i == n:
            return None
        start, end = _U32_PAIR(raw, ends_at + 4 * i - 4)
        if raw[base + start:base + end] != user_key:
            return None


def block_pairs(raw: bytes, size: int, path: str, offset: int
                ) -> list[tuple[bytes, bytes]] | None:
    """Block(raw, path, offset, size).pairs() without building the Block (a scan's block
    read once): the (key, value) pairs of raw[:size], or None if it holds a tombstone."""
    n, tags_at, ends, vbase = _layout(raw, size, path, offset)
    if KIND_DELETE in raw[tags_at:tags_at + 8 * n:8]:
        return None
    return list(zip(_slices(raw, 0, ends[:n]), _slices(raw, vbase, ends[n:]), strict=True))


_UNIFORM_RUN_ENDS: dict[tuple[int, int, int], bytes] = {}


def plain_run(stored: bytes, size: int, path: str, offset: int, verify: bool
              ) -> list[tuple[bytes, bytes]] | None:
    """A scan's block read once, in one call: block_pairs(*open_block(stored, ...)) for
    the stored bytes + trailer of an uncompressed block, or None if the block is
    compressed or holds a tombstone (the caller then takes the general path). Where every
    key has one width and every value another (fixed-size records), both end arrays are
    checked by one bytes comparison and keys and values are cut by one cached struct
    each; otherwise block_pairs does it. Raises CorruptionError as open_block and _layout
    do (checksum with `verify`, short block, inconsistent offsets)."""
    if len(stored) != size + TRAILER_SIZE:
        raise CorruptionError(path, offset, "data block runs past the end of the file")
    if stored[size] != NO_COMPRESSION:
        return None
    if verify:
        c = crc32c(memoryview(stored)[:size + 1])  # the stored bytes and the type byte
        if ((((c >> 15) | (c << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF != \
                _U32_AT(stored, size + 1)[0]:
            raise CorruptionError(path, offset, "block checksum mismatch")
    if size < 4:
        raise CorruptionError(path, offset, "block shorter than its entry count")
    n = _U32_AT(stored, size - 4)[0]
    tags_at = size - 4 - 16 * n
    if tags_at < 0:
        raise CorruptionError(path, offset, f"block of {size} bytes cannot hold {n} entries")
    if not n:
        return []
    if KIND_DELETE in stored[tags_at:tags_at + 8 * n:8]:
        return None
    ends_at = tags_at + 8 * n
    width = _U32_AT(stored, ends_at)[0]  # of key 0
    vbase = width * n
    vwidth, rest = divmod(tags_at - vbase, n)
    if not rest and 0 < width <= 4096 and 0 < vwidth <= 4096:
        uniform = _UNIFORM_RUN_ENDS.get((width, vwidth, n))
        if uniform is None:
            if len(_UNIFORM_RUN_ENDS) > 4096:
                _UNIFORM_RUN_ENDS.clear()
            uniform = _UNIFORM_RUN_ENDS[(width, vwidth, n)] = struct.pack(
                f"<{2 * n}I", *range(width, vbase + width, width),
                *range(vbase + vwidth, tags_at + vwidth, vwidth))
        if stored[ends_at:size - 4] == uniform:
            return list(zip(_pieces(width, n)(stored, 0), _pieces(vwidth, n)(stored, vbase),
                            strict=True))
    return block_pairs(stored, size, path, offset)


def _pieces(width: int, n: int) -> Callable[..., tuple[bytes, ...]]:
    """unpack_from of n adjacent pieces of `width` bytes (cached)."""
    unpack = _PIECES.get((width, n))
    if unpack is None:
        if len(_PIECES) > 4096:
            _PIECES.clear()
        unpack = _PIECES[(width, n)] = struct.Struct("<" + f"{width}s" * n).unpack_from
    return unpack


def _key_ending_at(raw: bytes, ends_at: int, n: int, end: int) -> int:
    """The index i < n with key_ends[i] == end, or -1 (a bisect of key_ends)."""
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi) >> 1
        if _U32_AT(raw, ends_at + 4 * mid)[0] < end:
            lo = mid + 1
        else:
            hi = mid
    return lo if lo < n and _U32_AT(raw, ends_at + 4 * lo)[0] == end else -1


class Block:
    """A decoded block, shared through the block cache by many threads.

    Decoding is lazy: a block read for one point lookup is searched in place (a bisect
    over its key_ends array, slicing only the keys it compares), since most such blocks
    are never read again; `decode()` (called by the reader when a block is reused from
    the cache, and by iteration) builds the list of keys once, after which lookups are a
    C-level bisect. Invariant: keys ascending, equal keys by seq descending.
    """

    __slots__ = ("_keys", "charge", "ends", "n", "raw", "tags_at", "vbase")

    def __init__(self, raw: bytes, path: str = "<block>", offset: int = 0,
                 size: int | None = None) -> None:
        """Decode the block whose contents are raw[:size] (all of raw by default)."""
        if size is None:
            size = len(raw)
        n, tags_at, ends, vbase = _layout(raw, size, path, offset)
        self.raw = raw
        self.n = n
        self.ends = ends
        self.tags_at = tags_at
        self.vbase = vbase
        self._keys: list[bytes] | None = None
        self.charge = size + 48 * n  # about the memory the fully decoded form holds

    def __len__(self) -> int:
        return self.n

    def decode(self) -> list[bytes]:
        """The keys as a list (built once; safe to race: both builders agree)."""
        keys = self._keys
        if keys is None:
            keys = self._keys = _slices(self.raw, 0, self.ends[:self.n])
        return keys

    @property
    def keys(self) -> list[bytes]:
        return self._keys if self._keys is not None else self.decode()

    def seek(self, user_key: bytes) -> int:
        """Index of the first entry whose key is >= user_key."""
        keys = self._keys
        if keys is not None:
            return bisect_left(keys, user_key)
        return _bisect_in_place(self.raw, self.ends, self.n, user_key)

    def get(self, user_key: bytes, max_seq: int) -> tuple[int, int, bytes] | None:
        """(seq, kind, value) of the newest version of `user_key` with seq <= max_seq."""
        keys = self._keys
        n = self.n
        if keys is not None:
            i = bisect_left(keys, user_key)
        else:
            i = _bisect_in_place(self.raw, self.ends, n, user_key)
        return _find(self.raw, self.ends, n, self.tags_at, self.vbase, i, user_key, max_seq)

    def last_key(self) -> bytes | None:
        n = self.n
        return self.raw[self.ends[n - 2] if n > 1 else 0:self.ends[n - 1]] if n else None

    def values(self, start: int = 0) -> list[bytes]:
        n = self.n
        first = self.ends[n + start - 1] if start else self.vbase
        return _slices(self.raw, first, self.ends[n + start:])

    def pairs(self, start: int = 0) -> list[tuple[bytes, bytes]] | None:
        """(key, value) of entries `start`.. if none of them is a tombstone, else None
        (a scan's plain run: built by one zip, no seq or kind per entry)."""
        n = self.n
        tags_at = self.tags_at
        # the kind is the low byte of each little-endian tag: one strided slice
        if KIND_DELETE in self.raw[tags_at + 8 * start:tags_at + 8 * n:8]:
            return None
        keys = self.keys
        return list(zip(keys[start:] if start else keys, self.values(start), strict=True))

    def entries(self, start: int = 0):
        """Iterator of (key, seq, kind, value) from entry `start` on, built with C-level
        calls (zip of lists) rather than a Python generator."""
        tags = _uint64s(self.n - start).unpack_from(self.raw, self.tags_at + 8 * start)
        keys = self.keys
        return zip(keys[start:] if start else keys, map(rshift, tags, repeat(8)),
                   map(and_, tags, repeat(0xFF)), self.values(start), strict=True)


_STRUCTS: dict[tuple[str, int], struct.Struct] = {}


_PIECES: dict[tuple[int, int], Callable[..., tuple[bytes, ...]]] = {}


_UNIFORM_ENDS: dict[tuple[int, int, int], bytes] = {}


def _slices(raw: bytes, first: int, ends) -> list[bytes]:
    """[raw[first:ends[0]], raw[ends[0]:ends[1]], ...]. Where every piece has the same
    length (fixed-size keys or values, common in key-value workloads) one cached
    struct.unpack_from makes them all in C, about 3x faster than a slice per piece.
    The ends as a (little-endian) memoryview are checked for equal widths by one bytes
    comparison with the cached ends of equal pieces."""
    n = len(ends)
    if not n:
        return []
    width = ends[0] - first
    if 0 < width <= 4096 and ends[-1] - first == n * width:
        if isinstance(ends, memoryview):
            uniform = _UNIFORM_ENDS.get((first, width, n))
            if uniform is None:
                if len(_UNIFORM_ENDS) > 4096:
                    _UNIFORM_ENDS.clear()
                uniform = _UNIFORM_ENDS[(first, width, n)] = struct.pack(
                    f"<{n}I", *range(first + width, first + (n + 1) * width, width))
            same = ends.tobytes() == uniform
        else:
            same = list(ends) == list(range(first + width, first + (n + 1) * width, width))
        if same:
            unpack = _PIECES.get((width, n))
            if unpack is None:
                if len(_PIECES) > 4096:
                    _PIECES.clear()
                unpack = _PIECES[(width, n)] = struct.Struct("<" + f"{width}s" * n).unpack_from
            return list(unpack(raw, first))
    ends = ends.tolist() if isinstance(ends, memoryview) else list(ends)
    return list(map(raw.__getitem__, map(slice, [first, *ends], ends)))


def _array_struct(code: str, n: int) -> struct.Struct:
    s = _STRUCTS.get((code, n))
    if s is None:
        if len(_STRUCTS) > 4096:
            _STRUCTS.clear()
        s = _STRUCTS[(code, n)] = struct.Struct(f"<{n}{code}")
    return s


def _uint64s(n: int) -> struct.Struct:
    return _STRUCTS.get(("Q", n)) or _array_struct("Q", n)
