"""The core's contract with the driver (raft/ready.py, raft/core.py docstrings)."""

from __future__ import annotations

import random

import pytest

from raft import (
    CompactionError,
    Config,
    ConfState,
    Entry,
    EntryType,
    HardState,
    MessageType,
    NotLeader,
    RaftCore,
    Role,
    Snapshot,
    SnapshotMeta,
    SoftState,
)

MT = MessageType
VOTERS = ConfState(frozenset({1}))


def single() -> RaftCore:
    return RaftCore(1, VOTERS, random.Random(1), Config())


def test_single_voter_elects_itself_and_commits_only_after_advance() -> None:
    """The leader counts its own entries only once the driver persisted them (advance)."""
    core = single()
    core.campaign()
    rd = core.ready()
    assert rd is not None
    assert rd.soft_state == SoftState(1, Role.LEADER)
    assert rd.hard_state == HardState(1, 1, 0)
    assert [e.index for e in rd.entries] == [1] and rd.committed_entries == ()
    assert core.committed == 0
    core.advance(rd)
    assert core.committed == 1
    rd = core.ready()
    assert rd is not None and [e.index for e in rd.committed_entries] == [1]
    assert rd.hard_state == HardState(1, 1, 1)
    core.advance(rd)
    assert core.ready() is None and core.applied == 1


def test_one_ready_at_a_time_and_input_between_goes_to_the_next() -> None:
    core = single()
    core.campaign()
    rd = core.ready()
    assert rd is not None
    core.propose(b"x")  # allowed between ready() and advance()
    assert core.ready() is None  # outstanding
    core.advance(rd)
    nxt = core.ready()
    assert nxt is not None and [e.data for e in nxt.entries] == [b"x"]
    assert nxt.truncate_from == 2


def test_first_ready_reports_the_configuration() -> None:
    core = RaftCore(2, ConfState(frozenset({1, 2, 3})), random.Random(1))
    rd = core.ready()
    assert rd is not None and rd.conf_state == ConfState(frozenset({1, 2, 3}))
    core.advance(rd)
    assert core.ready() is None


def test_restart_replays_committed_entries_after_the_snapshot() -> None:
    """A restarted node is built from disk: the snapshot, then entries, then hard state;
    committed entries after the snapshot come back in the first Ready to re-apply."""
    meta = SnapshotMeta(2, 1, ConfState(frozenset({1, 2, 3})))
    entries = [Entry(1, 3, EntryType.NORMAL, b"c"), Entry(2, 4, EntryType.NORMAL, b"d")]
    core = RaftCore(
        1,
        ConfState(frozenset({9})),  # ignored: the snapshot's configuration wins
        random.Random(1),
        hard_state=HardState(2, 3, 3),
        snapshot=Snapshot(meta, b"state"),
        entries=entries,
    )
    assert core.conf.voters == {1, 2, 3}
    assert (core.term, core.vote, core.committed, core.applied) == (2, 3, 3, 2)
    rd = core.ready()
    assert rd is not None
    assert rd.entries == () and rd.hard_state is None and rd.snapshot is None
    assert [e.index for e in rd.committed_entries] == [3]


def test_errors_carry_what_the_caller_needs() -> None:
    core = RaftCore(2, ConfState(frozenset({1, 2, 3})), random.Random(1))
    with pytest.raises(NotLeader) as info:
        core.propose(b"x")
    assert info.value.leader == 0 and info.value.node_id == 2
    with pytest.raises(NotLeader):
        core.read_index(b"ctx")  # no leader to forward to
    with pytest.raises(NotLeader):
        core.transfer_leadership(1)
    with pytest.raises(NotLeader):
        core.match_index()
    with pytest.raises(CompactionError):
        core.compact(1, b"")
    with pytest.raises(ValueError):
        core.read_index(b"")
    leader = single()
    leader.campaign()
    with pytest.raises(ValueError, match="no-op"):
        leader.propose(b"")


