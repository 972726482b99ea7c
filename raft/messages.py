"""The values that cross the Raft core's boundary: messages, entries, hard state, snapshots.

Everything here is a frozen dataclass or an enum; the wire codec (raft/codec.py) is the one
place that turns them into bytes. Node ids are positive ints; the driver maps them to
addresses.

Owner: the core. The codec and storage follow these definitions field by field.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field


class MessageType(enum.IntEnum):
    """On the wire: do not renumber."""

    PRE_VOTE = 1
    PRE_VOTE_RESP = 2
    VOTE = 3
    VOTE_RESP = 4
    APPEND = 5
    APPEND_RESP = 6
    HEARTBEAT = 7
    HEARTBEAT_RESP = 8
    SNAPSHOT = 9  # one chunk of InstallSnapshot
    SNAPSHOT_RESP = 10
    TIMEOUT_NOW = 11  # leadership transfer: "campaign now, skipping pre-vote"
    READ_INDEX = 12  # a follower forwards a ReadIndex request to the leader
    READ_INDEX_RESP = 13


class EntryType(enum.IntEnum):
    """On disk and on the wire: do not renumber."""

    NORMAL = 0  # data is the application's command; empty data is the leader's no-op
    CONF_CHANGE = 1  # data is an encoded ConfChange


@dataclass(frozen=True, slots=True)
class Entry:
    term: int
    index: int
    type: EntryType = EntryType.NORMAL
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class HardState:
    """What must be on disk before any message that depends on it is sent."""

    term: int = 0
    vote: int = 0  # 0: voted for nobody in this term
    commit: int = 0


@dataclass(frozen=True, slots=True)
class ConfState:
    voters: frozenset[int] = frozenset()
    learners: frozenset[int] = frozenset()
    voters_outgoing: frozenset[int] = frozenset()  # non-empty only in a joint configuration


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    index: int = 0
    term: int = 0
    conf_state: ConfState = field(default_factory=ConfState)


@dataclass(frozen=True, slots=True)
class Snapshot:
    meta: SnapshotMeta
    data: bytes


@dataclass(frozen=True, slots=True)
class Message:
    type: MessageType
    to: int
    sender: int
    term: int
    log_term: int = 0  # APPEND: term of the entry at `index`; VOTE: candidate's last term
    index: int = 0  # APPEND: index preceding `entries`; VOTE: candidate's last index
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0  # APPEND_RESP on reject: the follower's hint for fast back-off
    hint_term: int = 0  # APPEND_RESP on reject: term of the conflicting entry, 0 if none
    context: bytes = b""  # READ_INDEX: the request's id; VOTE: b"transfer" for TIMEOUT_NOW
    snapshot: SnapshotMeta | None = None  # SNAPSHOT: what the chunks make up
    offset: int = 0  # SNAPSHOT: byte offset of this chunk; SNAPSHOT_RESP: bytes accepted
    data: bytes = b""  # SNAPSHOT: the chunk
    done: bool = False  # SNAPSHOT: the last chunk


class ConfChangeType(enum.IntEnum):
    """On disk and on the wire (inside a CONF_CHANGE entry's data): do not renumber."""

    ADD_VOTER = 0  # add a voter, or promote a learner to voter
    ADD_LEARNER = 1  # add a non-voting learner
    REMOVE_NODE = 2  # remove a voter or a learner (the leader may remove itself)


_CONF_CHANGE = struct.Struct(">BQ")  # on disk: do not change. 1 byte type, 8 bytes node id


@dataclass(frozen=True, slots=True)
class ConfChange:
    """One single-server membership change: the data of an EntryType.CONF_CHANGE entry.

    Encoding (big-endian, 9 bytes): type (u8, ConfChangeType) then node_id (u64).
    Example: ConfChange(ADD_LEARNER, 4) -> 01 00 00 00 00 00 00 00 04.
    """

    type: ConfChangeType
    node_id: int

    def to_bytes(self) -> bytes:
        return _CONF_CHANGE.pack(self.type, self.node_id)

    @classmethod
    def from_bytes(cls, data: bytes) -> ConfChange:
        """Raises ValueError on anything but 9 bytes holding a known type and a node id > 0."""
        if len(data) != _CONF_CHANGE.size:
            raise ValueError(f"conf change must be {_CONF_CHANGE.size} bytes, got {len(data)}")
        kind, node_id = _CONF_CHANGE.unpack(data)
        if node_id <= 0:
            raise ValueError("conf change node id must be positive")
        return cls(ConfChangeType(kind), node_id)

    def apply(self, conf: ConfState) -> ConfState:
        """The configuration after this change (total: every change applies to every config)."""
        n = self.node_id
        if self.type == ConfChangeType.ADD_VOTER:
            return ConfState(conf.voters | {n}, conf.learners - {n}, conf.voters_outgoing)
        if self.type == ConfChangeType.ADD_LEARNER:
            return ConfState(conf.voters - {n}, conf.learners | {n}, conf.voters_outgoing)
        return ConfState(conf.voters - {n}, conf.learners - {n}, conf.voters_outgoing)
