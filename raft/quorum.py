"""Majority maths over a configuration: vote tallies and the commit index.

A configuration is a set of voters, or two sets during a joint configuration (dissertation
§4.3), in which case every decision needs a majority of each. This module is pure; the
property tests in tests/raft/test_quorum.py state its laws.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Set


class VoteResult(enum.Enum):
    PENDING = "pending"
    WON = "won"
    LOST = "lost"


def majority(n: int) -> int:
    """Smallest count that is more than half of n (n >= 1); 0 voters need 0."""
    return n // 2 + 1 if n else 0


def committed_index(voters: Set[int], match: Mapping[int, int]) -> int:
    """Largest index that a majority of `voters` holds (missing voters hold 0).

    An empty voter set places no constraint: it returns a value larger than any index so
    that min() over a joint configuration ignores the empty half.
    """
    if not voters:
        return 1 << 63
    acked = sorted((match.get(v, 0) for v in voters), reverse=True)
    return acked[majority(len(voters)) - 1]


def vote_result(voters: Set[int], votes: Mapping[int, bool]) -> VoteResult:
    """WON once a majority granted, LOST once a majority can no longer grant."""
    if not voters:
        return VoteResult.WON
    granted = sum(1 for v in voters if votes.get(v) is True)
    rejected = sum(1 for v in voters if votes.get(v) is False)
    need = majority(len(voters))
    if granted >= need:
        return VoteResult.WON
    if len(voters) - rejected < need:
        return VoteResult.LOST
    return VoteResult.PENDING


def joint_committed_index(incoming: Set[int], outgoing: Set[int], match: Mapping[int, int]) -> int:
    """Joint configuration: the index both halves have committed."""
    return min(committed_index(incoming, match), committed_index(outgoing, match))


def joint_vote_result(
    incoming: Set[int], outgoing: Set[int], votes: Mapping[int, bool]
) -> VoteResult:
    a, b = vote_result(incoming, votes), vote_result(outgoing, votes)
    if a == b:
        return a
    if VoteResult.LOST in (a, b):
        return VoteResult.LOST
    return VoteResult.PENDING


def has_quorum(voters: Set[int], outgoing: Set[int], alive: Set[int]) -> bool:
    """Whether `alive` holds a majority of the (joint) configuration."""
    votes = {v: True for v in alive}
    return joint_vote_result(voters, outgoing, votes) == VoteResult.WON
