"""Whole clusters under a seeded fault schedule; the Raft safety properties on every step.

See tests/raft/sim.py for the network, the fault schedule (`run_seed`) and the checker.
The default suite runs DEFAULT_SEEDS seeds in batches; `-m slow` runs many more.
"""

from __future__ import annotations

import pytest

from raft import RaftCore
from raft.messages import Message
from tests.raft.scenario import check_seed, run_seed
from tests.raft.sim import Network

BATCH = 50
DEFAULT_SEEDS = 2000
SLOW_SEEDS = 20000


@pytest.mark.parametrize("batch", range(DEFAULT_SEEDS // BATCH))
def test_random_faults_keep_raft_safety_and_heal(batch: int) -> None:
    for seed in range(batch * BATCH, (batch + 1) * BATCH):
        check_seed(seed)


@pytest.mark.slow
@pytest.mark.parametrize("batch", range(DEFAULT_SEEDS // BATCH, SLOW_SEEDS // BATCH))
def test_random_faults_many_more_seeds(batch: int) -> None:
    for seed in range(batch * BATCH, (batch + 1) * BATCH):
        check_seed(seed)


def test_a_seed_replays_identically() -> None:
    a, b = run_seed(7), run_seed(7)
    assert a.trace_tail() == b.trace_tail()
    assert a.now == b.now
    assert [n.sm.digest for n in a.nodes.values()] == [n.sm.digest for n in b.nodes.values()]


class VotesForAnyone(RaftCore):
    """A broken core: grants votes without the §5.4.1 up-to-date check."""

    def _handle_vote_request(self, m: Message) -> None:
        if self.vote in (0, m.sender) or m.type.name == "PRE_VOTE":
            from raft.messages import MessageType as MT

            resp = MT.VOTE_RESP if m.type == MT.VOTE else MT.PRE_VOTE_RESP
            self._send(resp, m.sender, term=m.term)
            if m.type == MT.VOTE:
                self.vote = m.sender
                self.election_elapsed = 0
        else:
            super()._handle_vote_request(m)


class ReadsWithoutHeartbeat(RaftCore):
    """A broken core: serves ReadIndex at its commit index without confirming leadership."""

    def _leader_read(self, context: bytes, sender: int) -> None:
        self._release_read(context, self.log.committed, sender)


@pytest.mark.parametrize(
    ("core_class", "symptom"),
    [(VotesForAnyone, "lacks entry"), (ReadsWithoutHeartbeat, "stale read")],
)
def test_checker_catches_a_broken_core_and_reports_a_replayable_seed(
    core_class: type[RaftCore], symptom: str
) -> None:
    failures = []
    for seed in range(300):
        try:
            check_seed(seed, core_class=core_class)
        except AssertionError as exc:
            failures.append(str(exc))
            if symptom in str(exc):
                break
    assert any(symptom in f for f in failures), failures[:3]
    report = next(f for f in failures if symptom in f)
    first_line = report.splitlines()[0]
    assert first_line.startswith("seed ") and "failed" in first_line
    assert "--- last events and messages ---" in report
    assert "->" in report  # the message trace
    assert "replay: .venv/bin/python -m tests.raft.sim " in report


def test_network_verbs_cut_isolate_drop_and_recover() -> None:
    net = Network(1)
    net.isolate(1)
    assert (1, 2) in net.cuts and (3, 1) in net.cuts and (2, 3) not in net.cuts
    net.drop(2, 3, 1.0)
    net.recover()
    assert not net.cuts and not net.link_drop
