"""Bloom filters: no false negatives, about 1% false positives at 10 bits per key
(issue 3: "a bloom filter built with mmh3 (about 1% false positives by default)")."""

from __future__ import annotations

import random

import pytest

from kvstore.lsm.bloom import BloomFilter, build_filter, num_probes


def keys(seed: int, n: int) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(16) for _ in range(n)]


def test_false_positive_rate_at_10_bits_per_key() -> None:
    present = keys(1, 10_000)
    absent = keys(2, 10_000)
    f = BloomFilter(build_filter(present, 10))
    assert all(f.may_contain(k) for k in present)  # never a false negative
    rate = sum(f.may_contain(k) for k in absent) / len(absent)
    assert 0.002 <= rate <= 0.025, rate


def test_more_bits_fewer_false_positives() -> None:
    present = keys(3, 5_000)
    absent = keys(4, 10_000)
    rates = []
    for bits in (4, 10, 20):
        f = BloomFilter(build_filter(present, bits))
        assert all(f.may_contain(k) for k in present)
        rates.append(sum(f.may_contain(k) for k in absent))
    assert rates[0] > rates[1] > rates[2]


def test_serialized_form_is_bits_then_probe_count() -> None:
    data = build_filter([b"a", b"b"], 10)
    assert len(data) == 64 // 8 + 1  # the minimum of 64 bits
    assert data[-1] == num_probes(10) == 5
    assert build_filter([b"x"] * 1000, 10) == build_filter([b"x"] * 1000, 10)  # stable
    assert BloomFilter(build_filter([], 10)).may_contain(b"anything") is False


@pytest.mark.parametrize("data", [b"", b"\x05", b"\x00" * 8 + b"\x00", b"\xff" * 8 + b"\x1f"])
def test_malformed_filter_is_rejected(data: bytes) -> None:
    with pytest.raises(ValueError, match="bloom filter"):
        BloomFilter(data)
