"""Blocks: the column layout, the trailer's checksum and compression (docs/formats.md)."""

from __future__ import annotations

import array
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvstore.lsm.block import (
    NO_COMPRESSION,
    ZLIB_COMPRESSION,
    Block,
    block_pairs,
    encode_block,
    plain_run,
    seal_block,
    search_block,
    unseal_block,
)
from kvstore.lsm.errors import CorruptionError

entries_strategy = st.lists(
    st.tuples(st.binary(min_size=1, max_size=20), st.integers(0, 2**56 - 1),
              st.integers(0, 1), st.binary(max_size=50)),
    max_size=40,
).map(lambda es: sorted({(k, s): (k, s, t, v) for k, s, t, v in es}.values(),
                        key=lambda e: (e[0], -e[1])))


def build(entries) -> bytes:
    return encode_block([e[0] for e in entries], [e[1] << 8 | e[2] for e in entries],
                        [e[3] for e in entries])


@given(entries_strategy)
def test_round_trip_and_lookup(entries) -> None:
    block = Block(build(entries))
    assert len(block) == len(entries)
    assert list(block.entries()) == entries
    lazy = Block(build(entries))  # searched in place, never decoded
    for key, seq, kind, value in entries:
        newest = next(e for e in entries if e[0] == key)
        assert block.get(key, 2**56) == newest[1:]
        assert lazy.get(key, 2**56) == newest[1:]
        assert block.get(key, seq) == (seq, kind, value)
        assert lazy.get(key, seq) == (seq, kind, value)
        if seq:
            older = [e for e in entries if e[0] == key and e[1] < seq]
            assert block.get(key, seq - 1) == (older[0][1:] if older else None)
    for i in range(len(entries) + 1):
        assert list(block.entries(i)) == entries[i:]
    assert block.get(b"\xff" * 21, 2**56) is None


small_alphabet_entries = st.lists(
    st.tuples(st.binary(min_size=1, max_size=6).map(lambda b: bytes(97 + x % 2 for x in b)),
              st.integers(0, 50), st.integers(0, 1), st.binary(max_size=8)),
    max_size=60,
).map(lambda es: sorted({(k, s): (k, s, t, v) for k, s, t, v in es}.values(),
                        key=lambda e: (e[0], -e[1])))


@given(st.one_of(small_alphabet_entries, entries_strategy,
                 st.lists(st.binary(min_size=4, max_size=4), max_size=40).map(
                     lambda ks: [(k, 1, 1, k * 2) for k in sorted(set(ks))])))
def test_search_in_place_agrees_with_the_decoded_block(entries) -> None:
    """search_block (a point read of a block read once) finds what Block.get finds, for
    keys of one width (its guessed entry index is exact) and of mixed widths (the guess
    misses and key_ends are bisected), over keys from a two-letter alphabet (a key occurs
    inside and across other keys: only whole-key matches count), at every max_seq."""
    contents = build(entries)
    stored = contents + b"trailer"  # the reader passes the stored bytes with trailer
    in_file = b"ab" * 50 + stored  # or a whole table's memory map and the block's offset
    block = Block(contents)
    probes = {e[0] for e in entries} | {b"a", b"b", b"ab", b"ba", b"aaa", b"bbbbbbb", b"zz"}
    for key in probes:
        for max_seq in (0, 1, 7, 25, 2**56):
            expected = block.get(key, max_seq)
            assert search_block(stored, len(contents), key, max_seq, "t", 0) == expected
            assert search_block(in_file, len(contents), key, max_seq, "t", 100,
                                base=100) == expected


@given(entries_strategy, st.integers(0, 45))
def test_pairs_are_the_entries_of_a_block_without_tombstones(entries, start) -> None:
    """A scan's plain run: (key, value) of each entry from `start`, or None if the block
    holds a tombstone; block_pairs (a block read once) gives what Block.pairs gives."""
    contents = build(entries)
    block = Block(contents)
    has_tombstone = any(kind == 0 for _, _, kind, _ in entries)
    expected = None if has_tombstone else [(k, v) for k, _, _, v in entries]
    assert block_pairs(contents + b"trailer", len(contents), "t", 0) == expected
    assert Block(contents).pairs() == expected
    if start <= len(entries):
        tail = entries[start:]
        assert block.pairs(start) == (None if any(e[2] == 0 for e in tail)
                                      else [(k, v) for k, _, _, v in tail])


@given(entries_strategy, st.booleans(), st.integers(1, 4))
def test_plain_run_is_block_pairs_of_the_unsealed_block(entries, fixed, vwidth) -> None:
    """A scan's block read once (block.plain_run, one call): what block_pairs gives for
    the block's contents, fixed-width records or not; None for a compressed block."""
    if fixed:  # every key one width, every value another: the one-comparison path
        entries = [(b"%08d" % i, s, t, b"v" * vwidth) for i, (_, s, t, _) in
                   enumerate(entries)]
    contents = build(entries)
    stored = seal_block(contents)
    expected = block_pairs(contents, len(contents), "t", 0)
    assert plain_run(stored, len(contents), "t", 0, True) == expected
    assert plain_run(stored, len(contents), "t", 0, False) == expected
    zipped = seal_block(build(entries * 20 or [(b"k", 1, 1, b"v" * 99)]), ZLIB_COMPRESSION)
    if zipped[-5] == ZLIB_COMPRESSION:
        assert plain_run(zipped, len(zipped) - 5, "t", 0, True) is None


