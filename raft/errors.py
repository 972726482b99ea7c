"""Errors the Raft core raises to its caller (the driver, and through it the application).

    RaftError
     +-- NotLeader            this node cannot take the request; `leader` is the hint (0: unknown)
     +-- ProposalDropped      a leader that will not take the proposal right now (transfer in
     |                        progress, a membership change still uncommitted, ...); retry later
     +-- ConfChangeInvalid    the membership change makes no sense against the current config
     +-- CompactionError      `compact` asked for an index that is not applied or already compacted
     +-- InvalidMessage       `step` got a message whose fields contradict each other

Every error is raised before the core changes any state, so a caller that catches one can
carry on with the same core.
"""

from __future__ import annotations


class RaftError(Exception):
    """Root of every error the raft package raises."""


class NotLeader(RaftError):
    """Raised by leader-only calls on a follower, candidate or pre-candidate.

    `leader` is the id of the leader this node last heard from in its current term, or 0
    when it knows none; the driver maps it to an address for the client.
    """

    def __init__(self, node_id: int, leader: int) -> None:
        hint = f"try node {leader}" if leader else "no leader known"
        super().__init__(f"node {node_id} is not the leader ({hint})")
        self.node_id = node_id
        self.leader = leader


class ProposalDropped(RaftError):
    """The leader will not take this proposal now; nothing was appended. Retrying later may work."""


class ConfChangeInvalid(RaftError):
    """The membership change cannot apply to the current configuration."""


class CompactionError(RaftError):
    """`compact(index, ...)` with an index not yet applied or already compacted away."""


class InvalidMessage(RaftError):
    """A message from a peer that no correct peer sends (see raft/message_check.py)."""
