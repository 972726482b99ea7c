"""Bloom filters over the user keys of a table (docs/formats.md, "Filter block").

Serialized form: the bit array (m bytes, bit i is byte i >> 3, mask 1 << (i & 7)), then
one byte: the number of probes k. Probe i of a key sets bit (h1 + i * h2) mod (8 m), where
(h1, h2) = mmh3.hash64(key, seed=SEED, signed=False): double hashing (Kirsch and
Mitzenmacher) from one 128-bit MurmurHash3_x64 call.

At 10 bits per key, k = 5 and the false positive rate is about 0.9%.
"""

from __future__ import annotations

from collections.abc import Sequence

import mmh3

SEED = 0x5EED1  # on disk: do not change
MIN_BITS = 64
_hash64 = mmh3.hash64


def key_hashes(key: bytes) -> tuple[int, int]:
    """(h1, h2) of `key`: the same for every filter, so a read that checks the filters of
    several tables can hash the key once and pass the pair to each."""
    return _hash64(key, SEED, True, False)


def num_probes(bits_per_key: int) -> int:
    """k = bits_per_key / 2, at least 1, at most 30. The optimum is bits_per_key * ln 2
    (7 at 10 bits/key, 0.82% false positives); 5 probes give 0.94% for 2/7 less hashing
    work per key, which in pure Python is most of the cost of building a filter."""
    return max(1, min(30, bits_per_key // 2))


def build_filter(keys: Sequence[bytes], bits_per_key: int = 10) -> bytes:
    """The serialized filter for `keys` (duplicates are harmless)."""
    k = num_probes(bits_per_key)
    nbits = max(MIN_BITS, len(keys) * bits_per_key)
    nbytes = (nbits + 7) // 8
    nbits = nbytes * 8
    bits = bytearray(nbytes)
    probes = range(k)
    for key in keys:
        h1, h2 = _hash64(key, SEED, True, False)
        for _ in probes:
            pos = h1 % nbits
            bits[pos >> 3] |= 1 << (pos & 7)
            h1 += h2
    bits.append(k)
    return bytes(bits)


class BloomFilter:
    """A deserialized filter. `may_contain` never says no for an added key."""

    __slots__ = ("_bits", "_k", "_nbits")

    def __init__(self, data: bytes) -> None:
        """Requires: `data` came from build_filter (checked by the caller's block CRC);
        raises ValueError on a form that cannot be one."""
        if len(data) < 2:
            raise ValueError(f"bloom filter of {len(data)} bytes is too short")
        k = data[-1]
        if not 1 <= k <= 30:
            raise ValueError(f"bloom filter has {k} probes; expected 1..30")
        self._bits = data[:-1]
        self._nbits = (len(data) - 1) * 8
        self._k = range(k)

    def may_contain(self, key: bytes, hashes: tuple[int, int] | None = None) -> bool:
        """False only if `key` was surely not added. `hashes`: key_hashes(key), if known."""
        h1, h2 = hashes if hashes is not None else _hash64(key, SEED, True, False)
        nbits = self._nbits
        bits = self._bits
        for _ in self._k:
            pos = h1 % nbits
            if not bits[pos >> 3] & (1 << (pos & 7)):
                return False
            h1 += h2
        return True

    @property
    def size(self) -> int:
        return len(self._bits) + 1
