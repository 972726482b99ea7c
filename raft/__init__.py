"""Raft consensus: a sans-I/O core, durable storage and an asyncio driver.

The core's public surface (see raft/core.py for the rules it keeps and raft/ready.py for
the driver loop):

    core = RaftCore(node_id, ConfState(voters=frozenset({1, 2, 3})), random.Random(seed),
                    Config(), hard_state=..., snapshot=..., entries=...)
    core.tick(); core.step(message); index = core.propose(data)
    rd = core.ready()   # persist, fsync, send, apply, then:
    core.advance(rd)
"""

from raft.config import Config
from raft.core import RaftCore
from raft.errors import (
    CompactionError,
    ConfChangeInvalid,
    InvalidMessage,
    NotLeader,
    ProposalDropped,
    RaftError,
)
from raft.messages import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    Snapshot,
    SnapshotMeta,
)
from raft.ready import ReadState, Ready, Role, SoftState

__all__ = [
    "CompactionError",
    "ConfChange",
    "ConfChangeInvalid",
    "ConfChangeType",
    "ConfState",
    "Config",
    "Entry",
    "EntryType",
    "HardState",
    "InvalidMessage",
    "Message",
    "MessageType",
    "NotLeader",
    "ProposalDropped",
    "RaftCore",
    "RaftError",
    "ReadState",
    "Ready",
    "Role",
    "Snapshot",
    "SnapshotMeta",
    "SoftState",
]
