"""Who is waiting for what inside the driver: proposals by (index, term), membership changes,
ReadIndex answers by context, and callers waiting for an applied index.

Pure bookkeeping over asyncio futures (no I/O, no clock). The driver tells it what happened
(an entry applied, a snapshot installed, leadership lost) and it settles the right futures.
Every future is settled at most once; one a caller abandoned (cancelled) is skipped.
"""

from __future__ import annotations

import asyncio
from typing import Any

from raft.driver_errors import ProposalLost, ProposalOutcomeUnknown
from raft.messages import ConfState, Entry


def _settle(fut: asyncio.Future[Any], result: Any = None, exc: BaseException | None = None) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)


class Waiters:
    def __init__(self) -> None:
        self.proposals: dict[int, tuple[int, asyncio.Future[Any]]] = {}  # index -> (term, f)
        self.conf_changes: list[tuple[int, int, asyncio.Future[ConfState]]] = []
        self.reads: dict[bytes, asyncio.Future[int]] = {}  # ReadIndex context -> f
        self.applied: list[tuple[int, asyncio.Future[None]]] = []  # wait for applied >= i

    def proposer_of(self, e: Entry) -> asyncio.Future[Any] | None:
        """The future of the proposal that became `e`, if this node proposed it.

        A proposal whose index was taken by an entry of another term was overwritten by a
        new leader: it fails with `ProposalLost` here (it will never be applied).
        """
        waiting = self.proposals.pop(e.index, None)
        if waiting is None:
            return None
        term, fut = waiting
        if term == e.term:
            return fut
        _settle(fut, exc=ProposalLost(
            f"the entry at {e.index} is from term {e.term}, not {term}: a new leader "
            "replaced the proposal; it was not applied"))
        return None

    def conf_change_applied(self, e: Entry, conf: ConfState) -> None:
        still = []
        for index, term, fut in self.conf_changes:
            if index != e.index:
                still.append((index, term, fut))
            elif term == e.term:
                _settle(fut, conf)
            else:
                _settle(fut, exc=ProposalLost(f"membership change at {index} was replaced"))
        self.conf_changes = still

    def snapshot_installed(self, index: int) -> None:
        """A snapshot from the leader jumped past these proposals: their fate is unknown."""
        for i in [i for i in self.proposals if i <= index]:
            _, fut = self.proposals.pop(i)
            _settle(fut, exc=ProposalOutcomeUnknown(
                f"a snapshot at {index} replaced the log here; outcome unknown"))

    def read_answered(self, context: bytes, index: int) -> None:
        fut = self.reads.get(context)
        if fut is not None:
            _settle(fut, index)

    def applied_to(self, applied: int) -> None:
        still = []
        for index, fut in self.applied:
            if index <= applied:
                _settle(fut)
            elif not fut.done():
                still.append((index, fut))
        self.applied = still

    def fail_proposals(self, exc: BaseException) -> None:
        """Leadership lost: every proposal and membership change still waiting fails."""
        for _, fut in self.proposals.values():
            _settle(fut, exc=exc)
        self.proposals.clear()
        for _, _, cfut in self.conf_changes:
            _settle(cfut, exc=exc)
        self.conf_changes = []

    def fail_all(self, exc: BaseException) -> None:
        self.fail_proposals(exc)
        for fut in self.reads.values():
            _settle(fut, exc=exc)
        for _, ifut in self.applied:
            _settle(ifut, exc=exc)
        self.applied = []

    def __len__(self) -> int:
        return len(self.proposals)
