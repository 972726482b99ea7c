"""The replica engine's key layout: partition-prefixed storage keys, and their checks.

A user key `key` is stored under `partition (2 bytes, big-endian) | key`, with
`partition = ring.partition_of(key, ring_size)`; the value is `vclock.encode(state)`.
So one partition is one contiguous range of the engine (`partition_bounds`), and the
partitions holding keys are found with one short scan per non-empty partition
(`find_partitions`). On disk: do not change. See kvstore/replica.py for the store.
"""

from __future__ import annotations

from kvstore import vclock
from kvstore.errors import InvalidRequest, InvalidSiblingSet
from kvstore.lsm import MAX_KEY_SIZE, Engine
from kvstore.vclock import SiblingSet

PREFIX_BYTES = 2  # partition prefix of every storage key; on disk: do not change
MAX_USER_KEY = MAX_KEY_SIZE - PREFIX_BYTES
MAX_RING_SIZE = 1 << (8 * PREFIX_BYTES)


def storage_key(partition: int, key: bytes) -> bytes:
    return partition.to_bytes(PREFIX_BYTES, "big") + key


def partition_bounds(partition: int, ring_size: int) -> tuple[bytes, bytes | None]:
    """[start, end) of one partition's storage keys (end None: the end of the engine)."""
    if type(partition) is not int or not 0 <= partition < ring_size:
        raise ValueError(f"partition must be in 0..{ring_size - 1}: {partition!r}")
    end = partition + 1
    return (partition.to_bytes(PREFIX_BYTES, "big"),
            end.to_bytes(PREFIX_BYTES, "big") if end < MAX_RING_SIZE else None)


def check_user_key(key: object) -> bytes:
    """The key as bytes; TypeError unless bytes-like, InvalidRequest if empty or too long."""
    if not isinstance(key, bytes | bytearray | memoryview):
        raise TypeError(f"key must be bytes, not {type(key).__name__}")
    key = bytes(key)
    if not 1 <= len(key) <= MAX_USER_KEY:
        raise InvalidRequest(f"key must be 1..{MAX_USER_KEY} bytes, not {len(key)}")
    return key


def decode_stored(key: bytes, raw: bytes | None) -> SiblingSet:
    """The stored state of `key`; InvalidSiblingSet (naming the key) when damaged."""
    if raw is None:
        return SiblingSet()
    try:
        return vclock.decode(raw)
    except InvalidSiblingSet as exc:
        raise InvalidSiblingSet(f"stored state of key {key!r:.100}: {exc.reason}") from None


def check_state(state: object) -> None:
    """TypeError unless a SiblingSet; InvalidSiblingSet unless its invariants hold."""
    if not isinstance(state, SiblingSet):
        raise TypeError(f"state must be a SiblingSet, not {type(state).__name__}")
    state.check()


def any_in(engine: Engine, start: bytes, end: bytes | None) -> bool:
    """True when [start, end) holds a key (worker thread)."""
    with engine.scan(start, end) as scan:
        return next(iter(scan), None) is not None


def find_partitions(engine: Engine) -> set[int]:
    """The partitions holding keys: one short scan per non-empty partition (worker thread)."""
    found: set[int] = set()
    start: bytes | None = None
    while True:
        with engine.scan(start, None) as scan:
            first = next(iter(scan), None)
        if first is None:
            return found
        partition = int.from_bytes(first[0][:PREFIX_BYTES], "big")
        found.add(partition)
        if partition + 1 >= MAX_RING_SIZE:
            return found
        start = (partition + 1).to_bytes(PREFIX_BYTES, "big")


__all__ = ["MAX_RING_SIZE", "MAX_USER_KEY", "PREFIX_BYTES", "any_in", "check_state",
           "check_user_key", "decode_stored", "find_partitions", "partition_bounds",
           "storage_key"]
