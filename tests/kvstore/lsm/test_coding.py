"""Byte helpers: varints, fixed-width integers, masked CRC32C (docs/formats.md)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvstore.lsm import coding
from kvstore.lsm.errors import CorruptionError


@given(st.integers(min_value=0, max_value=(1 << 64) - 1))
def test_varint_round_trip(value: int) -> None:
    data = coding.encode_varint(value)
    assert coding.decode_varint(b"\xaa" + data + b"\xbb", 1) == (value, 1 + len(data))


def test_varint_known_bytes() -> None:
    assert coding.encode_varint(0) == b"\x00"
    assert coding.encode_varint(127) == b"\x7f"
    assert coding.encode_varint(128) == b"\x80\x01"
    assert coding.encode_varint(300) == b"\xac\x02"


def test_varint_rejects_truncated_and_overlong() -> None:
    with pytest.raises(ValueError, match="truncated"):
        coding.decode_varint(b"\x80\x80")
    with pytest.raises(ValueError, match="64 bits"):
        coding.decode_varint(b"\xff" * 11)
    with pytest.raises(ValueError):
        coding.encode_varint(-1)


def test_fixed_width_little_endian() -> None:
    assert coding.encode_fixed32(0x01020304) == b"\x04\x03\x02\x01"
    assert coding.decode_fixed64(coding.encode_fixed64(2**63 + 5)) == 2**63 + 5


def test_crc32c_is_castagnoli_and_mask_round_trips() -> None:
    # The check value of CRC-32C (RFC 3720 appendix B.4).
    assert coding.crc32c(b"123456789") == 0xE3069283
    crc = coding.crc32c(b"hello")
    assert coding.mask(crc) != crc
    assert coding.unmask(coding.mask(crc)) == crc
    assert coding.masked_crc32c(b"hello") == coding.mask(crc)
    assert coding.crc32c(b"lo", coding.crc32c(b"hel")) == crc


def test_tag_packs_seq_and_kind() -> None:
    tag = coding.pack_tag(coding.MAX_SEQ, coding.KIND_VALUE)
    assert tag < 2**64
    assert coding.unpack_tag(tag) == (coding.MAX_SEQ, coding.KIND_VALUE)


def test_corruption_error_names_path_offset_reason() -> None:
    err = CorruptionError("/x/000001.log", 4096, "checksum mismatch")
    assert (err.path, err.offset, err.reason) == ("/x/000001.log", 4096, "checksum mismatch")
    assert "/x/000001.log" in str(err) and "4096" in str(err) and "checksum" in str(err)
