"""SSTables: builder and reader, point reads through bloom/index/block, iteration, and
damage of every region (issue 3: "a flipped byte in an SSTable ... yields a clear
corruption error on the affected read or at open, never wrong data"; docs/formats.md)."""

from __future__ import annotations

import random
import struct
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvstore.lsm.bloom import key_hashes
from kvstore.lsm.cache import BlockCache
from kvstore.lsm.coding import KIND_DELETE, KIND_VALUE, MAX_SEQ
from kvstore.lsm.errors import CorruptionError, InvalidArgumentError
from kvstore.lsm.filesystem import RealFileSystem
from kvstore.lsm.sstable_builder import FOOTER_SIZE, MAGIC, TableBuilder, TableOptions
from kvstore.lsm.sstable_reader import TableReader

FS = RealFileSystem()


def write_table(path, entries, **options):
    f = FS.open_writable(str(path))
    b = TableBuilder(f, TableOptions(**options))
    for e in entries:
        b.add(*e)
    info = b.finish()
    f.sync()
    f.close()
    return info


def open_table(path, cache=None, **kw) -> TableReader:
    return TableReader.open(FS, str(path), 1, cache, **kw)


def sample_entries(n: int = 2000, seed: int = 1):
    """Internal order; some keys with several versions, some tombstones."""
    rng = random.Random(seed)
    keys = sorted({rng.randbytes(rng.randrange(1, 24)) for _ in range(n)})
    entries, seq = [], 1
    for k in keys:
        versions = sorted(rng.sample(range(1, 10_000), rng.choice([1, 1, 1, 2, 3])),
                          reverse=True)
        for s in versions:
            kind = KIND_DELETE if rng.random() < 0.1 else KIND_VALUE
            value = b"" if kind == KIND_DELETE else rng.randbytes(rng.randrange(0, 200))
            entries.append((k, s, kind, value))
        seq += 1
    return entries


_INDEX: dict[int, tuple[list, dict]] = {}


def expected_get(entries, key, max_seq):
    """The model's answer: the first version of `key` (newest first) with seq <= max_seq."""
    cached = _INDEX.get(id(entries))
    if cached is None or cached[0] is not entries:
        by_key: dict[bytes, list] = {}
        for k, s, kind, v in entries:
            by_key.setdefault(k, []).append((s, kind, v))
        cached = _INDEX[id(entries)] = (entries, by_key)
    return next((e for e in cached[1].get(key, []) if e[0] <= max_seq), None)


@pytest.mark.parametrize("compression", ["none", "zlib"])
@pytest.mark.parametrize("use_cache", [True, False])
def test_round_trip(tmp_path, compression, use_cache) -> None:
    entries = sample_entries()
    info = write_table(tmp_path / "t.sst", entries, compression=compression)
    assert info.num_entries == len(entries)
    assert info.smallest == entries[0][0] and info.largest == entries[-1][0]
    assert info.min_seq == min(e[1] for e in entries)
    assert info.max_seq == max(e[1] for e in entries)
    assert info.file_size == (tmp_path / "t.sst").stat().st_size
    cache = BlockCache(1 << 20) if use_cache else None
    t = open_table(tmp_path / "t.sst", cache)
    assert (t.smallest, t.largest, t.num_entries, t.file_size) == (
        info.smallest, info.largest, info.num_entries, info.file_size)
    for _ in range(2):  # second round from the cache (decoded on reuse)
        for k, s, kind, v in entries:
            assert t.may_contain(k)
            assert t.get(k, MAX_SEQ) == expected_get(entries, k, MAX_SEQ)
            assert t.get(k, s) == (s, kind, v)
            assert t.get(k, s - 1) == expected_get(entries, k, s - 1)
    assert t.get(b"\x00", MAX_SEQ) is None and t.get(b"\xff" * 30, MAX_SEQ) is None
    assert list(t.iterate()) == entries
    for start in (entries[0][0], entries[777][0], entries[777][0] + b"\x00", b"\xff" * 30):
        assert list(t.iterate(start)) == [e for e in entries if e[0] >= start]
    if use_cache:
        data = (tmp_path / "t.sst").read_bytes()
        zipped = sum(data[off + size] != 0 for off, size in
                     zip(t._offsets, t._sizes, strict=True))
        if zipped:  # compressed blocks reused by point reads are kept decoded
            assert cache.hits > 0 and cache.usage > 0
        if zipped == 0:  # all searched in place in the memory map: the cache is left alone
            assert cache.hits == 0 and cache.usage == 0
        filled = BlockCache(1 << 20)
        t2 = open_table(tmp_path / "t.sst", filled)
        assert list(t2.iterate(fill_cache=True)) == entries
        assert len(filled) == t2._nblocks  # an iteration asked to fill the cache does
        t2.close()
    t.close()