def test_messages_to_someone_else_are_dropped() -> None:
    from raft import Message

    core = RaftCore(2, ConfState(frozenset({1, 2, 3})), random.Random(1))
    core.step(Message(MT.HEARTBEAT, to=3, sender=1, term=5))
    assert core.term == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"heartbeat_tick": 0},
        {"election_tick": 1, "heartbeat_tick": 1},
        {"max_inflight": 0},
        {"max_entries_per_append": 0},
        {"snapshot_chunk_size": 0},
    ],
)
def test_config_rejects_nonsense(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        Config(**kwargs)


def test_node_ids_are_positive() -> None:
    with pytest.raises(ValueError):
        RaftCore(0, VOTERS, random.Random(1))


def test_propose_batch_appends_in_order_with_one_append_per_follower() -> None:
    core = RaftCore(1, ConfState(frozenset({1, 2, 3})), random.Random(1), Config())
    core.campaign()
    rd = core.ready()
    assert rd is not None
    core.advance(rd)
    from raft import Message

    for v in (2, 3):
        core.step(Message(MT.PRE_VOTE_RESP, to=1, sender=v, term=1))
    for v in (2, 3):
        core.step(Message(MT.VOTE_RESP, to=1, sender=v, term=1))
    for v in (2, 3):
        core.step(Message(MT.APPEND_RESP, to=1, sender=v, term=1, index=1))
    rd = core.ready()
    assert rd is not None
    core.advance(rd)
    first = core.propose_batch([b"a", b"b", b"c"])
    rd = core.ready()
    assert rd is not None
    assert first == 2 and [e.data for e in rd.entries] == [b"a", b"b", b"c"]
    appends = [m for m in rd.messages if m.type == MT.APPEND and m.entries]
    assert sorted(m.to for m in appends) == [2, 3]
    assert all(len(m.entries) == 3 for m in appends)
    with pytest.raises(ValueError):
        core.propose_batch([b"x", b""])
    assert core.log.last_index == 4


def test_entries_replaced_while_a_ready_is_outstanding_are_handed_out_again() -> None:
    """Input may arrive between ready() and advance(): if it replaces entries that the
    outstanding Ready carries, advance() must not mark the replacements durable."""
    from raft import Message

    core = RaftCore(2, ConfState(frozenset({1, 2, 3})), random.Random(1), Config())
    first = (Entry(1, 1, EntryType.NORMAL, b"a"), Entry(1, 2, EntryType.NORMAL, b"b"))
    core.step(Message(MT.APPEND, to=2, sender=1, term=1, index=0, log_term=0, entries=first))
    rd1 = core.ready()
    assert rd1 is not None and rd1.entries == first
    newer = (Entry(2, 2, EntryType.NORMAL, b"B"),)
    core.step(Message(MT.APPEND, to=2, sender=3, term=2, index=1, log_term=1, entries=newer))
    core.advance(rd1)
    rd2 = core.ready()
    assert rd2 is not None
    assert rd2.entries == newer and rd2.truncate_from == 2
    # and the acknowledgement for the newer entry travels with the Ready that persists it
    assert [(m.to, m.index) for m in rd2.messages if m.type == MT.APPEND_RESP] == [(3, 2)]


def _answers(core: RaftCore) -> list[tuple[int, bool]]:
    rd = core.ready()
    assert rd is not None
    core.advance(rd)
    return [(m.to, m.reject) for m in rd.messages if m.type == MT.PRE_VOTE_RESP]


@pytest.mark.parametrize(("sender", "log_term", "index", "reject"), [
    (1, 0, 0, True),  # a lower id with the same log: we go on, it waits (no split vote)
    (3, 0, 0, False),  # a higher id with the same log goes on
    (1, 1, 1, False),  # a lower id with a more up-to-date log: only it can win, grant it
])
def test_simultaneous_pre_candidates_break_the_tie_by_id(
        sender: int, log_term: int, index: int, reject: bool) -> None:
    """Diss. §9.6 pre-vote, plus our tie-break: two followers that time out together both
    won their pre-votes and then split the real vote (another election timeout)."""
    from raft import Message

    core = RaftCore(2, ConfState(frozenset({1, 2, 3})), random.Random(1), Config())
    core.campaign()
    assert core.soft_state.role is Role.PRE_CANDIDATE
    _answers(core)
    core.step(Message(MT.PRE_VOTE, to=2, sender=sender, term=1, log_term=log_term,
                      index=index))
    assert _answers(core) == [(sender, reject)]
    assert core.term == 0 and core.hard_state.vote == 0  # a pre-vote changes nothing


def test_a_single_voter_leader_holds_reads_until_its_term_commits() -> None:
    """Diss. §6.4: a new leader's commit index may lag what an earlier leader committed
    until an entry of its own term commits; a sole voter is no exception (seed 9079 of the
    simulation: a leader removed itself, committed with the last voter and crashed; that
    voter then led with an older commit index and answered a read below it)."""
    core = single()
    core.campaign()
    core.read_index(b"r")  # leader of term 1, nothing of term 1 committed yet
    rd = core.ready()
    assert rd is not None and rd.read_states == ()
    core.advance(rd)
    rd = core.ready()
    assert rd is not None
    assert [(s.context, s.index) for s in rd.read_states] == [(b"r", 1)]
