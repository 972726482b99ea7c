"""Linearizability of a single-object history: the Wing-Gong-Lowe search (as Porcupine does).

Theory of operation (Wing & Gong 1993; Lowe, "Testing for linearizability", 2017; Knossos
and Porcupine implement the same search). A history is linearizable if every operation can
be given one instant between its invoke and its completion such that the operations, run in
that order against a sequential model, return what they returned.

The search walks a doubly linked list of call and return entries sorted by time. At a call
it tries to linearize that operation next (the model accepts it from the current state):
it lifts the call and its return out of the list, pushes the choice on a stack and starts
again from the head. Reaching a return means that operation's deadline passed before it was
linearized: the last choice was wrong, so pop it, put it back and try the next call. A cache
of (set of linearized operations, model state) prunes configurations already explored
(Lowe's improvement). Worst case exponential in the concurrency; fine for per-key histories
of a few thousand operations with tens of concurrent clients.

Indeterminate operations (`info`) have their return at infinity: they may take effect at any
later time, or never. All of them sit at the end of the list, so reaching the first of their
returns means every determinate operation is linearized: success. Failed operations surely
did not happen and are dropped; indeterminate reads have no effect and are dropped too.

A history over many keys is checked key by key (linearizability is compositional: Herlihy &
Wing's locality), which is what keeps the search small.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from chaos.history import Operation, OpType


class Model(Protocol):
    """A sequential specification: `step` returns (accepted, next state); states hashable."""

    def init(self) -> Hashable: ...

    def step(self, state: Any, op: Operation) -> tuple[bool, Hashable]: ...


class Register:
    """A read/write/compare-and-set register; the initial value is None.

    read: ok iff the value read equals the state. write v: state becomes v.
    cas [old, new]: ok iff the state is old; state becomes new.
    """

    def init(self) -> Hashable:
        return None

    def step(self, state: Any, op: Operation) -> tuple[bool, Hashable]:
        if op.f == "read":
            return op.result == state, state
        if op.f == "write":
            return True, op.value
        if op.f == "cas":
            old, new = op.value
            return state == old, new if state == old else state
        raise ValueError(f"a register has no operation {op.f!r}")


class VersionedRegister:
    """A register whose writes get a version from the service, as the lock service's
    entries do (a table-wide revision: larger than any before, not predictable).

    State (value, version); (None, 0) is absent; version None means "written by an
    operation whose answer we never saw", which the next read reveals.
    read -> result [value, version] or None for absent.
    write v -> result: the new version (None when indeterminate).
    cas [expected_version, v]: ok iff the version is expected -> result: the new version.
    delete: back to absent.
    """

    def init(self) -> Hashable:
        return (None, 0)

    def step(self, state: Any, op: Operation) -> tuple[bool, Hashable]:
        value, version = state
        if op.f == "read":
            seen = tuple(op.result) if op.result else (None, 0)
            fits = seen[0] == value and (version is None or seen[1] == version)
            return fits, seen
        if op.f == "write":
            return True, (op.value, op.result)
        if op.f == "cas":
            expected, new = op.value
            if version is not None and version != expected:
                return False, state
            return True, (new, op.result)
        if op.f == "delete":
            return True, (None, 0)
        raise ValueError(f"a versioned register has no operation {op.f!r}")


@dataclass(frozen=True, slots=True)
class Verdict:
    valid: bool
    operations: int  # operations the search had to place
    explored: int  # configurations cached (a measure of the work done)
    # When not valid: the longest prefix linearized, and the operations none of whose
    # placements fit after it (the evidence to show a human).
    linearized: tuple[Operation, ...] = ()
    stuck: tuple[Operation, ...] = ()


class _Entry:
    __slots__ = ("bit", "is_call", "match", "next", "op", "prev")

    def __init__(self, op: Operation | None, bit: int, is_call: bool) -> None:
        self.op, self.bit, self.is_call = op, bit, is_call
        self.match: _Entry | None = None
        self.prev: _Entry | None = None
        self.next: _Entry | None = None


def _relevant(ops: Iterable[Operation]) -> list[Operation]:
    keep = []
    for op in ops:
        if op.type is OpType.FAIL:
            continue  # surely did not happen
        if op.type is OpType.INFO and op.f == "read":
            continue  # no effect, nothing observed
        keep.append(op)
    return keep


def _build(ops: list[Operation]) -> _Entry:
    events: list[tuple[float, int, _Entry]] = []
    for i, op in enumerate(ops):
        call, ret = _Entry(op, 1 << i, True), _Entry(op, 1 << i, False)
        call.match = ret
        # Calls sort before returns at the same instant: touching intervals overlap.
        events.append((op.start, 0, call))
        events.append((op.end, 1, ret))
    events.sort(key=lambda e: (e[0], e[1]))
    head = _Entry(None, 0, False)
    prev = head
    for _, _, entry in events:
        prev.next, entry.prev = entry, prev
        prev = entry
    return head


def _lift(call: _Entry) -> None:
    for e in (call, call.match):
        assert e is not None and e.prev is not None
        e.prev.next = e.next
        if e.next is not None:
            e.next.prev = e.prev


def _unlift(call: _Entry) -> None:
    for e in (call.match, call):  # reverse order of _lift
        assert e is not None and e.prev is not None
        e.prev.next = e
        if e.next is not None:
            e.next.prev = e


def check(ops: Iterable[Operation], model: Model) -> Verdict:
    """Whether one object's operations are linearizable with respect to `model`."""
    todo = _relevant(ops)
    head = _build(todo)
    state: Hashable = model.init()
    linearized = 0
    cache: set[tuple[int, Hashable]] = {(0, state)}
    stack: list[tuple[_Entry, Hashable]] = []
    best: list[Operation] = []
    entry = head.next
    while entry is not None:
        assert entry.op is not None
        if entry.is_call:
            accepted, nxt = model.step(state, entry.op)
            if accepted and (linearized | entry.bit, nxt) not in cache:
                cache.add((linearized | entry.bit, nxt))
                stack.append((entry, state))
                state, linearized = nxt, linearized | entry.bit
                _lift(entry)
                if len(stack) > len(best):
                    best = [e.op for e, _ in stack if e.op is not None]
                entry = head.next
            else:
                entry = entry.next
        elif entry.op.end == float("inf"):
            break  # only indeterminate returns remain: every determinate op is placed
        else:
            if not stack:
                return Verdict(False, len(todo), len(cache), tuple(best), _stuck(todo, best))
            top, state = stack.pop()
            linearized &= ~top.bit
            _unlift(top)
            entry = top.next
    return Verdict(True, len(todo), len(cache))


def _stuck(ops: list[Operation], placed: list[Operation]) -> tuple[Operation, ...]:
    """After the longest linearizable prefix, the operations that had to go next (those
    invoked before the earliest deadline among the rest); none of them fits."""
    done = {id(o) for o in placed}
    rest = [o for o in ops if id(o) not in done]
    deadline = min(o.end for o in rest)
    return tuple(sorted((o for o in rest if o.start <= deadline), key=lambda o: o.start))


def check_per_key(ops: Iterable[Operation], model_factory: Callable[[], Model]
                  ) -> dict[Any, Verdict]:
    """`check` each key's operations separately (locality); returns a verdict per key."""
    by_key: dict[Any, list[Operation]] = defaultdict(list)
    for op in ops:
        by_key[_hashable(op.key)].append(op)
    ordered = sorted(by_key.items(), key=lambda kv: str(kv[0]))
    return {k: check(v, model_factory()) for k, v in ordered}


def _hashable(key: Any) -> Hashable:
    return tuple(key) if isinstance(key, list) else key
