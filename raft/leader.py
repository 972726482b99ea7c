"""RaftCore's leader side: replication, commit, ReadIndex and sending (§5.3-5.4, §7, §8).

A mixin of raft/core.py's RaftCore: it reads and writes the core's state (term, log, prs,
readonly, ...), whose rules are stated there; flow control per follower lives in
raft/progress.py. Kept apart so each file reads as one role.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from raft.messages import Message, MessageType
from raft.progress import Progress, ProgressState
from raft.quorum import has_quorum, joint_committed_index
from raft.ready import ReadState, Role

if TYPE_CHECKING:
    from raft.config import Config
    from raft.log import RaftLog
    from raft.messages import ConfState, Snapshot
    from raft.readonly import ReadOnly

log = logging.getLogger(__name__)
MT = MessageType


class LeaderMixin:
    """The leader's message handlers and senders; see raft/core.py for the rules."""

    # State owned by RaftCore (raft/core.py); declared here for readers and checkers.
    id: int
    term: int
    lead: int
    role: Role
    config: Config
    conf: ConfState
    log: RaftLog
    prs: dict[int, Progress]
    snapshot: Snapshot | None
    readonly: ReadOnly
    pending_reads: list[tuple[bytes, int]]
    read_states: list[ReadState]
    lead_transferee: int

    def _step_leader(self, m: Message) -> None:
        t = m.type
        if t == MT.READ_INDEX:
            if m.context:
                self._leader_read(m.context, m.sender)
            return
        pr = self.prs.get(m.sender)
        if pr is None:
            return
        if t == MT.APPEND_RESP:
            pr.recent_active = True
            self._handle_append_resp(m, pr)
        elif t == MT.HEARTBEAT_RESP:
            pr.recent_active = True
            pr.probe_sent = False
            if pr.state == ProgressState.REPLICATE and pr.inflight:
                # An APPEND may have been lost: free a slot so the next send goes out; if
                # the follower lacks what we sent, it rejects and we fall back to probing.
                pr.inflight.popleft()
            if pr.state == ProgressState.SNAPSHOT:
                self._send_snapshot_chunk(m.sender, pr)
            elif pr.match < self.log.last_index:
                self._send_append(m.sender)
            if m.context:
                self._handle_read_ack(m.sender, m.context)
        elif t == MT.SNAPSHOT_RESP:
            pr.recent_active = True
            if pr.state != ProgressState.SNAPSHOT or m.snapshot != pr.pending_snapshot:
                return
            if (m.reject and m.offset != pr.snapshot_offset) or (
                not m.reject and m.offset > pr.snapshot_offset
            ):
                pr.snapshot_offset = m.offset
                self._send_snapshot_chunk(m.sender, pr)

    def _handle_append_resp(self, m: Message, pr: Progress) -> None:
        if m.reject:
            probe = m.reject_hint
            if m.hint_term > 0:
                probe = self.log.find_conflict_by_term(m.reject_hint, m.hint_term)
            if pr.maybe_decr_to(m.index, probe):
                if pr.state == ProgressState.REPLICATE:
                    pr.become_probe()
                self._send_append(m.sender)
            return
        if m.index > self.log.last_index:
            log.warning("node %d: ack from %d beyond our log (%d)", self.id, m.sender, m.index)
            return  # no correct follower acknowledges what we never had
        old_paused = pr.is_paused(self.config.max_inflight)
        if not pr.maybe_update(m.index):
            if old_paused and not pr.is_paused(self.config.max_inflight):
                self._send_append(m.sender)
            return
        if pr.state == ProgressState.PROBE:
            pr.become_replicate()
        elif (
            pr.state == ProgressState.SNAPSHOT
            and pr.pending_snapshot is not None
            and pr.match >= pr.pending_snapshot.index
        ):
            pr.become_probe()
            pr.become_replicate()
        if self._maybe_commit():
            self._bcast_append()
            if self.role != Role.LEADER:
                return
        elif old_paused:
            self._send_append(m.sender)  # it was waiting on us: tell it the commit index
        while self._send_append(m.sender, send_if_empty=False):
            pass
        if m.sender == self.lead_transferee and pr.match == self.log.last_index:
            self._send(MT.TIMEOUT_NOW, m.sender)

    def _maybe_commit(self) -> bool:
        match = {i: pr.match for i, pr in self.prs.items()}
        index = joint_committed_index(self.conf.voters, self.conf.voters_outgoing, match)
        if index <= self.log.committed or self.log.term(index) != self.term:
            return False
        self.log.commit_to(index)
        if self.pending_reads and self.log.term(self.log.committed) == self.term:
            held, self.pending_reads = self.pending_reads, []
            for context, sender in held:
                self._leader_read(context, sender)
        if self.id not in self.conf.voters and self.log.committed >= self.log.last_conf_index():
            self._step_down_removed()
        return True

    def _step_down_removed(self) -> None:
        """Diss. §4.2.2: a leader not in the committed configuration hands off and steps down."""
        last = self.log.last_index
        caught_up = [
            i for i, pr in self.prs.items() if i in self.conf.voters and pr.match == last
        ]
        self._bcast_append()
        if caught_up:
            self._send(MT.TIMEOUT_NOW, min(caught_up))
        log.info("leader %d is no longer a voter; stepping down", self.id)
        self.become_follower(self.term, 0)

    def _leader_read(self, context: bytes, sender: int) -> None:
        # First, also for a single voter: until an entry of this term commits, the commit
        # index may lag what an earlier leader committed (seed 9079: a leader removed itself
        # and crashed after committing index 30 with the sole remaining voter, which then
        # led with commit 28 and answered a read at 28).
        if self.log.term(self.log.committed) != self.term:
            self.pending_reads.append((context, sender))
            return
        if self.conf.voters == {self.id} and not self.conf.voters_outgoing:
            self._release_read(context, self.log.committed, sender)
            return
        if self.readonly.add_request(self.log.committed, context, sender):
            self.readonly.recv_ack(self.id, context)
            self._bcast_heartbeat(context)

    def _handle_read_ack(self, node: int, context: bytes) -> None:
        acks = self.readonly.recv_ack(node, context)
        if acks is None or not has_quorum(self.conf.voters, self.conf.voters_outgoing, acks):
            return
        for status in self.readonly.advance(context):
            self._release_read(status.context, status.index, status.sender)

    def _release_read(self, context: bytes, index: int, sender: int) -> None:
        if sender == self.id:
            self.read_states.append(ReadState(context, index))
        else:
            self._send(MT.READ_INDEX_RESP, sender, index=index, context=context)

    def _bcast_append(self) -> None:
        if self.role != Role.LEADER:
            return  # e.g. a removed leader that just stepped down
        for i in self.prs:
            if i != self.id:
                self._send_append(i)

    def _bcast_heartbeat(self, context: bytes) -> None:
        for i, pr in self.prs.items():
            if i != self.id:
                commit = min(pr.match, self.log.committed)
                self._send(MT.HEARTBEAT, i, commit=commit, context=context)

    def _send_append(self, to: int, send_if_empty: bool = True) -> bool:
        """Send the next APPEND to `to` unless its progress is paused; True if one went out."""
        pr = self.prs[to]
        if pr.is_paused(self.config.max_inflight):
            return False
        prev = pr.next - 1
        prev_term = self.log.term(prev)
        if prev_term is None:
            if prev < self.log.snap_index:
                self._send_snapshot(to, pr)
                return False
            # next beyond our log (an ack from a previous incarnation): probe from the end
            pr.next = self.log.last_index + 1
            prev, prev_term = self.log.last_index, self.log.last_term
        max_n = self.config.max_entries_per_append
        entries = self.log.slice(pr.next, self.log.last_index + 1, max_n)
        if not entries and not send_if_empty:
            return False
        self._send(
            MT.APPEND,
            to,
            index=prev,
            log_term=prev_term,
            entries=entries,
            commit=self.log.committed,
        )
        pr.sent(entries[-1].index if entries else prev)
        return True

    def _send_snapshot(self, to: int, pr: Progress) -> None:
        snap = self.snapshot
        assert snap is not None, "log compacted without a snapshot"
        if pr.state != ProgressState.SNAPSHOT or pr.pending_snapshot != snap.meta:
            pr.become_snapshot(snap.meta)
        self._send_snapshot_chunk(to, pr)

    def _send_snapshot_chunk(self, to: int, pr: Progress) -> None:
        snap = self.snapshot
        assert snap is not None
        if pr.pending_snapshot != snap.meta:
            pr.become_snapshot(snap.meta)  # compacted again meanwhile: start the new one
        off = pr.snapshot_offset
        chunk = snap.data[off : off + self.config.snapshot_chunk_size]
        self._send(
            MT.SNAPSHOT,
            to,
            snapshot=snap.meta,
            offset=off,
            data=chunk,
            done=off + len(chunk) >= len(snap.data),
        )
