"""Raft, tested sentence by sentence (after etcd's raft_paper_test.go).

Each test cites the section of "In Search of an Understandable Consensus Algorithm"
(Ongaro, Ousterhout 2014; §5 and §6-8) or of Ongaro's dissertation ("diss.") whose
promise it checks, and has an init / act / check body. Pre-vote and check-quorum are off
unless the test is about them, so the basic algorithm is tested as the paper states it.
"""

from __future__ import annotations

import random

import pytest

from raft import (
    CompactionError,
    ConfChange,
    ConfChangeInvalid,
    ConfChangeType,
    Config,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    NotLeader,
    ProposalDropped,
    RaftCore,
    Role,
)
from tests.raft.sim import Network

MT = MessageType
PLAIN = Config(pre_vote=False, check_quorum=False)


def new_core(
    node_id: int = 1,
    voters: tuple[int, ...] = (1, 2, 3),
    learners: tuple[int, ...] = (),
    config: Config = PLAIN,
    **restore: object,
) -> RaftCore:
    conf = ConfState(frozenset(voters), frozenset(learners))
    return RaftCore(node_id, conf, random.Random(node_id), config, **restore)  # type: ignore[arg-type]


def drain(core: RaftCore) -> list[Message]:
    """Run the driver loop with nothing to persist to: return the messages sent."""
    out: list[Message] = []
    while (rd := core.ready()) is not None:
        out.extend(rd.messages)
        core.advance(rd)
    return out


def m(type: MessageType, sender: int, to: int, term: int, **fields: object) -> Message:
    return Message(type=type, to=to, sender=sender, term=term, **fields)  # type: ignore[arg-type]


def make_leader(core: RaftCore) -> list[Message]:
    """Init helper: core campaigns and wins with every other voter's vote."""
    core.campaign()
    drain(core)
    for v in sorted(core.conf.voters - {core.id}):
        core.step(m(MT.VOTE_RESP, v, core.id, core.term))
    assert core.role == Role.LEADER
    return drain(core)


def entries(*terms: int, start: int = 1) -> list[Entry]:
    return [
        Entry(t, start + i, EntryType.NORMAL, f"e{start + i}".encode())
        for i, t in enumerate(terms)
    ]


def cluster(n: int = 3, config: Config = PLAIN, seed: int = 1, **kw: object) -> Network:
    return Network(seed, range(1, n + 1), config=config, **kw)  # type: ignore[arg-type]


def elect(net: Network, node_id: int) -> None:
    net.nodes[node_id].core.campaign()
    net.process(net.nodes[node_id])
    net.stabilize()
    assert net.nodes[node_id].core.role == Role.LEADER


# ================================================================ §5.1 Raft basics
@pytest.mark.parametrize("role", ["follower", "candidate", "leader"])
def test_update_term_from_message(role: str) -> None:
    """§5.1: "If one server's current term is smaller than the other's, then it updates its
    current term to the larger value. If a candidate or leader discovers that its term is
    out of date, it immediately reverts to follower state." """
    core = new_core()
    if role == "candidate":
        core.campaign()
    elif role == "leader":
        make_leader(core)
    core.step(m(MT.APPEND, 2, 1, 7, index=0, log_term=0))
    assert (core.term, core.role, core.lead) == (7, Role.FOLLOWER, 2)


def test_reject_stale_term_message() -> None:
    """§5.1: "If a server receives a request with a stale term number, it rejects the
    request." The stale leader is told our term so it steps down (diss. §9.6)."""
    core = new_core(config=Config())  # check_quorum on: we answer the stale leader
    core.step(m(MT.HEARTBEAT, 2, 1, 3))
    drain(core)
    core.step(m(MT.APPEND, 3, 1, 2, index=0, log_term=0, entries=tuple(entries(2))))
    out = drain(core)
    assert core.log.last_index == 0
    assert [(x.type, x.to, x.term) for x in out] == [(MT.APPEND_RESP, 3, 3)]


# ================================================================ §5.2 Leader election
def test_start_as_follower() -> None:
    """§5.2: "When servers start up, they begin as followers." """
    assert new_core().role == Role.FOLLOWER


def test_leader_bcast_heartbeat() -> None:
    """§5.2: "Leaders send periodic heartbeats (AppendEntries RPCs that carry no log
    entries) to all followers in order to maintain their authority." """
    core = new_core(config=Config(pre_vote=False, check_quorum=False, heartbeat_tick=2))
    make_leader(core)
    core.tick()
    assert drain(core) == []
    core.tick()
    beats = drain(core)
    assert sorted((x.type, x.to) for x in beats) == [(MT.HEARTBEAT, 2), (MT.HEARTBEAT, 3)]
    assert all(not x.entries for x in beats)


