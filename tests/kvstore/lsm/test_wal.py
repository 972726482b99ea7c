"""The write-ahead log: framing, torn tails and corruption (issue 3: "Recovery replays the
log, cuts a torn tail, and reports corruption in the middle of the log instead of silently
dropping what follows"; docs/formats.md, "Log")."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvstore.lsm.errors import CorruptionError
from kvstore.lsm.filesystem import FaultInjectionFileSystem, RealFileSystem
from kvstore.lsm.wal_format import (
    BLOCK_SIZE,
    FULL,
    HEADER_SIZE,
    LAST,
    MAX_FRAGMENT,
    MIDDLE,
    encode_fragment,
    header_ok,
    payload_ok,
)
from kvstore.lsm.wal_reader import LogReader
from kvstore.lsm.wal_writer import LogWriter


def payload(i: int, size: int) -> bytes:
    return (i.to_bytes(4, "little") * (size // 4 + 1))[:size]


def write_log(path, records: list[bytes]) -> tuple[bytes, list[int]]:
    """The log's bytes and the end offset of each record."""
    fs = RealFileSystem()
    w = LogWriter(fs.open_writable(str(path)))
    ends = []
    for r in records:
        w.add_record(r)
        ends.append(w.size)
    w.sync()
    w.close()
    return fs.read_file(str(path)), ends


def read_all(data: bytes, path: str = "/db/000001.log") -> tuple[list[bytes], LogReader]:
    reader = LogReader(data, path=path)
    return list(reader), reader


SIZES = [0, 1, 100, MAX_FRAGMENT - 1, MAX_FRAGMENT, MAX_FRAGMENT + 1, BLOCK_SIZE,
         3 * BLOCK_SIZE + 17, 5, BLOCK_SIZE - 2 * HEADER_SIZE - 3, 0, 2]


def test_round_trip_every_size_across_blocks(tmp_path) -> None:
    records = [payload(i, s) for i, s in enumerate(SIZES)]
    # Sizes that leave 0..HEADER_SIZE bytes at the end of a block (zero trailer).
    for gap in range(HEADER_SIZE + 1):
        records.append(payload(100 + gap, BLOCK_SIZE - HEADER_SIZE - gap))
        records.append(payload(200 + gap, 3))
    data, ends = write_log(tmp_path / "log", records)
    out, reader = read_all(data)
    assert out == records
    assert reader.valid_size == len(data) == ends[-1]
    assert not reader.torn_tail


def test_appending_to_an_existing_log_keeps_block_alignment(tmp_path) -> None:
    fs = RealFileSystem()
    path = str(tmp_path / "log")
    w = LogWriter(fs.open_writable(path))
    w.add_record(payload(1, 20_000))
    w.close()
    w = LogWriter(fs.open_appendable(path))
    w.add_record(payload(2, 20_000))  # crosses the first block boundary
    w.add_record(b"tail")
    w.close()
    assert read_all(fs.read_file(path))[0] == [payload(1, 20_000), payload(2, 20_000), b"tail"]


def test_every_single_byte_error_in_a_fragment_is_detected() -> None:
    """hcheck catches every single-byte error in length or type (before the payload is
    trusted); the CRC catches the rest (exhaustive over positions and error patterns)."""
    frag = encode_fragment(FULL, b"abc")
    assert header_ok(frag, 0) and payload_ok(frag, 0)
    for pos in range(len(frag)):
        for e in range(1, 256):
            damaged = bytearray(frag)
            damaged[pos] ^= e
            if 4 <= pos < HEADER_SIZE:
                assert not header_ok(bytes(damaged), 0), (pos, e)
            else:
                assert not payload_ok(bytes(damaged), 0), (pos, e)


def _tail_log(tmp_path):
    head = [payload(i, 700) for i in range(8)]
    tail = [b"x" * 50, payload(99, BLOCK_SIZE + 300), b"", b"last one"]
    data, ends = write_log(tmp_path / "log", head + tail)
    return head + tail, data, ends


def test_truncation_at_every_offset_of_the_last_records(tmp_path) -> None:
    records, data, ends = _tail_log(tmp_path)
    first_cut = ends[-5]  # the end of the last record before the tail records
    for cut in range(first_cut, len(data) + 1):
        out, reader = read_all(data[:cut])
        complete = [r for r, e in zip(records, ends, strict=True) if e <= cut]
        assert out == complete, cut
        assert reader.valid_size == ends[len(complete) - 1], cut
        assert reader.torn_tail == (cut != reader.valid_size), cut


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 3 * BLOCK_SIZE), min_size=1, max_size=25), st.data())
def test_truncation_at_random_offsets(tmp_path_factory, sizes, data) -> None:
    path = tmp_path_factory.mktemp("log") / "log"
    records = [payload(i, s) for i, s in enumerate(sizes)]
    raw, ends = write_log(path, records)
    cut = data.draw(st.integers(0, len(raw)))
    out, reader = read_all(raw[:cut])
    complete = [r for r, e in zip(records, ends, strict=True) if e <= cut]
    assert out == complete
    assert reader.valid_size == (ends[len(complete) - 1] if complete else 0)


def _fragment_starts(data: bytes) -> list[int]:
    """Offsets of every fragment header, walking the framing."""
    starts, pos = [], 0
    while pos < len(data):
        if BLOCK_SIZE - pos % BLOCK_SIZE < HEADER_SIZE:
            pos += BLOCK_SIZE - pos % BLOCK_SIZE
            continue
        starts.append(pos)
        pos += HEADER_SIZE + int.from_bytes(data[pos + 4:pos + 6], "little")
    return starts