def test_point_reads_without_a_memory_map_reuse_cached_blocks(tmp_path) -> None:
    """A table read by pread (no memory map) keeps the blocks point reads reuse in the
    block cache (admitted on a second miss within the window) and answers from them."""
    entries = sample_entries(800, seed=3)
    write_table(tmp_path / "t.sst", entries)
    cache = BlockCache(1 << 20)
    t = TableReader.open(RealFileSystem(mmap_reads=False), str(tmp_path / "t.sst"), 1, cache)
    try:
        for _ in range(20):
            for k, s, kind, v in entries:
                assert t.get(k, s) == (s, kind, v)
        assert cache.hits > 0 and cache.usage > 0
    finally:
        t.close()


@settings(max_examples=40, deadline=None)
@given(st.dictionaries(st.binary(min_size=1, max_size=8),
                       st.lists(st.tuples(st.integers(0, 1), st.binary(max_size=30)),
                                min_size=1, max_size=4), max_size=200),
       st.sampled_from([64, 4096]))
def test_matches_a_model(tmp_path_factory, model, block_size) -> None:
    entries, seq = [], 0
    for key in sorted(model):
        versions = []
        for kind, value in model[key]:
            seq += 1
            versions.append((key, seq, kind, value if kind else b""))
        entries.extend(reversed(versions))
    path = tmp_path_factory.mktemp("t") / "t.sst"
    write_table(path, entries, block_size=block_size)
    t = open_table(path, BlockCache(10_000))
    assert list(t.iterate()) == entries
    for key in model:
        for probe in (MAX_SEQ, seq // 2):
            assert t.get(key, probe) == expected_get(entries, key, probe)
        assert t.get(key + b"\x00", MAX_SEQ) == expected_get(entries, key + b"\x00", MAX_SEQ)
    t.close()


def test_versions_of_one_key_stay_in_one_block(tmp_path) -> None:
    entries = [(b"a", 1, KIND_VALUE, b"x")]
    entries += [(b"hot", s, KIND_VALUE, b"v%d" % s) for s in range(600, 0, -1)]
    entries += [(b"z", 1, KIND_VALUE, b"y")]
    write_table(tmp_path / "t.sst", entries, block_size=256)
    t = open_table(tmp_path / "t.sst")
    for s in range(1, 601):
        assert t.get(b"hot", s) == (s, KIND_VALUE, b"v%d" % s)
    assert t.get(b"hot", 0) is None
    assert list(t.iterate(b"hot"))[-1] == (b"z", 1, KIND_VALUE, b"y")
    t.close()


def test_out_of_order_adds_are_rejected(tmp_path) -> None:
    f = FS.open_writable(str(tmp_path / "t.sst"))
    b = TableBuilder(f, TableOptions())
    with pytest.raises(InvalidArgumentError, match="internal order"):
        b.add(b"", 1, KIND_VALUE, b"")  # empty user key
    b.add(b"b", 5, KIND_VALUE, b"")
    with pytest.raises(InvalidArgumentError, match="internal order"):
        b.add(b"a", 9, KIND_VALUE, b"")
    with pytest.raises(InvalidArgumentError, match="internal order"):
        b.add(b"b", 5, KIND_VALUE, b"")  # same version twice
    with pytest.raises(InvalidArgumentError, match="internal order"):
        b.add(b"b", 6, KIND_VALUE, b"")  # newer after older
    b.add(b"b", 4, KIND_DELETE, b"")
    b.abandon()
    f.close()
    with pytest.raises(InvalidArgumentError, match="compression"):
        TableOptions(compression="lz77")


def test_empty_table_and_table_without_filter(tmp_path) -> None:
    info = write_table(tmp_path / "empty.sst", [])
    assert info.num_entries == 0
    t = open_table(tmp_path / "empty.sst")
    assert t.get(b"a", MAX_SEQ) is None and list(t.iterate()) == []
    t.close()
    write_table(tmp_path / "nofilter.sst", [(b"k", 1, KIND_VALUE, b"v")], bloom_bits_per_key=0)
    t = open_table(tmp_path / "nofilter.sst")
    assert t.may_contain(b"other") and t.get(b"k", 1) == (1, KIND_VALUE, b"v")
    t.close()


def test_bloom_filter_answers_most_absent_keys(tmp_path) -> None:
    entries = [(b"key%06d" % i, 1, KIND_VALUE, b"v") for i in range(5000)]
    write_table(tmp_path / "t.sst", entries)
    t = open_table(tmp_path / "t.sst")
    absent = [b"nokey%06d" % i for i in range(5000)]
    assert sum(t.may_contain(k) for k in absent) < 125
    # The same answers when the caller hashes each key once for several tables.
    for k in absent[:500] + [e[0] for e in entries[:500]]:
        h = key_hashes(k)
        assert t.may_contain(k, h) == t.may_contain(k)
        assert t.get(k, MAX_SEQ, h) == t.get(k, MAX_SEQ)
    t.close()


def test_concurrent_readers(tmp_path) -> None:
    entries = sample_entries(3000, seed=5)
    write_table(tmp_path / "t.sst", entries)
    t = open_table(tmp_path / "t.sst", BlockCache(64 * 1024))
    wrong = []

    def reader(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(1500):
            k = rng.choice(entries)[0]
            if t.get(k, MAX_SEQ) != expected_get(entries, k, MAX_SEQ):
                wrong.append(k)

    threads = [threading.Thread(target=reader, args=(s,)) for s in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    t.close()
    assert wrong == []


# -- damage ---------------------------------------------------------------------------

def regions(data: bytes) -> dict[str, tuple[int, int]]:
    """Byte ranges of each region, decoded from the footer as docs/formats.md says."""
    footer_at = len(data) - FOOTER_SIZE
    f_off, f_size, i_off, i_size, p_off, p_size, _ = struct.unpack_from("<QIQIQII", data,
                                                                         footer_at)
    return {
        "data": (0, f_off),
        "filter": (f_off, f_off + f_size + 5),
        "index": (i_off, i_off + i_size + 5),
        "props": (p_off, p_off + p_size + 5),
        "footer": (footer_at, len(data) - len(MAGIC)),
        "magic": (len(data) - len(MAGIC), len(data)),
    }


def read_everything(path, entries) -> None:
    """Open and read every key and the whole table; raise CorruptionError if damage is
    seen; fail the test if any read returns wrong data."""
    t = open_table(path, BlockCache(1 << 20))
    try:
        raised = None
        for k, _, _, _ in entries:
            try:
                assert t.get(k, MAX_SEQ) == expected_get(entries, k, MAX_SEQ), k
            except CorruptionError as e:
                raised = e
        assert list(t.iterate()) == entries
        if raised:
            raise raised
    finally:
        t.close()


def small_entries():
    rng = random.Random(11)
    keys = sorted({rng.randbytes(rng.randrange(1, 12)) for _ in range(80)})
    return [(k, i + 1, KIND_VALUE if i % 7 else KIND_DELETE, b"" if i % 7 == 0
             else b"value-%d" % i * rng.randrange(1, 4)) for i, k in enumerate(keys)]


@pytest.mark.parametrize("compression", ["none", "zlib"])
def test_flipped_byte_in_every_region_is_caught(tmp_path, compression) -> None:
    entries = small_entries()
    path = tmp_path / "t.sst"
    write_table(path, entries, block_size=256, compression=compression)
    data = path.read_bytes()
    read_everything(path, entries)  # the undamaged table reads back fine
    spans = regions(data)
    # Every byte outside the data blocks, and a sample of the data blocks' bytes.
    flips = [p for name, (a, b) in spans.items() if name != "data" for p in range(a, b)]
    flips += random.Random(5).sample(range(*spans["data"]), 300)
    for flip in flips:
        damaged = bytearray(data)
        damaged[flip] ^= 1 << (flip % 8)
        path.write_bytes(bytes(damaged))
        with pytest.raises(CorruptionError) as info:
            read_everything(path, entries)
        assert info.value.path == str(path)
        region = next(name for name, (a, b) in spans.items() if a <= flip < b)
        if region == "magic":
            assert "magic" in info.value.reason
        elif region != "data":  # everything but data blocks is checked at open
            with pytest.raises(CorruptionError):
                open_table(path)
    assert spans["data"][1] > 1000 and len(flips) > 600  # several blocks, every meta byte


@pytest.mark.parametrize("size", [0, 10, FOOTER_SIZE - 1])
def test_short_files_are_corruption(tmp_path, size) -> None:
    write_table(tmp_path / "t.sst", sample_entries(50))
    data = (tmp_path / "t.sst").read_bytes()
    (tmp_path / "t.sst").write_bytes(data[:size])
    with pytest.raises(CorruptionError, match="shorter than the 52-byte footer"):
        open_table(tmp_path / "t.sst")


def test_truncated_table_is_corruption(tmp_path) -> None:
    write_table(tmp_path / "t.sst", sample_entries(200))
    data = (tmp_path / "t.sst").read_bytes()
    for cut in (len(data) - 1, len(data) // 2, FOOTER_SIZE):
        (tmp_path / "t.sst").write_bytes(data[:cut])
        with pytest.raises(CorruptionError):
            open_table(tmp_path / "t.sst")


def test_not_a_table(tmp_path) -> None:
    (tmp_path / "t.sst").write_bytes(random.Random(9).randbytes(5000))
    with pytest.raises(CorruptionError, match="bad magic"):
        open_table(tmp_path / "t.sst")


def test_checksums_off_still_rejects_structural_damage(tmp_path) -> None:
    entries = [(b"key%04d" % i, 1, KIND_VALUE, b"v" * 50) for i in range(200)]
    write_table(tmp_path / "t.sst", entries)
    data = bytearray((tmp_path / "t.sst").read_bytes())
    first_block_end = struct.unpack_from("<Q", data, len(data) - FOOTER_SIZE)[0]
    assert first_block_end > 100
    data[50] ^= 0xFF  # inside the keys of the first data block
    (tmp_path / "t.sst").write_bytes(bytes(data))
    t = open_table(tmp_path / "t.sst", verify_checksums=True)
    with pytest.raises(CorruptionError, match="checksum"):
        t.get(b"key0000", MAX_SEQ)
    t.close()


def doc_example(name: str) -> bytes:
    """The bytes of the hex block marked `<!-- example: NAME -->` in docs/formats.md."""
    text = (Path(__file__).resolve().parents[3] / "docs" / "formats.md").read_text()
    block = text.split(f"<!-- example: {name} -->\n```\n", 1)[1].split("```", 1)[0]
    return bytes.fromhex("".join(line.split("#")[0].split(":", 1)[1]
                                 for line in block.splitlines()))


def test_doc_example_is_what_the_builder_writes(tmp_path) -> None:
    entries = [(b"apple", 2, KIND_VALUE, b"red"), (b"apple", 1, KIND_DELETE, b""),
               (b"fig", 3, KIND_VALUE, b"ok")]
    write_table(tmp_path / "t.sst", entries)
    example = doc_example("sstable")
    assert (tmp_path / "t.sst").read_bytes() == example
    (tmp_path / "doc.sst").write_bytes(example)
    t = open_table(tmp_path / "doc.sst")
    assert list(t.iterate()) == entries
    assert t.get(b"apple", 1) == (1, KIND_DELETE, b"")
    t.close()


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4000), st.integers(1, 255)), min_size=1, max_size=6),
       st.booleans(), st.sampled_from(["none", "zlib"]))