def test_follower_start_election_after_timeout() -> None:
    """§5.2: "If a follower receives no communication over a period of time called the
    election timeout, then it ... begins an election ... it increments its current term
    and transitions to candidate state. It then votes for itself and issues RequestVote
    RPCs in parallel to each of the other servers." The vote is persisted with the Ready
    that sends the requests."""
    core = new_core()
    for _ in range(2 * core.config.election_tick):
        core.tick()
    rd = core.ready()
    assert rd is not None
    assert core.role == Role.CANDIDATE and core.term == 1 and core.vote == 1
    assert rd.hard_state == HardState(1, 1, 0)
    assert sorted((x.type, x.to, x.term) for x in rd.messages) == [
        (MT.VOTE, 2, 1),
        (MT.VOTE, 3, 1),
    ]


@pytest.mark.parametrize(
    ("size", "grants", "rejects", "role"),
    [
        (1, (), (), Role.LEADER),
        (3, (2,), (), Role.LEADER),
        (3, (2, 3), (), Role.LEADER),
        (3, (), (), Role.CANDIDATE),
        (3, (), (2, 3), Role.FOLLOWER),
        (5, (2,), (), Role.CANDIDATE),
        (5, (2, 3), (), Role.LEADER),
        (5, (2,), (3, 4), Role.CANDIDATE),
        (5, (2,), (3, 4, 5), Role.FOLLOWER),
        (5, (), (2, 3), Role.CANDIDATE),
    ],
)
def test_leader_election_in_one_round(
    size: int, grants: tuple[int, ...], rejects: tuple[int, ...], role: Role
) -> None:
    """§5.2: "A candidate wins an election if it receives votes from a majority of the
    servers in the full cluster for the same term." A majority of rejections ends it."""
    core = new_core(voters=tuple(range(1, size + 1)))
    core.campaign()
    drain(core)
    for v in grants:
        core.step(m(MT.VOTE_RESP, v, 1, 1))
    for v in rejects:
        core.step(m(MT.VOTE_RESP, v, 1, 1, reject=True))
    assert core.role == role


def test_follower_vote_at_most_once_per_term_even_across_restart() -> None:
    """§5.2: "Each server will vote for at most one candidate in a given term, on a
    first-come-first-served basis." Figure 2: votedFor is persistent state, so the answer
    survives a crash: the Ready carrying the grant carries the vote in its hard state."""
    core = new_core()
    core.step(m(MT.VOTE, 2, 1, 1))
    rd = core.ready()
    assert rd is not None and rd.hard_state == HardState(1, 2, 0)
    assert [(x.to, x.reject) for x in rd.messages] == [(2, False)]
    core.advance(rd)
    restarted = new_core(hard_state=rd.hard_state)
    for c in (core, restarted):
        c.step(m(MT.VOTE, 3, 1, 1))
        assert [(x.to, x.reject) for x in drain(c)] == [(3, True)]
        c.step(m(MT.VOTE, 2, 1, 1))  # a duplicate of the granted request is granted again
        assert [(x.to, x.reject) for x in drain(c)] == [(2, False)]


def test_candidate_fallback_on_append_from_leader_of_same_term() -> None:
    """§5.2: "If the leader's term ... is at least as large as the candidate's current
    term, then the candidate recognizes the leader as legitimate and returns to follower
    state." """
    core = new_core()
    core.campaign()
    core.step(m(MT.APPEND, 2, 1, 1, index=0, log_term=0))
    assert (core.role, core.term, core.lead) == (Role.FOLLOWER, 1, 2)


def test_election_timeout_randomized() -> None:
    """§5.2: "Raft uses randomized election timeouts ... chosen randomly from a fixed
    interval" (here [election_tick, 2 * election_tick))."""
    seen = set()
    for seed in range(200):
        core = RaftCore(1, ConfState(frozenset({1, 2, 3})), random.Random(seed), PLAIN)
        ticks = 0
        while core.role == Role.FOLLOWER:
            core.tick()
            ticks += 1
        seen.add(ticks)
    assert seen == set(range(PLAIN.election_tick, 2 * PLAIN.election_tick))


# ================================================================ §5.3 Log replication
def test_leader_start_replication() -> None:
    """§5.3: "The leader appends the command to its log as a new entry, then issues
    AppendEntries RPCs in parallel to each of the other servers to replicate the entry."
    """
    core = new_core()
    make_leader(core)
    for v in (2, 3):  # followers acknowledge the leader's no-op
        core.step(m(MT.APPEND_RESP, v, 1, 1, index=1))
    drain(core)
    index = core.propose(b"x")
    out = drain(core)
    assert index == 2 == core.log.last_index
    assert sorted((x.to, x.index, x.log_term, x.entries) for x in out if x.type == MT.APPEND) == [
        (2, 1, 1, (Entry(1, 2, EntryType.NORMAL, b"x"),)),
        (3, 1, 1, (Entry(1, 2, EntryType.NORMAL, b"x"),)),
    ]


