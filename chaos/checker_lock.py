"""The lock and election checkers: never two holders, sequencers only increase, fencing holds.

Theory of operation. Every client runs in the harness process, so one monotonic clock
orders them all. A client *believes* it holds lock L from the completion of its successful
`acquire` (result: the sequencer's generation) until the first of: the invoke of its
`release`, its `lost` record (the client library reported jeopardy or loss; the record's
value, else its time, is when it stopped acting as holder), or the end of the history
(it never learned; then its belief extends to infinity). The lock service promises
(shared/DESIGN.md):

1. Mutual exclusion as the clients see it: no two processes' belief intervals for the same
   exclusive lock overlap. (A client's lease is shorter than the server's, so a client that
   was cut off stops believing before anyone else can be granted the lock.)
2. Generations strictly increase: two successful acquires of one lock, the first completed
   before the second was invoked, carry increasing generations; no generation repeats.
3. Fencing: writes to a fenced resource carry the writer's generation (`write`, value =
   generation). Among accepted (`ok`) writes, none with a lower generation may start after a
   write with a higher generation completed: once a newer holder was accepted, stale ones
   are refused.

Election is the same first rule over leadership: `campaign` ok starts a term of leadership,
`resign` invoke or `lost` ends it; at most one leader at a time. Indeterminate acquires
(`info`) confer no belief: a client that does not know it holds a lock must not act on it.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from chaos.history import INF, Operation, OpType


@dataclass(frozen=True, slots=True)
class Interval:
    key: Any
    process: int
    start: float
    end: float
    generation: Any = None


@dataclass(frozen=True, slots=True)
class LockVerdict:
    valid: bool
    acquisitions: int
    accepted_writes: int
    overlaps: tuple[tuple[Interval, Interval], ...] = ()
    generation_violations: tuple[tuple[Operation, Operation], ...] = ()
    fencing_violations: tuple[tuple[Operation, Operation], ...] = ()


def belief_intervals(ops: Iterable[Operation], *, begin: str = "acquire",
                     end: tuple[str, ...] = ("release", "lost")) -> list[Interval]:
    """Per process and key, from an ok `begin` to the next `end` op's invoke (or infinity)."""
    by_process: dict[int, list[Operation]] = defaultdict(list)
    for op in ops:
        by_process[op.process].append(op)
    out: list[Interval] = []
    for process, seq in by_process.items():
        holding: dict[Any, tuple[float, Any]] = {}
        for op in sorted(seq, key=lambda o: o.start):
            if op.f == begin and op.type is OpType.OK and op.key not in holding:
                holding[op.key] = (op.end, op.result)
            elif op.f in end and op.key in holding:
                start, gen = holding.pop(op.key)
                out.append(Interval(op.key, process, start, _ended(op), gen))
        out.extend(Interval(k, process, s, INF, g) for k, (s, g) in holding.items())
    return out


def _ended(op: Operation) -> float:
    """When a belief ended: a `lost` record may carry the instant (it is written once the
    client's operation in flight is over); otherwise the invoke of the ending operation."""
    if op.f == "lost" and type(op.value) is int:
        return min(op.value, op.start)
    return op.start


def overlaps(intervals: Iterable[Interval]) -> list[tuple[Interval, Interval]]:
    """Pairs of intervals of different processes on one key that overlap in time."""
    by_key: dict[Any, list[Interval]] = defaultdict(list)
    for iv in intervals:
        by_key[iv.key].append(iv)
    bad = []
    for ivs in by_key.values():
        ivs.sort(key=lambda i: i.start)
        latest: Interval | None = None  # the interval reaching furthest so far
        for iv in ivs:
            if latest is not None and iv.start < latest.end and iv.process != latest.process:
                bad.append((latest, iv))
            if latest is None or iv.end > latest.end:
                latest = iv
    return bad


def check(ops: Iterable[Operation]) -> LockVerdict:
    ops = list(ops)
    intervals = belief_intervals(ops)
    acquires = [o for o in ops if o.f == "acquire" and o.type is OpType.OK]
    gen_bad = []
    by_lock: dict[Any, list[Operation]] = defaultdict(list)
    for op in acquires:
        by_lock[op.key].append(op)
    for seq in by_lock.values():
        seq.sort(key=lambda o: o.end)
        seen: dict[Any, Operation] = {}
        for i, b in enumerate(seq):
            if b.result in seen:
                gen_bad.append((seen[b.result], b))
            seen[b.result] = b
            gen_bad.extend((a, b) for a in seq[:i] if a.end < b.start and a.result >= b.result)
    writes = [o for o in ops if o.f == "write" and o.type is OpType.OK]
    fence_bad = _fencing_violations(writes)
    valid = not (overlaps(intervals) or gen_bad or fence_bad)
    return LockVerdict(valid, len(acquires), len(writes), tuple(overlaps(intervals)),
                       tuple(gen_bad), tuple(fence_bad))


def _fencing_violations(writes: list[Operation]) -> list[tuple[Operation, Operation]]:
    """(newer, stale) pairs: `stale` started after `newer`, with a higher generation, ended.

    O(w log w): a prefix maximum over writes sorted by completion, searched per write.
    """
    by_end = sorted(writes, key=lambda o: o.end)
    ends = [o.end for o in by_end]
    best: list[Operation] = []  # best[i]: highest generation among by_end[:i + 1]
    for o in by_end:
        best.append(o if not best or o.value > best[-1].value else best[-1])
    bad = []
    for w in writes:
        i = bisect.bisect_left(ends, w.start)  # by_end[:i] completed before w started
        if i and best[i - 1].value > w.value:
            bad.append((best[i - 1], w))
    return bad


def check_election(ops: Iterable[Operation]) -> LockVerdict:
    """At most one leader per election name at any time."""
    ops = list(ops)
    intervals = belief_intervals(ops, begin="campaign", end=("resign", "lost"))
    bad = overlaps(intervals)
    terms = sum(1 for o in ops if o.f == "campaign" and o.type is OpType.OK)
    return LockVerdict(not bad, terms, 0, tuple(bad))