def test_hostile_damage_never_crashes_the_reader(tmp_path_factory, flips, verify, comp) -> None:
    """Several damaged bytes, checksums on or off: reads answer or raise CorruptionError;
    with checksums on, never a wrong answer."""
    entries = small_entries()
    path = tmp_path_factory.mktemp("t") / "t.sst"
    write_table(path, entries, block_size=256, compression=comp)
    data = bytearray(path.read_bytes())
    for pos, x in flips:
        data[pos % len(data)] ^= x
    path.write_bytes(bytes(data))
    try:
        t = open_table(path, BlockCache(1 << 16), verify_checksums=verify)
    except CorruptionError:
        return
    try:
        for k, _, _, _ in entries:
            try:
                got = t.get(k, MAX_SEQ)
            except CorruptionError:
                continue
            if verify:
                assert got == expected_get(entries, k, MAX_SEQ)
        try:
            listed = list(t.iterate())
        except CorruptionError:
            return
        if verify:
            assert listed == entries
    finally:
        t.close()


def test_point_reads_agree_with_and_without_memory_maps(tmp_path) -> None:
    entries = sample_entries(1500, seed=8)
    write_table(tmp_path / "t.sst", entries)
    mapped = TableReader.open(RealFileSystem(mmap_reads=True), str(tmp_path / "t.sst"), 1,
                              BlockCache(1 << 16))
    plain = TableReader.open(RealFileSystem(mmap_reads=False), str(tmp_path / "t.sst"), 2,
                             None)
    for k, s, _, _ in entries:
        assert mapped.get(k, s) == plain.get(k, s) == expected_get(entries, k, s)
    mapped.close()
    plain.close()


