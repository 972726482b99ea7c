"""Single-server membership changes (dissertation §4.1-4.3): what the leader may propose.

This core changes one server at a time (add a voter, add a learner, promote a learner,
remove a member) and never uses joint configurations: any majority of the old and the new
configuration overlap, so a change is safe as soon as it is in a log, provided only one is
uncommitted at a time and the leader has committed an entry of its term first (both
enforced by RaftCore.propose_conf_change). Demoting a voter to learner is refused; remove
it and add it back as a learner instead. Applying a change is ConfChange.apply
(raft/messages.py), which every node does identically when the entry enters its log.
"""

from __future__ import annotations

from raft.errors import ConfChangeInvalid
from raft.messages import ConfChange, ConfChangeType, ConfState


def validate_conf_change(c: ConfState, cc: ConfChange) -> None:
    """Raise ConfChangeInvalid unless `cc` is a sensible single-server change of `c`."""
    if c.voters_outgoing:
        raise ConfChangeInvalid("joint configurations are not used by this core")
    if cc.type == ConfChangeType.ADD_VOTER and cc.node_id in c.voters:
        raise ConfChangeInvalid(f"{cc.node_id} is already a voter")
    if cc.type == ConfChangeType.ADD_LEARNER:
        if cc.node_id in c.voters:
            raise ConfChangeInvalid(f"{cc.node_id} is a voter; demotion is not supported")
        if cc.node_id in c.learners:
            raise ConfChangeInvalid(f"{cc.node_id} is already a learner")
    if cc.type == ConfChangeType.REMOVE_NODE:
        if cc.node_id not in c.voters | c.learners:
            raise ConfChangeInvalid(f"{cc.node_id} is not a member")
        if c.voters == {cc.node_id}:
            raise ConfChangeInvalid("cannot remove the last voter")
