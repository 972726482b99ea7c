"""Reads an SSTable written by sstable_builder (docs/formats.md, "SSTable").

Open reads the footer and, in one pread, the filter, index and props blocks, verifies
their checksums and keeps them decoded in memory. A point read is then: bloom filter,
bisect of the index keys, one data block. An uncompressed block of a memory-mapped table
is searched in place in the map (the OS page cache is its cache). Otherwise the block
comes from the block cache (decoded to a key list the first time it is reused), or from
one pread + checksum + a search of its bytes in place; it enters the cache when a point
read misses it twice within the cache's admission window (cache.py), or when an iteration
asks to fill the cache. A data block's checksum is checked on its first read through
this reader and the success remembered (the file is immutable); a mismatch is not, so
any damage raises CorruptionError at open or on every read that touches it.
"""

from __future__ import annotations

import struct
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from itertools import chain

from .block import (
    _MASK_DELTA,
    _U32,
    NO_COMPRESSION,
    TRAILER_SIZE,
    Block,
    open_block,
    plain_run,
    search_block,
    unseal_block,
)
from .bloom import BloomFilter
from .cache import BlockCache
from .coding import crc32c, decode_varint, masked_crc32c
from .errors import CorruptionError, EngineClosedError
from .filesystem import FileSystem, RandomAccessFile
from .sstable_builder import FOOTER_BODY, FOOTER_SIZE, FORMAT_VERSION, MAGIC, PROPS

Entry = tuple[bytes, int, int, bytes]
READ_AHEAD = 64 * 1024  # bytes an iteration reads at once
ADMIT_SAMPLE = 8  # a point read's miss consults the cache's doorkeeper once in this many