@pytest.mark.parametrize("mmap_reads", [True, False])
def test_a_damaged_block_fails_every_read_not_only_the_first(tmp_path, mmap_reads) -> None:
    """A block's checksum is checked once per reader and the success remembered
    (TableReader._verified); a mismatch is never remembered, so a damaged block raises on
    every point read and scan of it, while the blocks around it keep answering."""
    entries = [(b"key%06d" % i, i + 1, KIND_VALUE, b"v%05d" % i * 8) for i in range(600)]
    write_table(tmp_path / "t.sst", entries, block_size=512)
    data = bytearray((tmp_path / "t.sst").read_bytes())
    t = open_table(tmp_path / "t.sst", BlockCache(1 << 16))
    first_block_end = t._offsets[1] - 5
    t.close()
    data[first_block_end // 2] ^= 0x01  # inside data block 0 only
    (tmp_path / "t.sst").write_bytes(bytes(data))
    t = TableReader.open(RealFileSystem(mmap_reads=mmap_reads), str(tmp_path / "t.sst"), 1,
                         BlockCache(1 << 16))
    try:
        damaged = entries[0][0]
        intact = entries[-1]
        for _ in range(3):
            with pytest.raises(CorruptionError):
                t.get(damaged, MAX_SEQ)
            assert t.get(intact[0], MAX_SEQ) == (intact[1], KIND_VALUE, intact[3])
            with pytest.raises(CorruptionError):
                list(t.runs(visible_at=MAX_SEQ))
        # Scans that start after the damaged block read the rest, verified, twice alike.
        runs = [list(t.runs(entries[300][0], visible_at=MAX_SEQ)) for _ in range(2)]
        assert runs[0] == runs[1]
        assert [p for run in runs[0] for p in run] == [(k, v) for k, _, _, v in entries[300:]]
    finally:
        t.close()
