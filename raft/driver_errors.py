"""Errors the driver raises to callers of `propose`, `read_index` and `change_membership`.

They extend the core's tree (raft/errors.py):

    RaftError
     +-- NotLeader (core)
     |    +-- NotLeaderError          not the leader; `leader` id and `leader_address` hint
     +-- ProposalOutcomeUnknown       leadership lost while waiting: may have applied
     +-- ProposalLost                 a new leader overwrote it: surely not applied
     +-- ProposalRefused              too many proposals in flight: nothing proposed
     +-- ReadTimeout                  no ReadIndex answer in time: retry
     +-- DriverStopped                the driver is stopping or stopped
     +-- CorruptionError              (raft/storage_format.py) damaged data files

`may_have_applied` says, where it matters, whether a retry could apply a command twice.
"""

from __future__ import annotations

from raft.errors import NotLeader, RaftError


class NotLeaderError(NotLeader):
    """`propose`/`read_index` on a node that is not the leader; says who is, when known.

    A `raft.errors.NotLeader` that also carries `leader_address` (None when unknown).
    """

    def __init__(self, node_id: int, leader: int, leader_address: str | None) -> None:
        super().__init__(node_id, leader)
        self.leader_address = leader_address
        if leader:
            self.args = (f"node {node_id} is not the leader; the leader is node {leader} "
                         f"at {leader_address or 'an unknown address'}",)


class ProposalOutcomeUnknown(RaftError):
    """Leadership was lost before the proposal was applied here: its fate is unknown.

    The command may still be committed by the next leader (`may_have_applied` is True).
    """

    may_have_applied = True


class ProposalLost(RaftError):
    """A new leader overwrote the proposal's entry: it was not applied and will not be."""

    may_have_applied = False


class ProposalRefused(RaftError):
    """Too many proposals in flight on this node; nothing was proposed."""

    may_have_applied = False


class ReadTimeout(RaftError):
    """No ReadIndex answer in time (the request or its answer was lost); retry."""


class DriverStopped(RaftError):
    """The driver is stopping or stopped; nothing more will be applied here."""