def test_flipped_byte_in_the_middle_raises_naming_path_and_offset(tmp_path) -> None:
    records, data, ends = _tail_log(tmp_path)
    starts = _fragment_starts(data)
    rng = random.Random(7)
    last_record_start = ends[-2]
    positions = [p for p in range(0, last_record_start)
                 if BLOCK_SIZE - p % BLOCK_SIZE >= HEADER_SIZE or p in starts]
    # Every header byte of every fragment, and a sample of payload bytes.
    chosen = {p + k for p in starts if p < last_record_start for k in range(HEADER_SIZE)}
    chosen |= set(rng.sample(positions, 300))
    for flip in sorted(chosen):
        damaged = bytearray(data)
        damaged[flip] ^= 1 << rng.randrange(8)
        reader = LogReader(bytes(damaged), path="/db/000009.log")
        seen = []
        with pytest.raises(CorruptionError) as info:
            seen.extend(reader)
        err = info.value
        assert err.path == "/db/000009.log"
        frag = max(s for s in starts if s <= flip)
        assert err.offset == frag, flip
        assert str(frag) in str(err) and "/db/000009.log" in str(err)
        assert seen == records[:len(seen)]  # what came before is intact, never wrong


def test_damage_in_the_final_record_is_a_torn_tail(tmp_path) -> None:
    records, data, ends = _tail_log(tmp_path)
    damaged = bytearray(data)
    damaged[ends[-1] - 3] ^= 0xFF
    out, reader = read_all(bytes(damaged))
    assert out == records[:-1]
    assert reader.torn_tail and reader.valid_size == ends[-2]


def test_zero_filled_and_garbage_tails_are_cut(tmp_path) -> None:
    records, data, _ = _tail_log(tmp_path)
    for tail in (bytes(5000), random.Random(1).randbytes(3000)):
        out, reader = read_all(data + tail)
        assert out == records
        assert reader.torn_tail and reader.valid_size == len(data)


def test_fragments_out_of_sequence_are_corruption() -> None:
    middle = encode_fragment(MIDDLE, b"orphan")
    with pytest.raises(CorruptionError, match="MIDDLE fragment outside a record"):
        read_all(encode_fragment(FULL, b"ok") + middle + encode_fragment(FULL, b"ok"))
    with pytest.raises(CorruptionError, match="LAST fragment outside"):
        read_all(encode_fragment(LAST, b"x"))
    first = encode_fragment(2, b"begin")
    with pytest.raises(CorruptionError, match="FULL fragment inside a record"):
        read_all(first + encode_fragment(FULL, b"x"))


def test_only_synced_records_survive_a_crash(tmp_path) -> None:
    fs = FaultInjectionFileSystem()
    path = str(tmp_path / "000001.log")
    w = LogWriter(fs.open_writable(path))
    fs.sync_dir(str(tmp_path))
    w.add_record(b"one")
    w.add_record(payload(2, 40_000))
    w.sync()
    w.add_record(b"three")
    w.flush()
    fs.crash()
    out, reader = read_all(fs.read_file(path))
    assert out == [b"one", payload(2, 40_000)]
    assert not reader.torn_tail


def doc_example(name: str) -> bytes:
    """The bytes of the hex block marked `<!-- example: NAME -->` in docs/formats.md."""
    text = (Path(__file__).resolve().parents[3] / "docs" / "formats.md").read_text()
    block = text.split(f"<!-- example: {name} -->\n```\n", 1)[1].split("```", 1)[0]
    return bytes.fromhex("".join(line.split("#")[0].split(":", 1)[1]
                                 for line in block.splitlines()))


def test_doc_example_is_what_the_writer_writes(tmp_path) -> None:
    batch = bytes.fromhex("070000000000000002000000010261620378797a000163")
    data, _ = write_log(tmp_path / "log", [batch, b"hi"])
    assert doc_example("log") == data
    assert read_all(doc_example("log"))[0] == [batch, b"hi"]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000), st.integers(0, 2 * BLOCK_SIZE))
def test_hostile_bytes_never_crash_the_reader(garbage, shift) -> None:
    """Any bytes at all: records, a cut tail, or CorruptionError; nothing else."""
    data = bytes(shift) + garbage + encode_fragment(FULL, b"after")
    reader = LogReader(data, path="/db/x.log")
    try:
        records = list(reader)
    except CorruptionError as e:
        assert e.path == "/db/x.log" and 0 <= e.offset < len(data)
    else:
        assert reader.valid_size <= len(data)
        assert all(isinstance(r, bytes) for r in records)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.one_of(st.integers(0, 2 * BLOCK_SIZE), st.just("sync")), max_size=30),
       st.floats(0, 1))
def test_power_loss_keeps_every_synced_record(tmp_path_factory, ops, keep) -> None:
    """Appends and syncs, then a power loss that keeps the synced bytes plus an arbitrary
    part of the unsynced ones: recovery yields a prefix of the records that contains every
    synced record, and never a damaged one."""
    d = tmp_path_factory.mktemp("wal")
    fs = FaultInjectionFileSystem()
    path = str(d / "000001.log")
    w = LogWriter(fs.open_writable(path))
    fs.sync_dir(str(d))
    records, synced, synced_size = [], 0, 0
    for op in ops:
        if op == "sync":
            w.sync()
            synced, synced_size = len(records), w.size
        else:
            records.append(payload(len(records), op))
            w.add_record(records[-1])
    w.flush()
    unsynced_tail = fs.read_file(path)[synced_size:]
    fs.crash()
    assert fs.file_size(path) == synced_size
    with open(path, "ab") as f:  # part of the unsynced bytes reached the disk anyway
        f.write(unsynced_tail[:int(len(unsynced_tail) * keep)])
    out, reader = read_all(fs.read_file(path))
    assert len(out) >= synced and reader.valid_size >= synced_size
    assert out == records[:len(out)]
