"""RaftLog (raft/log.py): its operations keep `check_deep()` true, checked by hypothesis."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from raft.log import RaftLog
from raft.messages import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    SnapshotMeta,
)

FAST = settings(max_examples=200, deadline=None)
BOOT = ConfState(frozenset({1, 2, 3}))

# A log is described by the term of each entry: non-decreasing terms from 1.
term_runs = st.lists(st.integers(0, 2), max_size=25).map(
    lambda steps: [1 + sum(steps[: i + 1]) for i in range(len(steps))]
)


def make(terms: list[int], snap_index: int = 0) -> RaftLog:
    snap_term = terms[snap_index - 1] if snap_index else 0
    entries = [Entry(t, i + 1, EntryType.NORMAL, b"%d" % (i + 1)) for i, t in enumerate(terms)]
    return RaftLog(SnapshotMeta(snap_index, snap_term, BOOT), entries[snap_index:])


@FAST
@given(term_runs, term_runs, st.data())
def test_maybe_append_makes_follower_match_leader_up_to_the_message(leader, follower, data):
    """§5.3: after a successful AppendEntries, the follower's log equals the leader's
    through the last entry of the message; what lies before prev is untouched."""
    lg = make(follower)
    prev = data.draw(st.integers(0, len(leader)))
    n = data.draw(st.integers(0, len(leader) - prev))
    prev_term = leader[prev - 1] if prev else 0
    sent = [
        Entry(t, prev + 1 + k, EntryType.NORMAL, b"L")
        for k, t in enumerate(leader[prev : prev + n])
    ]
    before = list(lg.entries)
    result = lg.maybe_append(prev, prev_term, sent)
    lg.check_deep()
    if result is None:
        assert lg.term(prev) != prev_term and lg.entries == before
        return
    assert result == prev + n
    for e in sent:
        assert lg.term(e.index) == e.term
    assert lg.entries[:prev] == before[:prev]


@FAST
@given(term_runs, st.integers(0, 30), st.integers(0, 6))
def test_find_conflict_by_term(terms, index, term) -> None:
    lg = make(terms)
    j = lg.find_conflict_by_term(index, term)
    assert 0 <= j <= min(index, lg.last_index)
    assert j == 0 or (lg.term(j) or 0) <= term
    for k in range(j + 1, min(index, lg.last_index) + 1):
        assert (lg.term(k) or 0) > term


@FAST
@given(term_runs, st.integers(0, 8), st.integers(0, 30))
def test_is_up_to_date_is_lexicographic(terms, last_term, last_index) -> None:
    lg = make(terms)
    assert lg.is_up_to_date(last_term, last_index) == (
        (last_term, last_index) >= (lg.last_term, lg.last_index)
    )


@FAST
@given(term_runs.filter(lambda t: len(t) >= 2), st.data())
def test_compact_keeps_terms_and_indexes(terms, data) -> None:
    lg = make(terms)
    applied = data.draw(st.integers(1, len(terms)))
    lg.commit_to(applied)
    lg.applied_to(applied)
    index = data.draw(st.integers(1, applied))
    meta = lg.compact(index, lg.conf_state_at(index))
    lg.check_deep()
    assert (meta.index, meta.term) == (index, terms[index - 1])
    assert lg.first_index == index + 1 and lg.last_index == len(terms)
    for i in range(index, len(terms) + 1):
        assert lg.term(i) == terms[i - 1]
    assert lg.term(index - 1) is None


def test_truncation_reverts_configuration() -> None:
    """Diss. §4.1: a server uses the latest configuration in its log, so deleting an
    uncommitted conf entry reverts to the one before it."""
    lg = make([1, 1])
    cc = ConfChange(ConfChangeType.ADD_LEARNER, 4).to_bytes()
    lg.append([Entry(1, 3, EntryType.CONF_CHANGE, cc)])
    assert lg.conf_state_at(lg.last_index).learners == {4}
    assert lg.maybe_append(2, 1, [Entry(2, 3, EntryType.NORMAL, b"x")]) == 3
    assert lg.conf_state_at(lg.last_index) == BOOT
    lg.check_deep()


def test_stable_cursor_follows_truncation() -> None:
    lg = make([1, 1, 1])
    assert lg.stable == 3
    lg.maybe_append(1, 1, [Entry(2, 2, EntryType.NORMAL, b"y")])
    assert lg.stable == 1 and [e.index for e in lg.unstable_entries()] == [2]
    lg.stable_to(2, 1)  # a stale acknowledgement for the old entry changes nothing
    assert lg.stable == 1
    lg.stable_to(2, 2)
    assert lg.stable == 2


@pytest.mark.parametrize(
    "data",
    [b"", b"\x00" * 8, b"\x00" * 10, b"\x07" + b"\x00" * 7 + b"\x01", b"\x00" * 9],
)
def test_conf_change_rejects_hostile_bytes(data: bytes) -> None:
    with pytest.raises(ValueError):
        ConfChange.from_bytes(data)


@FAST
@given(st.sampled_from(list(ConfChangeType)), st.integers(1, 2**64 - 1))
def test_conf_change_round_trip(kind, node_id) -> None:
    cc = ConfChange(kind, node_id)
    assert ConfChange.from_bytes(cc.to_bytes()) == cc
    assert len(cc.to_bytes()) == 9


def test_conf_change_worked_example() -> None:
    assert ConfChange(ConfChangeType.ADD_LEARNER, 4).to_bytes().hex() == "010000000000000004"


class RaftLogMachine(RuleBasedStateMachine):
    """STYLE §7: random operations, then the O(n) invariant check after every one."""

    def __init__(self) -> None:
        super().__init__()
        self.log = make([])
        self.term = 1

    @rule(n=st.integers(1, 4))
    def leader_appends(self, n: int) -> None:
        start = self.log.last_index + 1
        self.log.append([Entry(self.term, start + k, EntryType.NORMAL, b"x") for k in range(n)])

    @rule()
    def new_term(self) -> None:
        self.term += 1

    @rule(data=st.data())
    def follower_append_from_a_newer_leader(self, data: st.DataObject) -> None:
        lo = max(self.log.committed, self.log.snap_index)
        prev = data.draw(st.integers(lo, self.log.last_index))
        prev_term = self.log.term(prev)
        assert prev_term is not None
        self.term += 1
        n = data.draw(st.integers(0, 3))
        sent = [Entry(self.term, prev + 1 + k, EntryType.NORMAL, b"y") for k in range(n)]
        assert self.log.maybe_append(prev, prev_term, sent) == prev + n

    @rule(data=st.data())
    def commit_and_apply(self, data: st.DataObject) -> None:
        index = data.draw(st.integers(self.log.committed, self.log.last_index))
        self.log.commit_to(index)
        self.log.applied_to(data.draw(st.integers(self.log.applied, self.log.committed)))

    @rule(data=st.data())
    def compact(self, data: st.DataObject) -> None:
        if self.log.applied > self.log.snap_index:
            index = data.draw(st.integers(self.log.snap_index + 1, self.log.applied))
            self.log.compact(index, self.log.conf_state_at(index))

    @rule()
    def persist(self) -> None:
        self.log.stable_to(self.log.last_index, self.log.last_term)

    @invariant()
    def holds(self) -> None:
        self.log.check_deep()


RaftLogMachine.TestCase.settings = settings(max_examples=60, deadline=None)
test_raft_log_stateful = RaftLogMachine.TestCase
