"""Raft consensus: a sans-I/O core, durable storage and an asyncio driver.

The core's public surface (see raft/core.py for the rules it keeps and raft/ready.py for
the driver loop):

    core = RaftCore(node_id, ConfState(voters=frozenset({1, 2, 3})), random.Random(seed),
                    Config(), hard_state=..., snapshot=..., entries=...)
    core.tick(); core.step(message); index = core.propose(data)
    rd = core.ready()   # persist, fsync, send, apply, then:
    core.advance(rd)

The core, one thing per file (none does I/O; tests/raft/test_core_imports.py checks it):
    core.py              RaftCore: roles, elections, ticks, the Ready/advance cycle
    leader.py            replication, commit, ReadIndex, snapshot sending (mixin)
    follower.py          AppendEntries, heartbeats, snapshot chunks (mixin)
    log.py               RaftLog: snapshot + entries, committed/applied/stable cursors
    progress.py          per-follower flow control (probe, replicate, snapshot)
    quorum.py            majority and joint-majority maths
    readonly.py          the ReadIndex queue
    snapshot_assembler.py  reassembly of InstallSnapshot chunks
    confchange.py        single-server membership changes (no joint consensus)
    message_check.py     refusal of self-contradictory messages
    ready.py, config.py, errors.py, messages.py  the values crossing the boundary

The I/O side (imported lazily, so that using the core never loads asyncio or aiohttp):
    driver.py            Driver: persist, send, apply, reads, snapshots (asyncio)
    storage.py           RaftStorage: hard state, log segments and snapshots on disk
    transport.py         HttpTransport: pooled aiohttp connections, batched per peer
    statemachine.py      the StateMachine protocol: apply, snapshot, restore
    driver_errors.py     what propose/read_index raise (NotLeaderError, ...)

Membership: one server at a time (add voter, add learner, promote learner, remove), in
force as soon as it is in a log (dissertation §4.1); see raft/confchange.py.
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

_LAZY = {
    "Driver": "raft.driver",
    "RaftStorage": "raft.storage",
    "HttpTransport": "raft.transport",
    "Transport": "raft.transport",
    "StateMachine": "raft.statemachine",
    "CorruptionError": "raft.storage_format",
    "NotLeaderError": "raft.driver_errors",
    "ProposalOutcomeUnknown": "raft.driver_errors",
    "ProposalLost": "raft.driver_errors",
    "ProposalRefused": "raft.driver_errors",
    "ReadTimeout": "raft.driver_errors",
    "DriverStopped": "raft.driver_errors",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'raft' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)

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
    *_LAZY,
]