def test_leader_commit_entry_after_majority_and_tell_followers() -> None:
    """§5.3: "A log entry is committed once the leader that created the entry has
    replicated it on a majority of the servers ... the leader keeps track of the highest
    index it knows to be committed, and it includes that index in future AppendEntries
    RPCs ... so that the other servers eventually find out." """
    core = new_core()
    make_leader(core)
    assert core.committed == 0
    core.step(m(MT.APPEND_RESP, 2, 1, 1, index=1))
    rd = core.ready()
    assert rd is not None and [e.index for e in rd.committed_entries] == [1]
    assert {x.commit for x in rd.messages if x.type == MT.APPEND} == {1}
    core.advance(rd)


def test_follower_commit_entry_from_leader_commit() -> None:
    """§5.3: "Once a follower learns that a log entry is committed, it applies the entry
    to its local state machine (in log order)." """
    core = new_core(2)
    core.step(m(MT.APPEND, 1, 2, 1, index=0, log_term=0, entries=tuple(entries(1, 1)), commit=1))
    rd = core.ready()
    assert rd is not None and [e.index for e in rd.committed_entries] == [1]
    assert [e.index for e in rd.entries] == [1, 2]
    core.advance(rd)
    core.step(m(MT.HEARTBEAT, 1, 2, 1, commit=2))
    rd = core.ready()
    assert rd is not None and [e.index for e in rd.committed_entries] == [2]


@pytest.mark.parametrize(
    ("log_term", "index", "reject"),
    [(1, 1, False), (1, 2, False), (2, 2, True), (1, 3, True), (3, 3, True)],
)
def test_follower_check_append(log_term: int, index: int, reject: bool) -> None:
    """§5.3: "If the follower does not find an entry in its log with the same index and
    term, then it refuses the new entries." The follower here holds terms [1, 1]."""
    core = new_core(2, hard_state=HardState(1, 0, 0), entries=entries(1, 1))
    core.step(m(MT.APPEND, 1, 2, 3, index=index, log_term=log_term))
    (resp,) = drain(core)
    assert resp.type == MT.APPEND_RESP and resp.reject == reject


def test_follower_append_deletes_conflicts() -> None:
    """§5.3: "If an existing entry conflicts with a new one (same index but different
    terms), delete the existing entry and all that follow it" (Figure 2)."""
    core = new_core(2, hard_state=HardState(2, 0, 1), entries=entries(1, 2, 2, 2))
    new = (Entry(3, 3, EntryType.NORMAL, b"n3"),)
    core.step(m(MT.APPEND, 1, 2, 3, index=2, log_term=2, entries=new, commit=1))
    rd = core.ready()
    assert rd is not None
    assert rd.truncate_from == 3 and rd.entries == new
    assert [e.term for e in core.log.entries] == [1, 2, 3]


def test_stale_append_never_truncates() -> None:
    """§5.3 with a network that reorders: an older, shorter APPEND arriving late must not
    delete entries a newer APPEND added (Figure 2: only *conflicting* entries go)."""
    core = new_core(2, hard_state=HardState(1, 0, 0))
    core.step(m(MT.APPEND, 1, 2, 1, index=0, log_term=0, entries=tuple(entries(1, 1, 1))))
    drain(core)
    core.step(m(MT.APPEND, 1, 2, 1, index=0, log_term=0, entries=tuple(entries(1))))
    (resp,) = drain(core)
    assert core.log.last_index == 3 and resp.index == 1 and not resp.reject


@pytest.mark.parametrize(
    ("follower_terms", "max_rounds"),
    [
        ((1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2), 3),  # a long run of a stale term: skip it whole
        ((1, 1, 1), 3),  # short follower
        ((1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1), 3),  # longer than the leader, stale
    ],
)
def test_leader_fast_backoff_skips_conflicting_term(
    follower_terms: tuple[int, ...], max_rounds: int
) -> None:
    """§5.3: "when rejecting an AppendEntries request, the follower can include the term
    of the conflicting entry and the first index it stores for that term. With this
    information, the leader can decrement nextIndex to bypass all of the conflicting
    entries in that term; one AppendEntries RPC will be required for each term with
    conflicting entries, rather than one RPC per entry." """
    leader_terms = (1, 1, 1, 3, 3, 3, 3, 3, 3, 3)
    net = cluster(2)
    net.load(1, HardState(3, 0, 3), entries(*leader_terms))
    net.load(2, HardState(2, 0, 3), entries(*follower_terms))
    net.record = []
    elect(net, 1)
    rejections = [line for line in net.record if "APPEND_RESP" in line and "reject" in line]
    assert len(rejections) <= max_rounds
    assert [e.term for e in net.nodes[2].core.log.entries] == [*leader_terms, 4]


