"""Write batches: the atomic unit of the log, and the argument checks of every write."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvstore.lsm.batch import (
    MAX_KEY_SIZE,
    MAX_VALUE_SIZE,
    WriteBatch,
    check_key,
    check_value,
)
from kvstore.lsm.coding import KIND_DELETE, KIND_VALUE, MAX_SEQ
from kvstore.lsm.errors import CorruptionError, InvalidArgumentError

ops_strategy = st.lists(
    st.tuples(st.booleans(), st.binary(min_size=1, max_size=300), st.binary(max_size=300)),
    max_size=30,
)


@given(ops_strategy, st.integers(min_value=0, max_value=MAX_SEQ - 100))
def test_encode_decode_round_trip(ops, first_seq) -> None:
    batch = WriteBatch()
    expected = []
    for is_put, key, value in ops:
        if is_put:
            batch.put(key, value)
            expected.append((KIND_VALUE, key, value))
        else:
            batch.delete(key)
            expected.append((KIND_DELETE, key, b""))
    payload = batch.encode(first_seq)
    assert WriteBatch.decode(payload) == (first_seq, expected)
    assert list(batch) == expected
    assert len(batch) == len(expected)
    assert batch.approximate_size >= len(payload) - 4 * len(expected)


def test_accepts_bytes_like_and_stores_bytes() -> None:
    batch = WriteBatch().put(bytearray(b"k1"), memoryview(b"v1")).delete(memoryview(b"k2"))
    ops = list(batch)
    assert ops == [(KIND_VALUE, b"k1", b"v1"), (KIND_DELETE, b"k2", b"")]
    assert all(type(k) is bytes and type(v) is bytes for _, k, v in ops)


def test_wrong_types_say_what_was_given() -> None:
    with pytest.raises(TypeError, match=r"key must be bytes.*not str"):
        WriteBatch().put("key", b"v")
    with pytest.raises(TypeError, match=r"value must be bytes.*not int"):
        WriteBatch().put(b"key", 5)
    with pytest.raises(TypeError, match="not NoneType"):
        WriteBatch().delete(None)


def test_empty_and_oversize_keys_are_rejected() -> None:
    with pytest.raises(InvalidArgumentError, match="must not be empty"):
        check_key(b"")
    assert check_key(b"k" * MAX_KEY_SIZE) == b"k" * MAX_KEY_SIZE
    with pytest.raises(InvalidArgumentError, match=f"{MAX_KEY_SIZE + 1} bytes; the limit"):
        check_key(b"k" * (MAX_KEY_SIZE + 1))
    with pytest.raises(ValueError):  # InvalidArgumentError is also a ValueError
        WriteBatch().put(b"", b"v")


def test_oversize_value_is_rejected_and_batch_unchanged() -> None:
    batch = WriteBatch().put(b"a", b"1")
    with pytest.raises(InvalidArgumentError, match="value is"):
        batch.put(b"b", b"x" * (MAX_VALUE_SIZE + 1))
    assert list(batch) == [(KIND_VALUE, b"a", b"1")]
    assert check_value(b"") == b""


def test_sequence_overflow_is_rejected() -> None:
    batch = WriteBatch().put(b"a", b"1").put(b"b", b"2")
    with pytest.raises(InvalidArgumentError, match="56 bits"):
        batch.encode(MAX_SEQ)


def test_known_encoding() -> None:
    payload = WriteBatch().put(b"ab", b"xyz").delete(b"c").encode(7)
    assert payload.hex() == "0700000000000000" "02000000" "01026162037879" "7a" "000163"


@pytest.mark.parametrize(
    "payload, reason",
    [
        (b"\x01\x00", "shorter than"),
        (bytes.fromhex("0700000000000000" "02000000" "0102616203787979"), "ends inside"),
        (bytes.fromhex("0700000000000000" "01000000" "0105616203"), "runs past"),
        (bytes.fromhex("0700000000000000" "01000000" "07016100"), "unknown op kind 7"),
        (bytes.fromhex("0700000000000000" "01000000" "000161" "ff"), "1 bytes after"),
        (bytes.fromhex("ffffffffffffff00" "02000000"), "56 bits"),
    ],
)
def test_damaged_payload_raises_corruption(payload: bytes, reason: str) -> None:
    with pytest.raises(CorruptionError, match=reason) as info:
        WriteBatch.decode(payload, path="/db/000003.log", offset=100)
    assert info.value.path == "/db/000003.log"
    assert info.value.offset >= 100


def doc_example(name: str) -> bytes:
    """The bytes of the hex block marked `<!-- example: NAME -->` in docs/formats.md."""
    text = (Path(__file__).resolve().parents[3] / "docs" / "formats.md").read_text()
    block = text.split(f"<!-- example: {name} -->\n```\n", 1)[1].split("```", 1)[0]
    return bytes.fromhex("".join(line.split("#")[0].split(":", 1)[1]
                                 for line in block.splitlines()))


def test_doc_example_is_what_encode_writes() -> None:
    payload = WriteBatch().put(b"ab", b"xyz").delete(b"c").encode(7)
    assert doc_example("batch") == payload
    assert WriteBatch.decode(doc_example("batch")) == (
        7, [(KIND_VALUE, b"ab", b"xyz"), (KIND_DELETE, b"c", b"")])


@given(st.binary(max_size=200))
def test_hostile_payload_decodes_or_raises_corruption(payload: bytes) -> None:
    try:
        first_seq, ops = WriteBatch.decode(payload, path="/db/y.log", offset=7)
    except CorruptionError as e:
        assert e.path == "/db/y.log" and e.offset >= 7
    else:  # whatever decodes must re-encode to the same bytes
        batch = WriteBatch()
        for kind, key, value in ops:
            if kind == KIND_VALUE:
                batch._ops.append((kind, key, value))
            else:
                batch._ops.append((kind, key, b""))
        assert batch.encode(first_seq) == payload