class TableReader:
    """An open table. Thread-safe: reads use pread and immutable decoded blocks."""

    def __init__(self, file: RandomAccessFile, path: str, file_number: int,
                 cache: BlockCache | None, verify_checksums: bool = True) -> None:
        self._file = file
        # Point lookups read through read_random where the file has it (a memory map),
        # or search the block in place in the file's memory map where it has one.
        self._read_random = getattr(file, "read_random", file.read)
        self._map = getattr(file, "mapping", None)
        self.path = path
        self.file_number = file_number
        self._cache = cache
        self._verify = verify_checksums
        self.file_size = size = file.size
        if size < FOOTER_SIZE:
            raise CorruptionError(path, 0, f"file of {size} bytes is shorter than the "
                                  f"{FOOTER_SIZE}-byte footer")
        footer_at = size - FOOTER_SIZE
        footer = file.read(footer_at, FOOTER_SIZE)
        if len(footer) != FOOTER_SIZE:
            raise CorruptionError(path, footer_at, "short read of the footer")
        if footer[-len(MAGIC):] != MAGIC:
            raise CorruptionError(path, size - len(MAGIC), "bad magic number (not a table "
                                  "or a truncated one)")
        body_size = FOOTER_BODY.size
        if masked_crc32c(footer[:body_size]) != struct.unpack_from("<I", footer, body_size)[0]:
            raise CorruptionError(path, footer_at, "footer checksum mismatch")
        f_off, f_size, i_off, i_size, p_off, p_size, version = FOOTER_BODY.unpack_from(footer)
        if version != FORMAT_VERSION:
            raise CorruptionError(path, footer_at, f"unknown table format version {version}")
        handles = [(i_off, i_size), (p_off, p_size)] + ([(f_off, f_size)] if f_size else [])
        meta_at = min(off for off, _ in handles)
        for off, sz in handles:
            if off + sz + TRAILER_SIZE > footer_at:
                raise CorruptionError(path, footer_at, "footer names a block past its end")
        meta = file.read(meta_at, footer_at - meta_at)

        def meta_block(off: int, sz: int) -> bytes:
            stored = meta[off - meta_at:off - meta_at + sz + TRAILER_SIZE]
            return unseal_block(stored, path, off, True)

        self._read_props(meta_block(p_off, p_size), p_off)
        index = Block(meta_block(i_off, i_size), path, i_off)
        self._read_index(index, i_off, meta_at)
        self._bloom: BloomFilter | None = None
        if f_size:
            try:
                self._bloom = BloomFilter(meta_block(f_off, f_size))
            except ValueError as e:
                raise CorruptionError(path, f_off, f"filter block: {e}") from None
        # The filter's parts, for the engine's get, which probes it inline (bits None:
        # no filter, every key may be here).
        bloom = self._bloom
        self.bloom_bits = None if bloom is None else bloom._bits
        self.bloom_nbits = 0 if bloom is None else bloom._nbits
        self.bloom_probes = range(0) if bloom is None else bloom._k

    def _read_props(self, props: bytes, offset: int) -> None:
        try:
            self.num_entries, self.min_seq, self.max_seq, self._nblocks = \
                PROPS.unpack_from(props)
            n, pos = decode_varint(props, PROPS.size)
            self.smallest = props[pos:pos + n]
            pos += n
            n, pos = decode_varint(props, pos)
            self.largest = props[pos:pos + n]
            if pos + n != len(props):
                raise ValueError("size does not match its fields")
        except (ValueError, struct.error) as e:
            raise CorruptionError(self.path, offset, f"props block: {e}") from None

    def _read_index(self, index: Block, offset: int, data_end: int) -> None:
        n = len(index)
        if n != self._nblocks:
            raise CorruptionError(self.path, offset, f"index has {n} entries; props say "
                                  f"{self._nblocks} data blocks")
        raw = index.raw
        if index.tags_at - index.vbase != 12 * n:
            raise CorruptionError(self.path, offset, "index values are not block handles")
        handles = list(struct.iter_unpack("<QI", memoryview(raw)[index.vbase:index.tags_at]))
        self._offsets = [h[0] for h in handles]
        self._sizes = [h[1] for h in handles]
        expected = 0
        for off, sz in zip(self._offsets, self._sizes, strict=True):
            if off != expected:
                raise CorruptionError(self.path, offset, f"index names a block at {off}; "
                                      f"expected {expected}")
            expected = off + sz + TRAILER_SIZE
        if expected > data_end:
            raise CorruptionError(self.path, offset, "index names blocks past the data")
        self._index_keys = index.keys
        # Block cache keys: one int per block (file number, block index), cheaper to hash
        # than a tuple; file numbers are never reused.
        base = self.file_number << 32
        self._cache_keys = list(range(base, base + n))
        # verified[i]: data block i's checksum matched once through this reader. The file
        # is immutable and its bytes stay those that were checked, so later reads of the
        # block trust that check (as a block cache trusts the block it decoded once); a
        # mismatch is never recorded, so a damaged block fails every read of it.
        self._verified = bytearray(n)
        if n and (index.keys[-1] != self.largest):
            raise CorruptionError(self.path, offset, "index and props disagree on the "
                                  "largest key")

    @classmethod
    def open(cls, fs: FileSystem, path: str, file_number: int, cache: BlockCache | None,
             *, verify_checksums: bool = True) -> TableReader:
        file = fs.open_random_access(path)
        try:
            return cls(file, path, file_number, cache, verify_checksums)
        except BaseException:
            file.close()
            raise

    # -- reads ------------------------------------------------------------------------
    def may_contain(self, user_key: bytes, hashes: tuple[int, int] | None = None) -> bool:
        """False only if the table surely has no version of `user_key`. `hashes`:
        bloom.key_hashes(user_key), computed once by a caller that asks several tables."""
        bloom = self._bloom
        return bloom is None or bloom.may_contain(user_key, hashes)

    def get(self, user_key: bytes, max_seq: int, hashes: tuple[int, int] | None = None,
            *, filtered: bool = False) -> tuple[int, int, bytes] | None:
        """(seq, kind, value) of the newest version with seq <= max_seq, or None.
        `hashes`: bloom.key_hashes(user_key) if the caller has it (saves one hash);
        `filtered`: the caller already asked the bloom filter (may_contain said yes)."""
        bloom = self._bloom
        if bloom is not None and not filtered and not bloom.may_contain(user_key, hashes):
            return None
        return self.search(user_key, max_seq)

    def search(self, user_key: bytes, max_seq: int) -> tuple[int, int, bytes] | None:
        """`get` after the bloom filter said yes: the index, then one block, from the
        cache or read and searched in place. (The engine's get probes the filter inline
        and calls this.)"""
        i = bisect_left(self._index_keys, user_key)
        if i == self._nblocks:
            return None
        off = self._offsets[i]
        size = self._sizes[i]
        m = self._map
        if m is not None and self._verify:
            # An uncompressed block in the table's memory map is searched where it lies
            # (no copy, no Block object), its checksum checked on its first read through
            # this reader. The block cache is not consulted: the map is a cache already
            # (the OS page cache), a decoded block would save nothing over this search,
            # and probing, admitting and evicting cost ~1.3 us per read on uniform reads
            # over data larger than the cache. A closed map raises ValueError.
            try:
                if m[off + size] == NO_COMPRESSION:
                    verified = self._verified
                    if not verified[i]:
                        c = crc32c(memoryview(m)[off:off + size + 1])  # contents + type
                        if ((((c >> 15) | (c << 17)) & 0xFFFFFFFF) + _MASK_DELTA) \
                                & 0xFFFFFFFF != _U32.unpack_from(m, off + size + 1)[0]:
                            raise CorruptionError(self.path, off, "block checksum mismatch")
                        verified[i] = 1
                    return search_block(m, size, user_key, max_seq, self.path, off, off)
            except ValueError:
                raise EngineClosedError(f"{self.path}: read after close") from None
        cache = self._cache
        if cache is not None:
            # Blocks read by pread or compressed: the probe is the cache dict's own get
            # (no lock, no Python frame), so a miss costs next to nothing; 1 miss in
            # ADMIT_SAMPLE asks the doorkeeper whether the block was missed before
            # (cache.py).
            key = self._cache_keys[i]
            item = cache.probe(key)
            if item is not None:
                block = cache.touch(key, item)
                if block._keys is None:  # type: ignore[attr-defined]
                    block.decode()  # type: ignore[attr-defined]  # reused: decode once
                return block.get(user_key, max_seq)  # type: ignore[attr-defined]
            cache.misses += 1
            if not cache.misses % ADMIT_SAMPLE and cache.admit(key):
                block = self._load(i, False, self._read_random)
                cache.insert(key, block, block.charge)
                return block.get(user_key, max_seq)
        # Read once: search the bytes in place, no Block object.
        stored = self._read_random(off, size + TRAILER_SIZE)
        if len(stored) != size + TRAILER_SIZE:
            raise CorruptionError(self.path, off, "data block runs past the end of the file")
        if stored[size] != NO_COMPRESSION:
            stored, size = open_block(stored, self.path, off, self._verify)
        elif self._verify:  # open_block's check, inlined, once per block
            verified = self._verified
            if not verified[i]:
                c = crc32c(memoryview(stored)[:size + 1])  # the stored bytes and type byte
                if ((((c >> 15) | (c << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF != \
                        _U32.unpack_from(stored, size + 1)[0]:
                    raise CorruptionError(self.path, off, "block checksum mismatch")
                verified[i] = 1
        else:  # with its index check
            return self._load(i, False, self._read_random).get(user_key, max_seq)
        return search_block(stored, size, user_key, max_seq, self.path, off)

    def _block(self, i: int, fill_cache: bool, read=None) -> Block:
        cache = self._cache
        if cache is not None:
            block = cache.get(self._cache_keys[i])
            if block is not None:
                return block  # type: ignore[return-value]
        return self._load(i, fill_cache, read)

    def _load(self, i: int, fill_cache: bool, read=None) -> Block:
        """Read, check and decode data block i; add it to the cache if asked."""
        off = self._offsets[i]
        size = self._sizes[i]
        stored = (read or self._file.read)(off, size + TRAILER_SIZE)
        if len(stored) != size + TRAILER_SIZE:
            raise CorruptionError(self.path, off, "data block runs past the end of the file")
        verify = self._verify and not self._verified[i]
        if verify or stored[size] != NO_COMPRESSION:
            stored, size = open_block(stored, self.path, off, verify)
            if verify:
                self._verified[i] = 1
        block = Block(stored, self.path, off, size)
        # With checksums verified, a block is what the builder wrote; without, at least
        # make sure it is the block the index meant.
        if not self._verify and block.last_key() != self._index_keys[i]:
            raise CorruptionError(self.path, off, "data block does not match its index entry")
        if fill_cache and self._cache is not None:
            self._cache.insert(self._cache_keys[i], block, block.charge)
        return block

    def iterate(self, start: bytes | None = None, *, fill_cache: bool = False
                ) -> Iterator[Entry]:
        """(user_key, seq, kind, value) in internal order from the first user_key >=
        start. Blocks are read as the iterator reaches them; by default they are not added
        to the cache (a scan or compaction would evict the hot blocks of point reads)."""
        return chain.from_iterable(self._block_entries(start, fill_cache))

    def runs(self, start: bytes | None = None, *, fill_cache: bool = False,
             visible_at: int | None = None) -> Iterator[Iterable[Entry]]:
        """What `iterate` yields, one run per data block (the scan's merge takes whole
        blocks at a time). With `visible_at` (a scan's snapshot) and every entry of the
        table at or below it, a block without tombstones comes as a plain run: a list of
        (key, value) pairs (see merge.merge_visible_runs)."""
        plain = visible_at is not None and self.max_seq <= visible_at
        return self._block_entries(start, fill_cache, plain)

    def _block_entries(self, start: bytes | None, fill_cache: bool, plain: bool = False):
        first = 0 if start is None else bisect_left(self._index_keys, start)
        read = _ReadAhead(self._file.read).read  # blocks are adjacent in the file
        quick = plain and self._verify and not fill_cache
        # The quick path (a plain scan with checksums on, not filling the cache): a block
        # read once becomes a plain run in one call (block.plain_run); a cached block
        # gives its pairs; a block with a tombstone or compressed takes the general path.
        probe = None if self._cache is None else self._cache.probe
        cache_keys = self._cache_keys
        offsets = self._offsets
        sizes = self._sizes
        verified = self._verified
        path = self.path
        for i in range(first, self._nblocks):
            if quick and (start is None or i != first):
                item = None if probe is None else probe(cache_keys[i])
                if item is None:
                    off = offsets[i]
                    size = sizes[i]
                    pairs = plain_run(read(off, size + TRAILER_SIZE), size, path, off,
                                      not verified[i])
                    if pairs is not None:
                        verified[i] = 1
                        yield pairs
                        continue
                else:
                    pairs = item[0].pairs()  # type: ignore[attr-defined]
                    if pairs is not None:
                        yield pairs
                        continue
            block = self._block(i, fill_cache, read)
            at = block.seek(start) if start is not None and i == first else 0
            if plain:
                pairs = block.pairs(at)
                if pairs is not None:
                    yield pairs
                    continue
            yield block.entries(at)

    def close(self) -> None:
        self._file.close()

    def __repr__(self) -> str:
        return f"TableReader({self.path!r}, entries={self.num_entries})"


class _ReadAhead:
    """The reads of an iteration, which asks for a table's blocks in file order, served
    from one pread of READ_AHEAD bytes at a time (one system call per ~16 blocks)."""

    __slots__ = ("_at", "_buf", "_read")

    def __init__(self, read) -> None:
        self._read = read
        self._buf = b""
        self._at = 0

    def read(self, offset: int, n: int) -> bytes:
        rel = offset - self._at
        if rel < 0 or rel + n > len(self._buf):
            self._buf = self._read(offset, max(n, READ_AHEAD))
            self._at = offset
            rel = 0
        return self._buf[rel:rel + n]
