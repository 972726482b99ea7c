"""The set checker: no acknowledged add may be lost (Jepsen's set workload).

Clients add unique elements to a few keys of the Dynamo store (siblings merged by union);
after the heal, final reads return each key's elements. Per element (Jepsen's categories):

- ok: acknowledged and present;
- lost: acknowledged (`ok`) but absent from the final read: a broken promise;
- unexpected: present but never attempted: a broken promise (the store made it up);
- recovered: attempted with an indeterminate or failed outcome, yet present (allowed:
  `info` may have happened; a `fail` that shows up means the client's mapping of errors to
  `fail` was wrong, so it is counted apart as `failed_but_present`, also a violation).

Valid when nothing is lost or unexpected and no failed add is present. A key with no
successful final read cannot be judged: it is reported, and the verdict is not valid.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from chaos.history import Operation, OpType


@dataclass(frozen=True, slots=True)
class SetVerdict:
    valid: bool
    attempted: int
    acknowledged: int
    ok: int
    lost: tuple[Any, ...] = ()
    unexpected: tuple[Any, ...] = ()
    recovered: tuple[Any, ...] = ()
    failed_but_present: tuple[Any, ...] = ()
    unread_keys: tuple[Any, ...] = field(default=())


def check(ops: Iterable[Operation]) -> SetVerdict:
    """`add` operations (key, value=element) and `final-read` ones (result = elements)."""
    attempts: dict[Any, dict[Any, OpType]] = defaultdict(dict)
    finals: dict[Any, set[Any]] = {}
    for op in ops:
        if op.f == "add":
            attempts[op.key][op.value] = op.type
        elif op.f == "final-read" and op.type is OpType.OK:
            finals.setdefault(op.key, set()).update(op.result)
    lost, unexpected, recovered, failed_present, unread = [], [], [], [], []
    attempted = acknowledged = ok = 0
    for key in sorted(set(attempts) | set(finals), key=str):
        tried = attempts.get(key, {})
        attempted += len(tried)
        acknowledged += sum(t is OpType.OK for t in tried.values())
        if key not in finals:
            unread.append(key)
            continue
        present = finals[key]
        for element, outcome in tried.items():
            if outcome is OpType.OK:
                if element in present:
                    ok += 1
                else:
                    lost.append((key, element))
            elif element in present:
                (recovered if outcome is OpType.INFO else failed_present).append((key, element))
        unexpected.extend((key, e) for e in sorted(present - tried.keys(), key=str))
    valid = not (lost or unexpected or failed_present or unread)
    return SetVerdict(valid, attempted, acknowledged, ok, tuple(lost), tuple(unexpected),
                      tuple(recovered), tuple(failed_present), tuple(unread))