FIGURE_7_LEADER = (1, 1, 1, 4, 4, 5, 5, 6, 6, 6)


@pytest.mark.parametrize(
    "follower",
    [
        (1, 1, 1, 4, 4, 5, 5, 6, 6),  # (a) missing an entry
        (1, 1, 1, 4),  # (b) missing many
        (1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6),  # (c) an extra uncommitted entry
        (1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7),  # (d) extra entries of a later term
        (1, 1, 1, 4, 4, 4, 4),  # (e) missing and extra
        (1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3),  # (f) a leader of terms 2 and 3 that never committed
    ],
    ids=list("abcdef"),
)
def test_leader_sync_follower_log_figure_7(follower: tuple[int, ...]) -> None:
    """§5.3 (Figure 7): "the leader handles inconsistencies by forcing the followers' logs
    to duplicate its own": whatever a follower holds, after the leader of term 8 is elected
    the follower's log equals the leader's."""
    net = cluster(3)
    net.load(1, HardState(7, 0, 3), entries(*FIGURE_7_LEADER))
    net.load(3, HardState(7, 0, 3), entries(*FIGURE_7_LEADER))  # the vote 1 needs
    net.load(2, HardState(7, 0, 3), entries(*follower))
    elect(net, 1)
    lead = net.nodes[1].core
    assert lead.term == 8
    assert net.nodes[2].core.log.entries == lead.log.entries
    assert [e.term for e in lead.log.entries] == [*FIGURE_7_LEADER, 8]


def test_leader_pipelines_appends_up_to_max_inflight() -> None:
    """§5.3 (etcd's flow control): once a follower's log matches, the leader streams
    APPENDs without waiting, but keeps at most max_inflight unacknowledged."""
    cfg = Config(pre_vote=False, check_quorum=False, max_inflight=2)
    core = new_core(voters=(1, 2), config=cfg)
    make_leader(core)
    core.step(m(MT.APPEND_RESP, 2, 1, 1, index=1))  # probe answered: replicate state
    drain(core)
    for k in range(5):
        core.propose(f"p{k}".encode())
    sent = [x for x in drain(core) if x.type == MT.APPEND and x.entries]
    assert len(sent) == 2  # two in flight, three waiting
    core.step(m(MT.APPEND_RESP, 2, 1, 1, index=sent[0].entries[-1].index))
    more = [x for x in drain(core) if x.type == MT.APPEND and x.entries]
    assert len(more) == 1 and more[0].index == sent[1].entries[-1].index


def test_leader_batches_at_most_max_entries_per_append() -> None:
    """Batching: one APPEND carries at most max_entries_per_append entries."""
    cfg = Config(pre_vote=False, check_quorum=False, max_entries_per_append=3)
    net = cluster(3, config=cfg)
    elect(net, 1)
    for k in range(10):
        net.nodes[1].core.propose(f"p{k}".encode())
    net.record = []
    net.process(net.nodes[1])
    net.stabilize()
    appends = [line for line in net.record if " APPEND " in line and "entries=" in line]
    assert appends and all(line.count(":p") <= 3 for line in appends)
    assert all(n.sm.applied == 11 for n in net.nodes.values())


# ================================================================ §5.4 Safety
@pytest.mark.parametrize(
    ("cand_last_term", "cand_last_index", "granted"),
    [(1, 5, False), (2, 2, False), (2, 3, True), (2, 4, True), (3, 1, True), (1, 9, False)],
)
def test_voter_grants_only_up_to_date_candidates(
    cand_last_term: int, cand_last_index: int, granted: bool
) -> None:
    """§5.4.1: "If the logs have last entries with different terms, then the log with the
    later term is more up-to-date. If the logs end with the same term, then whichever log
    is longer is more up-to-date." The voter's log is terms [1, 1, 2]."""
    core = new_core(2, hard_state=HardState(2, 0, 0), entries=entries(1, 1, 2))
    core.step(m(MT.VOTE, 1, 2, 3, log_term=cand_last_term, index=cand_last_index))
    (resp,) = drain(core)
    assert resp.reject == (not granted)


