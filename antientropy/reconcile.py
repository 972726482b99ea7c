"""Which keys of a differing segment must move, and which way (pure logic, no I/O).

Dynamo §4.7: after the trees name the differing segments, the replicas compare those
segments' keys. The initiator lists each of its keys there with its clock (and the first
bytes of its entry hash); the responder compares the list with its own keys of the same
segments and answers, per key:

- equal entry hashes: nothing (the stored bytes are the same);
- only the initiator has the key, or its clock strictly descends the responder's:
  `want` (the initiator sends its state);
- only the responder has it, or its clock strictly descends the initiator's: `give` (the
  responder sends its state back);
- concurrent clocks, or equal clocks with different bytes: both; the initiator first
  merges the given state, then sends its merged state, so both end with vclock.sync of
  the two, as read repair would (siblings kept, tombstones respected).

Without hashes (the naive full comparison sends clocks only) equal clocks count as equal.
A key whose stored bytes do not decode is left alone (counted in `damaged`): merging over
it would fail, and an operator must look at it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from antientropy.codec import WIDTH, Listed
from antientropy.merkle import HASH_BYTES, entry_hash
from kvstore import vclock
from kvstore.errors import InvalidSiblingSet
from kvstore.vclock import Order, SiblingSet, VersionVector


def entry_digest(key: bytes, raw: bytes) -> bytes:
    """The first WIDTH bytes of merkle.entry_hash(key, raw), as bytes."""
    return entry_hash(key, raw).to_bytes(HASH_BYTES, "big")[:WIDTH]


@dataclass
class Verdict:
    give: list[tuple[bytes, bytes]] = field(default_factory=list)  # key, responder's bytes
    want: list[bytes] = field(default_factory=list)
    damaged: int = 0


def _decode(raw: bytes) -> SiblingSet | None:
    try:
        return vclock.decode(raw)
    except InvalidSiblingSet:
        return None


def reconcile(theirs: Iterable[Listed], mine: Mapping[bytes, bytes]) -> Verdict:
    """The responder's answer to the initiator's listing `theirs`, given its own stored
    bytes `mine` of the same segments. Given states are checked to decode. O(keys)."""
    out = Verdict()
    seen: set[bytes] = set()
    for key, clock, digest in theirs:
        seen.add(key)
        raw = mine.get(key)
        if raw is None:
            out.want.append(key)
            continue
        if digest is not None and entry_digest(key, raw) == digest:
            continue
        state = _decode(raw)
        if state is None:
            out.damaged += 1
            continue
        order = vclock.compare(VersionVector(clock), state.clock)
        if order is Order.EQUAL and digest is None:
            continue
        if order is not Order.BEFORE:
            out.want.append(key)
        if order is not Order.AFTER:
            out.give.append((key, raw))
    for key, raw in mine.items():
        if key not in seen:
            if _decode(raw) is None:
                out.damaged += 1
            else:
                out.give.append((key, raw))
    return out


__all__ = ["Verdict", "entry_digest", "reconcile"]