def test_plain_run_catches_flipped_bytes_and_damaged_layouts() -> None:
    contents = build([(b"key%05d" % i, i, 1, b"v" * 20) for i in range(30)])
    stored = seal_block(contents)
    size = len(contents)
    for pos in range(len(stored)):
        damaged = bytearray(stored)
        damaged[pos] ^= 0x40
        if pos == size:  # the type byte: not a plain block (and caught by the general path)
            assert plain_run(bytes(damaged), size, "/db/5.sst", 64, True) is None
            continue
        with pytest.raises(CorruptionError) as info:
            plain_run(bytes(damaged), size, "/db/5.sst", 64, True)
        assert info.value.offset == 64 and info.value.path == "/db/5.sst"
    with pytest.raises(CorruptionError, match="past the end"):
        plain_run(stored[:-1], size, "/db/5.sst", 64, True)
    # Unverified (a block checked before), damage to the layout is still an error.
    for raw, reason in [(b"\x01", "shorter than its entry count"),
                        (b"\x00" * 8 + b"\x05\x00\x00\x00", "cannot hold 5 entries")]:
        with pytest.raises(CorruptionError, match=reason):
            plain_run(seal_block(raw), len(raw), "/db/5.sst", 64, False)
    bad_ends = bytearray(contents)
    bad_ends[-5] ^= 0x7F  # the last value end no longer meets the tags
    with pytest.raises(CorruptionError, match="inconsistent"):
        plain_run(seal_block(bytes(bad_ends)), size, "/db/5.sst", 64, False)


def test_known_layout() -> None:
    raw = encode_block([b"ab", b"c"], [7 << 8 | 1, 3 << 8 | 0], [b"xyz", b""])
    assert raw.hex() == (
        "616263" "78797a"                          # keys, values
        "0107000000000000" "0003000000000000"      # tags: seq << 8 | kind
        "02000000" "03000000"                      # key_ends
        "06000000" "06000000"                      # value_ends
        "02000000")                                # count


@pytest.mark.parametrize("compression", [NO_COMPRESSION, ZLIB_COMPRESSION])
def test_seal_unseal(compression) -> None:
    contents = build([(b"key%05d" % i, i, 1, b"value " * 10) for i in range(100)])
    stored = seal_block(contents, compression)
    if compression == ZLIB_COMPRESSION:
        assert len(stored) < len(contents) // 2
    assert unseal_block(stored, "t.sst", 0) == contents


def test_incompressible_block_is_stored_plain() -> None:
    import os
    contents = os.urandom(4000)
    assert seal_block(contents, ZLIB_COMPRESSION)[-5] == NO_COMPRESSION


@pytest.mark.parametrize("compression", [NO_COMPRESSION, ZLIB_COMPRESSION])
def test_every_flipped_byte_is_caught(compression) -> None:
    contents = build([(b"key%05d" % i, i, 1, b"v" * 20) for i in range(30)])
    stored = seal_block(contents, compression)
    for pos in range(len(stored)):
        damaged = bytearray(stored)
        damaged[pos] ^= 0x40
        with pytest.raises(CorruptionError) as info:
            unseal_block(bytes(damaged), "/db/000005.sst", 8192)
        assert info.value.offset == 8192 and info.value.path == "/db/000005.sst"


@pytest.mark.parametrize("raw, reason", [
    (b"\x01", "shorter than its entry count"),
    (b"\x00" * 8 + b"\x05\x00\x00\x00", "cannot hold 5 entries"),
    (encode_block([b"a"], [0], [b"b"])[:-13] + b"\x09\x00\x00\x00" + b"\x02\x00\x00\x00"
     + b"\x01\x00\x00\x00", "inconsistent"),
])
def test_structurally_damaged_contents_are_rejected(raw, reason) -> None:
    with pytest.raises(CorruptionError, match=reason):
        Block(raw, "/db/x.sst", 0)
    with pytest.raises(CorruptionError, match=reason):
        search_block(raw, len(raw), b"a", 2**56, "/db/x.sst", 0)
    with pytest.raises(CorruptionError, match=reason):
        search_block(b"x" * 7 + raw, len(raw), b"a", 2**56, "/db/x.sst", 7, base=7)


@pytest.mark.parametrize("widths", [[16] * 31, [100] * 7, [3, 3, 4], [0, 0], [5], [], [2, 2, 2, 1]])
def test_fixed_and_mixed_width_pieces_decode_alike(widths) -> None:
    """Block decoding takes one struct.unpack_from when every key (or value) has the same
    length and a slice per piece otherwise: both give the same bytes."""
    from kvstore.lsm.block import _slices

    data = bytes(range(256)) * 4
    ends = list(itertools.accumulate(widths, initial=7))[1:]
    expected = [data[a:b] for a, b in zip([7, *ends], ends, strict=False)]
    assert _slices(data, 7, ends) == expected
    assert _slices(data, 7, memoryview(array.array("I", ends))) == expected  # as blocks do
    keys = [b"k%03d" % i + b"x" * (i % 2) * (widths[0] if widths else 0) for i in range(5)]
    values = [data[:w] for w in (widths * 5)[:5]] if widths else [b""] * 5
    block = Block(encode_block(keys, [i << 8 | 1 for i in range(5)], values))
    pairs = enumerate(zip(keys, values, strict=True))
    assert list(block.entries()) == [(k, i, 1, v) for i, (k, v) in pairs]