def test_leader_only_commits_entries_of_its_term_by_counting() -> None:
    """§5.4.2 (Figure 8): "Raft never commits log entries from previous terms by counting
    replicas. Only log entries from the leader's current term are committed by counting."
    A leader of term 3 holding an old term-1 entry on a majority must not commit it until
    an entry of term 3 (its no-op) is on a majority too."""
    core = new_core(hard_state=HardState(2, 0, 0), entries=entries(1, 1))
    make_leader(core)  # term 3; appends the no-op at 3
    core.step(m(MT.APPEND_RESP, 2, 1, 3, index=2))  # follower holds the old entries only
    drain(core)
    assert core.committed == 0
    core.step(m(MT.APPEND_RESP, 2, 1, 3, index=3))
    drain(core)
    assert core.committed == 3


def test_figure_8_an_old_term_entry_on_a_majority_is_not_committed() -> None:
    """§5.4.2 (Figure 8): S1, leader of term 4, gets its term-2 entry at index 2 onto a
    majority (S1, S2, S3). Were it committed now, S5 (last term 3) could still win term 5
    with S3's and S4's votes and overwrite index 2. The checker (state machine safety over
    everything applied anywhere) proves that index 2 was never reported committed."""
    cfg = Config(pre_vote=False, check_quorum=False, max_entries_per_append=1)
    net = cluster(5, config=cfg)
    net.load(1, HardState(3, 0, 1), entries(1, 2))
    net.load(2, HardState(3, 0, 1), entries(1, 2))
    net.load(3, HardState(3, 0, 1), entries(1))
    net.load(4, HardState(3, 0, 1), entries(1))
    net.load(5, HardState(4, 0, 1), [*entries(1), Entry(3, 2, EntryType.NORMAL, b"s5")])
    net.cut(1, 4)
    net.cut(1, 5)
    s1 = net.nodes[1].core
    s1.campaign()
    net.process(net.nodes[1])
    while s1.role != Role.LEADER or s1.prs[3].match < 2:  # (c): index 2 on S1, S2, S3
        assert net.deliver_due(limit=1) == 1
    assert s1.committed < 2
    net.crash(1)
    net.isolate(1)
    elect(net, 5)  # (d): S3 and S4 vote for S5
    assert net.nodes[5].core.term == 5
    assert [net.nodes[i].core.log.term(2) for i in (3, 4, 5)] == [3, 3, 3]
    assert net.checker.applied[2] == (3, b"s5")


def test_leader_appends_noop_on_election() -> None:
    """§8 / diss. §6.4: "each leader ... commit[s] a blank no-op entry into the log at the
    start of its term." """
    core = new_core()
    out = make_leader(core)
    assert core.log.entries[-1] == Entry(1, 1, EntryType.NORMAL, b"")
    assert {x.to for x in out if x.type == MT.APPEND and x.entries} == {2, 3}


def test_leader_completeness_across_elections() -> None:
    """§5.4: "If a log entry is committed in a given term, then that entry will be present
    in the logs of the leaders for all higher-numbered terms." """
    net = cluster(3)
    elect(net, 1)
    net.propose(1, b"committed")
    net.stabilize()
    net.isolate(1)
    elect(net, 2)
    assert net.checker.applied[2] == (1, b"committed")
    assert net.nodes[2].core.log.term(2) == 1


# ================================================================ §6 Membership changes
def test_learner_receives_log_but_does_not_vote_or_count() -> None:
    """diss. §4.2.1: new servers join as non-voting members: "the leader replicates log
    entries to them, but they are not considered for majorities." """
    net = cluster(2, learners=(3,))
    net.crash(2)
    elect_core = net.nodes[1].core
    elect_core.campaign()
    net.process(net.nodes[1])
    net.stabilize()
    assert elect_core.role == Role.CANDIDATE  # 3's vote is never asked for nor counted
    net.restart(2)
    net.stabilize()
    for _ in range(30):
        net.tick()
    lead = net.leader()
    assert lead is not None and lead.id in (1, 2)
    net.crash(3 - lead.id)
    net.propose(lead.id, b"x")
    net.stabilize()
    assert net.nodes[3].core.log.last_index == lead.core.log.last_index  # learner has it
    assert lead.core.committed < lead.core.log.last_index  # but it does not count
    for _ in range(100):
        net.tick()
    assert all(n.core.role != Role.LEADER for n in net.nodes.values() if n.id == 3)


def test_learner_caught_up_is_promoted_and_counts() -> None:
    """diss. §4.2.1: the application promotes a learner once it has caught up; the core
    exposes each member's match index for that decision."""
    net = cluster(3)
    elect(net, 1)
    lead = net.nodes[1].core
    net.conf_change(1, ConfChange(ConfChangeType.ADD_LEARNER, 4))
    net.stabilize()
    assert 4 in lead.conf.learners
    assert lead.match_index()[4] == lead.log.last_index
    net.conf_change(1, ConfChange(ConfChangeType.ADD_VOTER, 4))
    net.stabilize()
    assert lead.conf.voters == {1, 2, 3, 4}
    assert net.nodes[4].core.conf.voters == {1, 2, 3, 4}
    net.crash(2)
    net.crash(3)
    net.propose(1, b"needs 4")
    net.stabilize()
    assert lead.committed < lead.log.last_index  # 2 of 4 voters is not a majority


