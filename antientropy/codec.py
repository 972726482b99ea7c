"""Bodies of the anti-entropy exchange: msgpack maps, validated on the way in.

Every call is `POST /internal/v1/aae/<op>` with an `application/x-msgpack` body (one map
with str keys). A body that does not decode, has a missing or unknown field, a wrong type
or breaks a limit raises InvalidMessage (the server answers 400, nothing changes).

    nodes   {ring_size: int, fanout: int, depth: int, width: int,
             items: [[partition, level, [parent, ...]], ...]}
            -> {items: [hashes: bin | nil, ...]}   nil: no exact tree there
            (level 0: the root, parents []; level L >= 1: the `fanout` children of each
            listed node of level L-1, in order; `hashes` is the first `width` bytes of
            each node's hash, concatenated)
    keys    {items: [[partition, [segment, ...] | nil, [[key, clock, hash | nil], ...]], ...]}
            (segments nil: the whole partition, the naive full comparison)
            -> {items: [[give: [[key, state], ...], want: [key, ...]] | nil, ...]}
    merge   {items: [[key, state], ...]} -> {merged: int}

clock = [[node: str, counter: int], ...] (a version vector, vclock.VersionVector.entries);
hash = the first `WIDTH` bytes of merkle.entry_hash(key, stored bytes), nil when the
sender compares clocks only (the naive full comparison); state = vclock.encode bytes.
Partitions are 0..ring_size-1 (checked by the responder, which knows its ring).
"""

from __future__ import annotations

from typing import Any

import msgpack

from antientropy.errors import InvalidMessage
from kvstore import vclock
from kvstore.errors import InvalidSiblingSet
from kvstore.vclock import SiblingSet, VersionVector

CONTENT_TYPE = "application/x-msgpack"
WIDTH = 8  # bytes of a node or entry hash on the wire (a miss has probability 2**-64)
MAX_BODY_BYTES = 64 << 20  # a whole partition's states for a wiped replica fit
MAX_ITEMS = 1 << 20  # entries of one array (indices, keys)
MAX_KEY_BYTES = 1024
MAX_NODE_BYTES = 255
MAX_COUNTER = (1 << 63) - 1
Clock = tuple[tuple[str, int], ...]
Listed = tuple[bytes, Clock, bytes | None]  # key, clock, entry hash prefix (or None)

_FIELDS = {"nodes": {"ring_size", "fanout", "depth", "width", "items"}, "keys": {"items"},
           "merge": {"items"}}


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def unpack(op: str, data: bytes) -> dict[str, Any]:
    """The map of one `op` request; InvalidMessage unless it has exactly its fields."""
    if op not in _FIELDS:
        raise InvalidMessage(f"unknown anti-entropy op {op!r:.40}")
    body = unpack_map(data)
    if body.keys() != _FIELDS[op]:
        raise InvalidMessage(f"{op}: fields must be {sorted(_FIELDS[op])}, not "
                             f"{sorted(body)[:8]}")
    return body


def unpack_map(data: bytes) -> dict[str, Any]:
    if len(data) > MAX_BODY_BYTES:
        raise InvalidMessage(f"body of {len(data)} bytes is over {MAX_BODY_BYTES}")
    try:
        obj = msgpack.unpackb(bytes(data), raw=False, strict_map_key=True,
                              max_bin_len=MAX_BODY_BYTES, max_str_len=4096,
                              max_array_len=MAX_ITEMS, max_map_len=16, max_ext_len=0)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise InvalidMessage(f"body is not one msgpack value: {exc}") from None
    if not isinstance(obj, dict):
        raise InvalidMessage(f"body must be a msgpack map, not {type(obj).__name__}")
    return obj


def as_int(obj: object, what: str, low: int, high: int) -> int:
    if type(obj) is not int or not low <= obj <= high:
        raise InvalidMessage(f"{what} must be an int in {low}..{high}: {obj!r:.40}")
    return obj


def as_list(obj: object, what: str, size: int | None = None) -> list:
    if not isinstance(obj, list) or (size is not None and len(obj) != size):
        raise InvalidMessage(f"{what} must be an array" + (f" of {size}" if size else ""))
    return obj


def as_key(obj: object) -> bytes:
    if not isinstance(obj, bytes) or not 1 <= len(obj) <= MAX_KEY_BYTES:
        raise InvalidMessage(f"a key must be 1..{MAX_KEY_BYTES} bytes: {obj!r:.40}")
    return obj


def as_state(obj: object) -> SiblingSet:
    if not isinstance(obj, bytes):
        raise InvalidMessage("a state must be encoded sibling-set bytes")
    try:
        return vclock.decode(obj)
    except InvalidSiblingSet as exc:
        raise InvalidMessage(f"state: {exc.reason}") from None


def as_clock(obj: object) -> Clock:
    entries = []
    for entry in as_list(obj, "clock"):
        node, counter = as_list(entry, "clock entry", 2)
        if not isinstance(node, str) or not 1 <= len(node.encode()) <= MAX_NODE_BYTES:
            raise InvalidMessage(f"clock node must be a name of 1..255 bytes: {node!r:.40}")
        entries.append((node, as_int(counter, "clock counter", 1, MAX_COUNTER)))
    if [n for n, _ in entries] != sorted({n for n, _ in entries}):
        raise InvalidMessage("clock entries must be sorted by node and distinct")
    return tuple(entries)


def as_listed(obj: object) -> Listed:
    key, clock, digest = as_list(obj, "listed key", 3)
    if digest is not None and (not isinstance(digest, bytes) or len(digest) != WIDTH):
        raise InvalidMessage(f"a listed hash must be {WIDTH} bytes or nil")
    return as_key(key), as_clock(clock), digest


def as_items(obj: object) -> list[tuple[bytes, SiblingSet]]:
    return [(as_key(k), as_state(s)) for k, s in
            (as_list(item, "item", 2) for item in as_list(obj, "items"))]


def clock_of(state: SiblingSet) -> Clock:
    return state.clock.entries


def vv(clock: Clock) -> VersionVector:
    return VersionVector(clock)


def pack_items(items: list[tuple[bytes, SiblingSet]]) -> list[list]:
    return [[k, vclock.encode(s)] for k, s in items]


__all__ = ["CONTENT_TYPE", "MAX_BODY_BYTES", "WIDTH", "Clock", "Listed", "as_clock",
           "as_int", "as_items", "as_key", "as_list", "as_listed", "as_state", "clock_of",
           "pack", "pack_items", "unpack", "unpack_map", "vv"]
