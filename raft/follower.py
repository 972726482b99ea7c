"""RaftCore's follower side: AppendEntries, heartbeats and InstallSnapshot chunks (§5.3, §7).

A mixin of raft/core.py's RaftCore: it reads and writes the core's state (term, lead, log,
...), whose rules are stated there. Kept apart so each file reads as one role.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from raft.messages import Message, MessageType, Snapshot
from raft.ready import ReadState
from raft.snapshot_assembler import SnapshotAssembler

if TYPE_CHECKING:
    from raft.log import RaftLog

log = logging.getLogger(__name__)
MT = MessageType


class FollowerMixin:
    """The follower's message handlers; see the theory of operation in raft/core.py."""

    # State owned by RaftCore (raft/core.py); declared here for readers and checkers.
    id: int
    term: int
    lead: int
    election_elapsed: int
    log: RaftLog
    snapshot: Snapshot | None
    pending_snapshot: Snapshot | None
    assembler: SnapshotAssembler | None
    read_states: list[ReadState]

    def _step_follower(self, m: Message) -> None:
        t = m.type
        if t == MT.APPEND:
            self.election_elapsed = 0
            self.lead = m.sender
            self._handle_append(m)
        elif t == MT.HEARTBEAT:
            self.election_elapsed = 0
            self.lead = m.sender
            self.log.commit_to(min(m.commit, self.log.last_index))
            self._send(MT.HEARTBEAT_RESP, m.sender, context=m.context)
        elif t == MT.SNAPSHOT:
            self.election_elapsed = 0
            self.lead = m.sender
            self._handle_snapshot(m)
        elif t == MT.TIMEOUT_NOW:
            self._campaign(pre_vote=False, transfer=True)
        elif t == MT.READ_INDEX_RESP:
            self.read_states.append(ReadState(m.context, m.index))

    def _handle_append(self, m: Message) -> None:
        if m.index < self.log.committed:
            self._send(MT.APPEND_RESP, m.sender, index=self.log.committed)
            return
        last_new = self.log.maybe_append(m.index, m.log_term, m.entries)
        if last_new is not None:
            self._sync_conf()
            self.log.commit_to(min(m.commit, last_new))
            self._send(MT.APPEND_RESP, m.sender, index=last_new)
            return
        hint = self.log.find_conflict_by_term(min(m.index, self.log.last_index), m.log_term)
        self._send(
            MT.APPEND_RESP,
            m.sender,
            index=m.index,
            reject=True,
            reject_hint=hint,
            hint_term=self.log.term(hint) or 0,
        )

    def _handle_snapshot(self, m: Message) -> None:
        meta = m.snapshot
        if meta is None:
            return
        if meta.index <= self.log.committed:
            self.assembler = None
            self._send(MT.APPEND_RESP, m.sender, index=self.log.committed)
            return
        a = self.assembler
        if a is None or not a.matches(m.sender, m.term, meta):
            if m.offset != 0:
                self._send(MT.SNAPSHOT_RESP, m.sender, snapshot=meta, offset=0, reject=True)
                return
            a = self.assembler = SnapshotAssembler(m.sender, m.term, meta)
        if not a.accept(m.offset, m.data):
            self._send(
                MT.SNAPSHOT_RESP, m.sender, snapshot=meta, offset=len(a.buffer), reject=True
            )
            return
        if not m.done:
            self._send(MT.SNAPSHOT_RESP, m.sender, snapshot=meta, offset=len(a.buffer))
            return
        self.assembler = None
        self._restore(Snapshot(meta, bytes(a.buffer)))
        self._send(MT.APPEND_RESP, m.sender, index=self.log.last_index)

    def _restore(self, snap: Snapshot) -> None:
        """Install a leader's snapshot (§7). Requires: snap.meta.index > committed."""
        meta = snap.meta
        if self.log.match_term(meta.index, meta.term):
            self.log.commit_to(meta.index)  # we hold that entry: just fast-forward
            return
        self.log.restore(meta)
        self.snapshot = snap
        self.pending_snapshot = snap
        self._sync_conf()