def test_one_membership_change_at_a_time() -> None:
    """diss. §4.1: "the leader ... does not begin another configuration change until the
    previous change has committed" and (errata) until it has committed an entry of its term.
    """
    core = new_core()
    core.campaign()
    drain(core)
    core.step(m(MT.VOTE_RESP, 2, 1, 1))
    drain(core)
    with pytest.raises(ProposalDropped, match="not committed an entry in its term"):
        core.propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, 4))
    core.step(m(MT.APPEND_RESP, 2, 1, 1, index=1))
    drain(core)
    core.propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, 4))
    assert 4 in core.conf.learners  # in force as soon as it is in the log (diss. §4.1)
    with pytest.raises(ProposalDropped, match="uncommitted"):
        core.propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, 5))


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (ConfChange(ConfChangeType.ADD_VOTER, 2), "already a voter"),
        (ConfChange(ConfChangeType.ADD_LEARNER, 2), "demotion"),
        (ConfChange(ConfChangeType.REMOVE_NODE, 9), "not a member"),
    ],
)
def test_invalid_conf_changes_are_refused(change: ConfChange, why: str) -> None:
    """A change that makes no sense against the current configuration is refused whole."""
    net = cluster(3)
    elect(net, 1)
    last = net.nodes[1].core.log.last_index
    with pytest.raises(ConfChangeInvalid, match=why):
        net.nodes[1].core.propose_conf_change(change)
    assert net.nodes[1].core.log.last_index == last


def test_cannot_remove_the_last_voter() -> None:
    core = new_core(voters=(1,))
    make_leader(core)
    with pytest.raises(ConfChangeInvalid, match="last voter"):
        core.propose_conf_change(ConfChange(ConfChangeType.REMOVE_NODE, 1))


def test_removed_leader_steps_down_after_commit_and_hands_off() -> None:
    """diss. §4.2.2: "the leader ... steps down once the Cnew entry is committed", and until
    then it "manages a cluster that does not include itself": it does not count itself."""
    net = cluster(3)
    elect(net, 1)
    index = net.conf_change(1, ConfChange(ConfChangeType.REMOVE_NODE, 1))
    assert index is not None
    net.stabilize()
    assert net.nodes[1].core.role == Role.FOLLOWER
    assert not net.nodes[1].core.promotable
    lead = net.leader()  # the hand-off: TIMEOUT_NOW to the most up-to-date voter
    assert lead is not None and lead.id in (2, 3)
    assert net.propose(lead.id, b"after") is not None
    net.stabilize()
    assert lead.core.committed == lead.core.log.last_index


def test_removed_server_does_not_disrupt_with_pre_vote() -> None:
    """diss. §4.2.3: removed servers must not disrupt the cluster: with pre-vote and the
    leader lease their elections never reach a higher term."""
    net = cluster(3, config=Config())
    elect(net, 1)
    net.conf_change(1, ConfChange(ConfChangeType.REMOVE_NODE, 3))
    net.stabilize()
    term = net.nodes[1].core.term
    removed = net.nodes[3].core
    removed.conf = ConfState(frozenset({1, 2, 3}))  # pretend it never learned it was removed
    for _ in range(100):
        net.tick()
    assert net.nodes[1].core.role == Role.LEADER and net.nodes[1].core.term == term


# ================================================================ §7 Log compaction
def test_compact_rejects_unapplied_or_compacted_index() -> None:
    """§7: "Each server takes snapshots independently, covering just the committed entries
    in its log" (here: applied ones)."""
    net = cluster(1)
    elect(net, 1)
    net.propose(1, b"a")
    net.stabilize()
    core = net.nodes[1].core
    with pytest.raises(CompactionError):
        core.compact(core.applied + 1, b"")
    snap = core.compact(core.applied, b"state")
    assert snap.meta.index == core.applied and snap.meta.conf_state.voters == {1}
    assert core.log.entries == []
    with pytest.raises(CompactionError):
        core.compact(core.applied, b"")


