"""Histories: what the clients of a chaos run did, as plain records (Jepsen's model).

Theory of operation. A client about to call the system appends an *invoke* record; when the
call returns it appends a *completion* with the same `process`: `ok` (it happened), `fail`
(it surely did not happen: refused before any effect, or a read) or `info` (indeterminate:
a timeout or a lost connection; it may have happened, now or later). A process runs one
operation at a time, so an invoke pairs with the next record of its process. A process
whose last invoke has no completion (the run ended) is treated as `info`. Checkers read
only the history, so they can be run alone on a saved `history.jsonl`.

One record per line in `history.jsonl`:

    {"type": "invoke", "process": 3, "f": "write", "key": "k1", "value": 7, "time": 1234}

`time` is `time.monotonic_ns()` of the harness process (one clock for every client, so
intervals of different clients compare). `value` on an invoke is what was asked (write 7,
cas [1, 2]); on an ok completion it is what was observed or granted (the value read, the
sequencer). Other fields go to `extra`.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

INF = float("inf")


class OpType(enum.Enum):
    INVOKE = "invoke"
    OK = "ok"
    FAIL = "fail"
    INFO = "info"


class HistoryError(ValueError):
    """A history that breaks the rules above (the checker cannot trust it)."""


@dataclass(frozen=True, slots=True)
class Record:
    """One line of a history."""

    type: OpType
    process: int
    f: str
    time: int
    key: Any = None
    value: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        body = {"type": self.type.value, "process": self.process, "f": self.f,
                "key": self.key, "value": self.value, "time": self.time, **self.extra}
        # default=repr: a client library's odd return value must never break the recording
        return json.dumps(body, separators=(",", ":"), sort_keys=True, default=repr)

    @classmethod
    def from_json(cls, line: str) -> Record:
        try:
            body = json.loads(line)
        except json.JSONDecodeError as exc:
            raise HistoryError(f"not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise HistoryError("a record is a JSON object")
        try:
            kind = OpType(body.pop("type"))
            process, f, time = body.pop("process"), body.pop("f"), body.pop("time")
        except (KeyError, ValueError) as exc:
            raise HistoryError(f"missing or bad field: {exc}") from None
        if type(process) is not int or type(time) is not int or not isinstance(f, str):
            raise HistoryError("process and time are integers, f is a string")
        return cls(kind, process, f, time, body.pop("key", None), body.pop("value", None), body)


@dataclass(frozen=True, slots=True)
class Operation:
    """An invoke paired with its completion: the unit every checker works on.

    `end` is the completion's time, or infinity when the outcome is indeterminate (`info`
    or no completion): such an operation may take effect at any time after `start`.
    """

    process: int
    f: str
    key: Any
    value: Any  # the invoke's argument
    result: Any  # the completion's value (None unless ok)
    type: OpType  # OK, FAIL or INFO
    start: int
    end: float
    index: int  # position of the invoke in the history: a stable identity

    @property
    def ok(self) -> bool:
        return self.type is OpType.OK


def pair(records: Iterable[Record]) -> list[Operation]:
    """Pair invokes with completions; a trailing invoke without completion becomes info.

    Raises HistoryError if a process invokes twice without completing, completes without an
    invoke, or completes a different function than it invoked.
    """
    open_: dict[int, tuple[int, Record]] = {}
    ops: list[Operation] = []
    for i, r in enumerate(records):
        if r.type is OpType.INVOKE:
            if r.process in open_:
                raise HistoryError(f"record {i}: process {r.process} invoked twice")
            open_[r.process] = (i, r)
            continue
        if r.process not in open_:
            raise HistoryError(f"record {i}: process {r.process} completes without an invoke")
        j, inv = open_.pop(r.process)
        if r.f != inv.f:
            raise HistoryError(f"record {i}: completes {r.f!r}, invoked {inv.f!r}")
        if r.time < inv.time:
            raise HistoryError(f"record {i}: completes before it was invoked")
        end = INF if r.type is OpType.INFO else r.time
        result = r.value if r.type is OpType.OK else None
        ops.append(Operation(inv.process, inv.f, inv.key, inv.value, result, r.type,
                             inv.time, end, j))
    for j, inv in open_.values():
        ops.append(Operation(inv.process, inv.f, inv.key, inv.value, None, OpType.INFO,
                             inv.time, INF, j))
    ops.sort(key=lambda o: o.index)
    return ops


def write(records: Iterable[Record], out: TextIO) -> None:
    for r in records:
        out.write(r.to_json() + "\n")


def read(path: str | Path) -> Iterator[Record]:
    """The records of a history file; HistoryError names the line that is wrong."""
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield Record.from_json(line)
            except HistoryError as exc:
                raise HistoryError(f"{path}:{n}: {exc}") from None
