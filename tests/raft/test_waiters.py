"""The driver's bookkeeping of waiting callers (raft/waiters.py), without I/O."""

from __future__ import annotations

import asyncio

import pytest

from raft.driver_errors import ProposalLost, ProposalOutcomeUnknown
from raft.messages import ConfState, Entry, EntryType
from raft.waiters import Waiters


def run(fn) -> None:
    async def main() -> None:
        fn(asyncio.get_running_loop())

    asyncio.run(main())


def test_a_proposal_is_found_by_index_and_term_and_lost_under_another_term() -> None:
    """§5.3: an entry at our index with another term means a new leader overwrote ours."""

    def body(loop: asyncio.AbstractEventLoop) -> None:
        w = Waiters()
        ours, overwritten = loop.create_future(), loop.create_future()
        w.proposals[5] = (2, ours)
        w.proposals[6] = (2, overwritten)
        assert w.proposer_of(Entry(term=2, index=5, data=b"x")) is ours
        assert w.proposer_of(Entry(term=3, index=6, data=b"y")) is None
        with pytest.raises(ProposalLost, match="not applied"):
            overwritten.result()
        assert w.proposer_of(Entry(term=2, index=7)) is None  # not ours at all
        assert len(w) == 0

    run(body)


def test_snapshot_and_leadership_loss_settle_waiters_with_outcome_unknown() -> None:
    def body(loop: asyncio.AbstractEventLoop) -> None:
        w = Waiters()
        futs = {i: loop.create_future() for i in (3, 4, 9)}
        for i, f in futs.items():
            w.proposals[i] = (1, f)
        w.snapshot_installed(4)
        for i in (3, 4):
            with pytest.raises(ProposalOutcomeUnknown):
                futs[i].result()
        assert not futs[9].done()
        w.fail_proposals(ProposalOutcomeUnknown("lost leadership"))
        with pytest.raises(ProposalOutcomeUnknown, match="lost leadership"):
            futs[9].result()

    run(body)


def test_reads_conf_changes_and_applied_index() -> None:
    def body(loop: asyncio.AbstractEventLoop) -> None:
        w = Waiters()
        read, gone = loop.create_future(), loop.create_future()
        w.reads[b"r1"] = read
        w.reads[b"r2"] = gone
        gone.cancel()  # a caller that gave up is skipped, not an error
        w.read_answered(b"r1", 12)
        w.read_answered(b"r2", 12)
        assert read.result() == 12
        low, high = loop.create_future(), loop.create_future()
        w.applied += [(10, low), (20, high)]
        w.applied_to(15)
        assert low.done() and not high.done()
        conf = loop.create_future()
        w.conf_changes.append((8, 2, conf))
        new = ConfState(voters=frozenset({1, 2, 4}))
        w.conf_change_applied(Entry(2, 8, EntryType.CONF_CHANGE), new)
        assert conf.result() == new
        w.fail_all(RuntimeError("stopping"))
        with pytest.raises(RuntimeError):
            high.result()

    run(body)