def follower_behind_a_snapshot(chunk_size: int, pad: int):
    """Node 1 leads; node 3 was down while five entries committed and node 1 compacted
    them into a snapshot (`pad` bytes of padding, sent in `chunk_size` chunks); node 3 is
    back. Returns the network and the snapshot."""
    cfg = Config(pre_vote=False, check_quorum=False, snapshot_chunk_size=chunk_size)
    net = cluster(3, config=cfg, snapshot_pad=pad)
    elect(net, 1)
    net.crash(3)
    for k in range(5):
        net.propose(1, f"p{k}".encode())
    net.stabilize()
    snap = net.compact(1)
    assert snap is not None
    net.restart(3)
    return net, snap


def test_install_snapshot_in_chunks_then_resume_appends() -> None:
    """§7: "the leader must occasionally send snapshots to followers that lag behind ...
    The leader uses a new RPC called InstallSnapshot", which "divide[s the snapshot] into
    chunks for transmission ... each chunk [carries its] byte offset." """
    net, snap = follower_behind_a_snapshot(chunk_size=10, pad=35)
    net.record = []
    for _ in range(6):
        net.tick()
        net.stabilize()
    chunks = [line for line in net.record if "1->3 SNAPSHOT " in line]
    assert len(chunks) == -(-len(snap.data) // 10)  # ceil: every chunk exactly once
    assert [f"offset={k * 10}" in c for k, c in enumerate(chunks)] == [True] * len(chunks)
    assert "done" in chunks[-1]
    net.propose(1, b"after")
    net.stabilize()
    follower = net.nodes[3]
    assert follower.core.log.snap_index == snap.meta.index
    assert follower.sm.applied == net.nodes[1].sm.applied
    assert follower.sm.digest == net.nodes[1].sm.digest


def test_snapshot_chunks_survive_duplication_and_reordering() -> None:
    """§7, with the network this driver really has: duplicated, delayed and reordered
    chunks are acknowledged by offset, so the follower assembles exactly the leader's bytes."""
    from tests.raft.sim import Faults

    net, snap = follower_behind_a_snapshot(chunk_size=4, pad=60)
    net.faults = Faults(duplicate=0.3, delay=0.5, max_delay=3)
    for _ in range(200):
        net.tick()
        if net.nodes[3].sm.applied >= snap.meta.index:
            break
    assert net.nodes[3].core.snapshot == snap


def test_snapshot_restores_conf_state() -> None:
    """§7: the snapshot "includes ... the latest configuration as of the last included
    index", so a follower restored from it knows the membership."""
    net = cluster(3)
    elect(net, 1)
    net.crash(3)
    net.conf_change(1, ConfChange(ConfChangeType.ADD_LEARNER, 4))
    net.stabilize()
    net.propose(1, b"x")
    net.stabilize()
    snap = net.compact(1)
    assert snap is not None and snap.meta.conf_state.learners == {4}
    net.restart(3)
    for _ in range(5):
        net.tick()
        net.stabilize()
    assert net.nodes[3].core.conf.learners == {4}
    assert net.nodes[3].core.log.snap_index == snap.meta.index


# ================================================================ §8 Client interaction
def test_read_index_released_after_heartbeat_quorum() -> None:
    """§8 / diss. §6.4: the leader "records its current commit index", then "sends a new
    round of heartbeats and waits for their acknowledgments from a majority", then the read
    may be served once "the state machine has advanced at least as far as the readIndex"."""
    core = new_core()
    make_leader(core)
    core.step(m(MT.APPEND_RESP, 2, 1, 1, index=1))
    drain(core)
    core.read_index(b"r1")
    rd = core.ready()
    assert rd is not None and rd.read_states == ()
    beats = [x for x in rd.messages if x.type == MT.HEARTBEAT]
    assert {x.context for x in beats} == {b"r1"}
    core.advance(rd)
    core.step(m(MT.HEARTBEAT_RESP, 2, 1, 1, context=b"r1"))
    rd = core.ready()
    assert rd is not None and [(r.context, r.index) for r in rd.read_states] == [(b"r1", 1)]


def test_read_index_not_released_by_a_leader_without_quorum() -> None:
    """§8: "a leader must check whether it has been deposed before processing a read-only
    request": a partitioned leader hears no heartbeat acks and answers nothing."""
    net = cluster(3)
    elect(net, 1)
    net.isolate(1)
    net.read_index(1, b"r1")
    for _ in range(5):
        net.tick()
    assert b"r1" not in net.checker.released


def test_read_index_waits_for_a_commit_in_the_leaders_term() -> None:
    """diss. §6.4: "the leader must have at least one committed entry from its term" before
    its commit index can serve reads."""
    core = new_core()
    core.campaign()
    drain(core)
    core.step(m(MT.VOTE_RESP, 2, 1, 1))
    drain(core)
    core.read_index(b"r")
    assert [x for x in drain(core) if x.type == MT.HEARTBEAT] == []
    core.step(m(MT.APPEND_RESP, 2, 1, 1, index=1))  # the no-op commits
    beats = [x for x in drain(core) if x.type == MT.HEARTBEAT]
    assert {x.context for x in beats} == {b"r"}


def test_follower_read_index_is_forwarded_to_the_leader() -> None:
    """diss. §6.4: "Followers ... request the current readIndex from the leader." """
    net = cluster(3)
    elect(net, 1)
    net.propose(1, b"x")
    net.stabilize()
    assert net.read_index(3, b"f1")
    net.stabilize()
    assert net.checker.released[b"f1"] == net.nodes[1].core.committed


def test_propose_on_follower_raises_not_leader_with_hint() -> None:
    """§8: "If the client contacts a follower, the follower will reject the client's
    request and supply information about the most recent leader it has heard from." """
    net = cluster(3)
    elect(net, 2)
    with pytest.raises(NotLeader) as info:
        net.nodes[1].core.propose(b"x")
    assert info.value.leader == 2


# ================================================================ diss. §9.6, §6.2, §3.10
def test_pre_vote_keeps_a_partitioned_node_from_inflating_its_term() -> None:
    """diss. §9.6: with pre-vote "a server [first] ask[s] whether its log is up-to-date
    enough", so a partitioned server does not increment its term and cannot disrupt the
    leader when it rejoins."""
    net = cluster(3, config=Config())
    elect(net, 1)
    net.isolate(3)
    for _ in range(100):
        net.tick()
    assert net.nodes[3].core.term == net.nodes[1].core.term
    net.recover()
    for _ in range(20):
        net.tick()
    assert net.nodes[1].core.role == Role.LEADER


def test_check_quorum_leader_steps_down_without_a_majority() -> None:
    """diss. §6.2: "a leader ... steps down if an election timeout elapses without a
    successful round of heartbeats to a majority of its cluster." """
    net = cluster(3, config=Config())
    elect(net, 1)
    net.isolate(1)
    for _ in range(2 * net.config.election_tick + 1):
        net.tick()
    assert net.nodes[1].core.role == Role.FOLLOWER


def test_leader_lease_followers_ignore_votes_while_leader_is_live() -> None:
    """diss. §4.2.3: "if a server receives a RequestVote request within the minimum
    election timeout of hearing from a current leader, it does not update its term or
    grant its vote." """
    core = new_core(2, config=Config())
    core.step(m(MT.HEARTBEAT, 1, 2, 1))
    drain(core)
    core.step(m(MT.VOTE, 3, 2, 2, log_term=5, index=9))
    assert core.term == 1 and drain(core) == []


def test_leadership_transfer() -> None:
    """diss. §3.10: "the prior leader ... stop[s] accepting new client requests", brings
    the target's log up to date, then "sends it a TimeoutNow request", and "the target
    server ... start[s] a new election" that the lease does not block."""
    net = cluster(3, config=Config())
    elect(net, 1)
    net.crash(3)
    net.propose(1, b"x")
    net.stabilize()
    net.restart(3)
    lead = net.nodes[1].core
    lead.transfer_leadership(3)
    with pytest.raises(ProposalDropped, match="transferred"):
        lead.propose(b"during")
    net.process(net.nodes[1])
    net.stabilize()
    assert net.nodes[3].core.role == Role.LEADER
    assert net.nodes[3].core.term == lead.term and lead.role == Role.FOLLOWER


def test_leadership_transfer_aborts_after_an_election_timeout() -> None:
    """diss. §3.10: "If the transfer does not complete within an election timeout, the
    prior leader aborts the transfer and resumes accepting client requests." """
    net = cluster(3, config=Config())
    elect(net, 1)
    net.crash(3)
    lead = net.nodes[1].core
    lead.transfer_leadership(3)
    with pytest.raises(ProposalDropped):
        lead.propose(b"x")
    for _ in range(net.config.election_tick):
        net.tick()
    assert lead.role == Role.LEADER and lead.lead_transferee == 0
    assert lead.propose(b"x") > 0


def test_crash_loses_only_what_was_never_handed_to_the_driver() -> None:
    """Figure 2: currentTerm, votedFor and log[] are "updated on stable storage before
    responding to RPCs". A restart rebuilds the node from what its Readys persisted."""
    net = cluster(3)
    elect(net, 1)
    net.propose(1, b"durable")
    net.stabilize()
    lead = net.nodes[1]
    lead.core.propose(b"never persisted")  # no Ready processed before the crash
    net.crash(1)
    net.restart(1)
    core = net.nodes[1].core
    assert [e.data for e in core.log.entries] == [b"", b"durable"]
    assert core.term == 1 and core.vote == 1
