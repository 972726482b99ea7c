"""Majority maths (raft/quorum.py), stated as laws and checked by hypothesis."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from raft.quorum import (
    VoteResult,
    committed_index,
    has_quorum,
    joint_committed_index,
    joint_vote_result,
    majority,
    vote_result,
)

voter_sets = st.frozensets(st.integers(1, 9), min_size=1, max_size=7)
matches = st.dictionaries(st.integers(1, 9), st.integers(0, 50), max_size=9)
votes = st.dictionaries(st.integers(1, 9), st.booleans(), max_size=9)

FAST = settings(max_examples=300, deadline=None)


@FAST
@given(voter_sets, matches)
def test_committed_index_is_the_largest_index_a_majority_holds(voters, match) -> None:
    got = committed_index(voters, match)
    holders = [v for v in voters if match.get(v, 0) >= got]
    assert len(holders) >= majority(len(voters))
    above = [v for v in voters if match.get(v, 0) >= got + 1]
    assert len(above) < majority(len(voters))


@FAST
@given(voter_sets, matches, st.integers(1, 9), st.integers(0, 60))
def test_committed_index_never_decreases_when_a_match_grows(voters, match, node, index) -> None:
    before = committed_index(voters, match)
    grown = dict(match)
    grown[node] = max(grown.get(node, 0), index)
    assert committed_index(voters, grown) >= before


@FAST
@given(voter_sets, st.data())
def test_two_majorities_of_one_config_intersect(voters, data) -> None:
    a = data.draw(st.frozensets(st.sampled_from(sorted(voters))))
    b = data.draw(st.frozensets(st.sampled_from(sorted(voters))))
    if has_quorum(voters, frozenset(), a) and has_quorum(voters, frozenset(), b):
        assert a & b


@FAST
@given(voter_sets, st.integers(1, 12), st.data())
def test_single_server_change_majorities_intersect(voters, extra, data) -> None:
    """Diss. §4.1: adding or removing one server keeps every old and new majority overlapping,
    which is why one change at a time needs no joint consensus."""
    new = voters ^ {extra}
    if not new:
        return
    everyone = sorted(voters | new)
    a = data.draw(st.frozensets(st.sampled_from(everyone)))
    b = data.draw(st.frozensets(st.sampled_from(everyone)))
    if has_quorum(voters, frozenset(), a) and has_quorum(new, frozenset(), b):
        assert a & b


@FAST
@given(voter_sets, votes)
def test_vote_result_matches_counting(voters, vs) -> None:
    granted = sum(1 for v in voters if vs.get(v) is True)
    rejected = sum(1 for v in voters if vs.get(v) is False)
    need = majority(len(voters))
    expected = (
        VoteResult.WON
        if granted >= need
        else VoteResult.LOST
        if len(voters) - rejected < need
        else VoteResult.PENDING
    )
    assert vote_result(voters, vs) == expected


@FAST
@given(voter_sets, voter_sets, matches, votes)
def test_joint_config_needs_both_halves(incoming, outgoing, match, vs) -> None:
    assert joint_committed_index(incoming, outgoing, match) == min(
        committed_index(incoming, match), committed_index(outgoing, match)
    )
    result = joint_vote_result(incoming, outgoing, vs)
    a, b = vote_result(incoming, vs), vote_result(outgoing, vs)
    assert (result == VoteResult.WON) == (a == b == VoteResult.WON)
    assert (result == VoteResult.LOST) == (VoteResult.LOST in (a, b))


def test_majority_table() -> None:
    assert [majority(n) for n in range(0, 8)] == [0, 1, 2, 2, 3, 3, 4, 4]


def test_empty_half_places_no_constraint() -> None:
    assert joint_committed_index(frozenset({1, 2, 3}), frozenset(), {1: 5, 2: 5}) == 5
    assert vote_result(frozenset(), {}) == VoteResult.WON
