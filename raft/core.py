"""The sans-I/O Raft state machine: ticks, proposals and messages in; one Ready out.

Theory of operation (the rules this file keeps; sections are the Raft paper's, "diss." is
Ongaro's dissertation).

- Terms (§5.1). A message with a higher term makes us a follower of that term, except
  votes and pre-votes arriving inside a leader lease (below), pre-votes (which never move
  a term) and granted pre-vote responses. Lower-term messages are dropped; an APPEND or
  HEARTBEAT from a stale leader is answered with our term so that it steps down (with
  pre-vote and check-quorum terms do not rise otherwise).
- Elections (§5.2, diss. §9.6). A follower that hears no leader for a randomized timeout in
  [election_tick, 2*election_tick) first runs a pre-vote at term+1 without changing its
  term; only a pre-vote majority makes it a candidate. One vote per term, persisted (the
  Ready carries the hard state, which the driver makes durable before sending our vote).
  A vote is granted only to a candidate whose log is at least as up-to-date (§5.4.1).
  Only a leader's message or a granted vote restarts the election timer (Figure 2), so
  doomed candidates cannot keep an up-to-date node from campaigning.
  Two followers whose timers fire together would both win their pre-votes and split the
  real vote, costing another election timeout. So a pre-candidate refuses the pre-vote of
  a lower id whose log equals its own (the higher id goes on and gets its vote); it grants
  a lower id with a more up-to-date log, so the tie-break never blocks the only node that
  can win. Pre-votes change no state: this affects liveness only, never safety.
- Leader lease (diss. §6.2, §4.2.3). With check_quorum, a node that heard from a leader
  less than election_tick ago ignores votes and pre-votes (except a leadership transfer's),
  and a leader that has not heard from a majority for election_tick ticks steps down.
- Replication (§5.3). Consistency check on (index, log_term); a rejection carries a hint
  (index, term) so the leader skips a whole conflicting term. Appends are batched
  (max_entries_per_append) and pipelined (max_inflight); see raft/progress.py.
- Commit (§5.4.2). The leader commits an index once a majority of voters holds it AND the
  entry there is of its current term; it appends an empty entry on election so that this
  happens promptly. The leader counts itself only up to what the driver has persisted.
- Durability. Our own entries count as ours only once the driver has called advance()
  on the Ready that carried them (log.stable); everything in a Ready is durable before its
  messages leave, so an acknowledgement or a vote is never lost by a crash. Input may
  arrive between ready() and advance(); it lands in the next Ready.
- Hostile input. step() refuses a self-contradictory message (raft/message_check.py)
  before changing anything.
- Membership (diss. §4.1-4.2.2): single-server changes. Each change adds or removes one
  voter, adds or removes a learner, or promotes a learner. A server uses the latest
  configuration in its log, committed or not (truncation reverts it). The leader proposes
  a change only when the previous one is committed and it has committed an entry in its
  own term (the fix for the single-server bug, diss. §4.1 errata). A leader that removes
  itself keeps leading until the change commits, then hands off with TIMEOUT_NOW to its
  most up-to-date voter and steps down. A node that the latest (uncommitted) change
  removes may still campaign while the committed configuration has it as a voter: it may
  be the only one holding that change. Learners get the log but never vote or count.
- ReadIndex (diss. §6.4): see raft/readonly.py. A leader that has not yet committed an
  entry in its term holds reads until it has.
- Leadership transfer (diss. §3.10): the leader stops taking proposals, catches the
  target up, sends TIMEOUT_NOW; the target campaigns at once, skipping pre-vote and the
  lease. The transfer is abandoned after election_tick ticks.
- Snapshots (§7): `compact` folds the applied prefix into a snapshot the application
  made. A follower that needs compacted entries gets InstallSnapshot in chunks of
  snapshot_chunk_size, stop-and-wait by byte offset (raft/snapshot_assembler.py); once it
  restores, it acknowledges the snapshot index and appends resume from there.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence

from raft.confchange import validate_conf_change
from raft.config import Config
from raft.errors import CompactionError, NotLeader, ProposalDropped
from raft.follower import FollowerMixin
from raft.leader import LeaderMixin
from raft.log import RaftLog
from raft.message_check import check_message
from raft.messages import (
    ConfChange,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    Snapshot,
    SnapshotMeta,
)
from raft.progress import Progress
from raft.quorum import VoteResult, has_quorum, joint_vote_result
from raft.readonly import ReadOnly
from raft.ready import ReadState, Ready, Role, SoftState
from raft.snapshot_assembler import SnapshotAssembler

log = logging.getLogger(__name__)

MT = MessageType
CAMPAIGN_TRANSFER = b"transfer"  # VOTE context: a leadership transfer, bypasses the lease


class RaftCore(LeaderMixin, FollowerMixin):
    """One Raft member. Not thread-safe: the driver calls it from one task.

    Requires: node_id > 0; conf_state names the bootstrap configuration (ignored when a
    snapshot is given: its conf_state wins); entries are the durable log after the snapshot.
    """

    def __init__(
        self,
        node_id: int,
        conf_state: ConfState,
        rng: random.Random,
        config: Config | None = None,
        *,
        hard_state: HardState | None = None,
        snapshot: Snapshot | None = None,
        entries: Sequence[Entry] = (),
    ) -> None:
        if node_id <= 0:
            raise ValueError("node ids are positive")
        self.id = node_id
        self.config = config or Config()
        self.rng = rng
        hs = hard_state or HardState()
        meta = snapshot.meta if snapshot is not None else SnapshotMeta(0, 0, conf_state)
        self.snapshot: Snapshot | None = snapshot  # the newest snapshot, sent to laggards
        self.log = RaftLog(meta, entries, hs.commit)
        self.term = hs.term
        self.vote = hs.vote
        self.lead = 0
        self.role = Role.FOLLOWER
        self.prs: dict[int, Progress] = {}
        self.conf = ConfState()
        self._conf_version = -1
        self.votes: dict[int, bool] = {}
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = self.config.election_tick
        self.lead_transferee = 0
        self.pending_conf_index = 0
        self.readonly = ReadOnly()
        self.pending_reads: list[tuple[bytes, int]] = []  # held until a commit in our term
        self.assembler: SnapshotAssembler | None = None
        self.msgs: list[Message] = []
        self.read_states: list[ReadState] = []
        self.pending_snapshot: Snapshot | None = None  # received, to hand to the driver
        self._prev_hard_state = hs
        self._prev_soft_state = SoftState(0, Role.FOLLOWER)
        self._prev_conf_state: ConfState | None = None
        self._outstanding = False
        self._sync_conf()
        self.become_follower(self.term, 0)

    # ---------------------------------------------------------------- public surface
    @property
    def committed(self) -> int:
        return self.log.committed

    @property
    def applied(self) -> int:
        return self.log.applied

    @property
    def hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed)

    @property
    def soft_state(self) -> SoftState:
        return SoftState(self.lead, self.role)

    @property
    def promotable(self) -> bool:
        """Whether this node may campaign: a voter in its latest configuration, or in the
        committed one while a change that removes it is still uncommitted (a leader that
        removed itself and lost leadership before the change committed may be the only
        node holding that change: it must be able to win again and finish it)."""
        if self.id in self.conf.voters:
            return True
        log = self.log
        return log.last_conf_index() > log.committed and self.id in (
            log.conf_state_at(log.committed).voters
        )

    def tick(self) -> None:
        """One unit of logical time; the driver calls it every tick interval."""
        if self.role == Role.LEADER:
            self._tick_heartbeat()
        else:
            self._tick_election()

    def campaign(self) -> None:
        """Start an election now (with pre-vote when configured), as if the timeout fired."""
        if self.role != Role.LEADER:
            self._campaign(self.config.pre_vote, transfer=False)

    def propose(self, data: bytes) -> int:
        """Append a command; returns its index. The entry's term is `self.term` now.

        The command is committed when a Ready's committed_entries holds an entry with this
        index and this term; another term at that index means it was lost (retry).
        Raises NotLeader (with the leader hint) off the leader, ProposalDropped during a
        leadership transfer, ValueError for empty data (the leader's no-op is empty).
        """
        if not data:
            raise ValueError("empty data is reserved for the leader's no-op entry")
        self._check_can_propose()
        return self._append_entry(EntryType.NORMAL, data)

    def propose_batch(self, commands: Sequence[bytes]) -> int:
        """Append several commands at once (one APPEND per follower instead of one each);
        returns the index of the first, the others follow in order. Same errors as propose,
        raised before anything is appended."""
        if not commands or not all(commands):
            raise ValueError("a batch needs commands, none empty (empty data is the no-op)")
        self._check_can_propose()
        first = self.log.last_index + 1
        self.log.append(
            tuple(Entry(self.term, first + k, EntryType.NORMAL, c) for k, c in enumerate(commands))
        )
        self._bcast_append()
        return first

    def propose_conf_change(self, change: ConfChange) -> int:
        """Propose one single-server membership change; returns the entry's index.

        Raises NotLeader, ProposalDropped (a change still uncommitted, or no entry of this
        term committed yet: retry shortly) or ConfChangeInvalid (nonsense for this config:
        adding a present voter, demoting a voter, removing an absent node or the last voter).
        """
        self._check_can_propose()
        if self.pending_conf_index > self.log.committed:
            raise ProposalDropped("a membership change is still uncommitted")
        if self.log.term(self.log.committed) != self.term:
            raise ProposalDropped("the leader has not committed an entry in its term yet")
        validate_conf_change(self.conf, change)
        index = self._append_entry(EntryType.CONF_CHANGE, change.to_bytes())
        self.pending_conf_index = index
        return index

    def read_index(self, context: bytes) -> None:
        """Ask for a linearizable read; a ReadState(context, index) appears in a later Ready.

        Requires: a non-empty context unique among pending reads. On a follower the request
        is forwarded to the leader; with no leader known it raises NotLeader. A request
        may be lost (messages are); the caller retries with a timeout.
        """
        if not context:
            raise ValueError("read_index needs a non-empty context")
        if self.role == Role.LEADER:
            self._leader_read(context, self.id)
        elif self.lead:
            self._send(MT.READ_INDEX, self.lead, context=context)
        else:
            raise NotLeader(self.id, 0)

    def transfer_leadership(self, to: int) -> None:
        """Hand leadership to voter `to` (diss. §3.10).

        Proposals raise ProposalDropped until the transfer ends: `to` wins an election,
        or election_tick ticks pass and the transfer is abandoned. Raises NotLeader off
        the leader and ProposalDropped when `to` is not a voter. Transferring to self,
        or again to the same target, does nothing.
        """
        if self.role != Role.LEADER:
            raise NotLeader(self.id, self.lead)
        if to == self.id or to == self.lead_transferee:
            return
        if to not in self.conf.voters:
            raise ProposalDropped(f"cannot transfer leadership to {to}: not a voter")
        self.lead_transferee = to
        self.election_elapsed = 0
        if self.prs[to].match == self.log.last_index:
            self._send(MT.TIMEOUT_NOW, to)
        else:
            self._send_append(to)

    def compact(self, index: int, data: bytes) -> Snapshot:
        """The application snapshotted its state at applied index `index`: drop the log up to it.

        Returns the Snapshot (with the term and the configuration at that index) that the
        driver must persist before it deletes stored entries <= index. Raises
        CompactionError when index is not applied yet or is already compacted.
        """
        if index <= self.log.snap_index or index > self.log.applied:
            raise CompactionError(
                f"cannot compact to {index}: snapshot at {self.log.snap_index}, "
                f"applied {self.log.applied}"
            )
        meta = self.log.compact(index, self.log.conf_state_at(index))
        self.snapshot = Snapshot(meta, data)
        return self.snapshot

    def match_index(self) -> dict[int, int]:
        """Leader only: each member's match index (to decide when a learner is caught up)."""
        if self.role != Role.LEADER:
            raise NotLeader(self.id, self.lead)
        return {i: pr.match for i, pr in self.prs.items()}

    def has_ready(self) -> bool:
        """Whether ready() would return a Ready. O(1)."""
        if self._outstanding:
            return False
        if self.msgs or self.read_states or self.pending_snapshot is not None:
            return True
        log, hs, soft = self.log, self._prev_hard_state, self._prev_soft_state
        return (
            log.stable < log.last_index
            or log.applied < log.committed
            or self.term != hs.term
            or self.vote != hs.vote
            or log.committed != hs.commit
            or self.lead != soft.leader
            or self.role != soft.role
            or self.conf is not self._prev_conf_state  # replaced only when it changes
        )

    def ready(self) -> Ready | None:
        """What the driver must do next (see Ready), or None when there is nothing to do
        or a Ready is still outstanding: call advance(ready) before asking again."""
        if not self.has_ready():
            return None
        hs = self.hard_state
        soft = self.soft_state
        lo = self.log.applied + 1
        if self.pending_snapshot is not None:
            lo = max(lo, self.pending_snapshot.meta.index + 1)
        committed = self.log.slice(lo, self.log.committed + 1) if lo <= self.log.committed else ()
        rd = Ready(
            hard_state=hs if hs != self._prev_hard_state else None,
            snapshot=self.pending_snapshot,
            entries=self.log.unstable_entries(),
            messages=tuple(self.msgs),
            committed_entries=committed,
            read_states=tuple(self.read_states),
            soft_state=soft if soft != self._prev_soft_state else None,
            conf_state=self.conf if self.conf != self._prev_conf_state else None,
        )
        self.msgs = []
        self.read_states = []
        self._prev_hard_state = hs
        self._prev_soft_state = soft
        self._prev_conf_state = self.conf
        self._outstanding = True
        return rd

    def advance(self, rd: Ready) -> None:
        """The driver has persisted, sent and applied `rd` (steps 1-5 of Ready)."""
        assert self._outstanding, "advance without an outstanding Ready"
        self._outstanding = False
        if rd.snapshot is not None and self.pending_snapshot is rd.snapshot:
            self.pending_snapshot = None
        # The longest prefix of rd.entries still in the log is durable now (input between
        # ready() and advance() may have replaced a tail of it: that tail goes out again).
        for e in reversed(rd.entries):
            if self.log.term(e.index) == e.term:
                self.log.stable_to(e.index, e.term)
                break
        if rd.committed_entries:
            last_applied = rd.committed_entries[-1].index
            if last_applied > self.log.applied:
                self.log.applied_to(last_applied)
        if self.role == Role.LEADER:
            pr = self.prs.get(self.id)
            if pr is not None:
                pr.maybe_update(self.log.stable)
            if self._maybe_commit():
                self._bcast_append()

    def step(self, m: Message) -> None:
        """Take one message from a peer. Stale, duplicated and reordered messages are safe.

        Raises InvalidMessage, having changed nothing, for a self-contradictory message.
        """
        check_message(m)
        if m.to != self.id:
            log.warning("node %d dropping message addressed to %d", self.id, m.to)
            return
        if m.term > self.term:
            if m.type in (MT.VOTE, MT.PRE_VOTE):
                force = m.context == CAMPAIGN_TRANSFER
                in_lease = (
                    self.config.check_quorum
                    and self.lead != 0
                    and self.election_elapsed < self.config.election_tick
                )
                if in_lease and not force:
                    return  # leader lease: a live leader exists, ignore the disruption
            if m.type == MT.PRE_VOTE or (m.type == MT.PRE_VOTE_RESP and not m.reject):
                pass  # pre-votes never move terms; a granted one carries the future term
            elif m.type in (MT.APPEND, MT.HEARTBEAT, MT.SNAPSHOT):
                self.become_follower(m.term, m.sender)
            elif m.type == MT.VOTE:
                # §5.2 (Figure 2): only a leader's message or a granted vote restarts the
                # election timer, so a stream of doomed candidates (say a removed server
                # without pre-vote) cannot keep an up-to-date node from ever campaigning.
                elapsed = self.election_elapsed
                self.become_follower(m.term, 0)
                self.election_elapsed = elapsed
            else:
                self.become_follower(m.term, 0)
        elif m.term < self.term:
            if (self.config.check_quorum or self.config.pre_vote) and m.type in (
                MT.APPEND,
                MT.HEARTBEAT,
            ):
                self._send(MT.APPEND_RESP, m.sender)  # tell the stale leader our term
            elif m.type == MT.PRE_VOTE:
                self._send(MT.PRE_VOTE_RESP, m.sender, reject=True)
            return
        if m.type in (MT.VOTE, MT.PRE_VOTE):
            self._handle_vote_request(m)
        elif self.role == Role.LEADER:
            self._step_leader(m)
        elif self.role == Role.FOLLOWER:
            self._step_follower(m)
        else:
            self._step_candidate(m)

    # ---------------------------------------------------------------- roles
    def _reset(self, term: int) -> None:
        if term != self.term:
            self.term = term
            self.vote = 0
        self.lead = 0
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = self.config.election_tick + self.rng.randrange(
            self.config.election_tick
        )
        self.lead_transferee = 0
        self.votes = {}
        self.readonly = ReadOnly()
        self.pending_reads = []
        last = self.log.last_index
        for node_id, pr in self.prs.items():
            pr.reset(last + 1)
            if node_id == self.id:
                pr.match = self.log.stable

    def become_follower(self, term: int, lead: int) -> None:
        self._reset(term)
        self.lead = lead
        if self.role != Role.FOLLOWER:
            log.debug("node %d became follower at term %d", self.id, term)
        self.role = Role.FOLLOWER

    def _become_pre_candidate(self) -> None:
        self.votes = {}
        self.lead = 0
        self.role = Role.PRE_CANDIDATE

    def _become_candidate(self) -> None:
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = Role.CANDIDATE

    def _become_leader(self) -> None:
        self._reset(self.term)
        self.lead = self.id
        self.role = Role.LEADER
        log.debug("node %d became leader at term %d", self.id, self.term)
        pr = self.prs.get(self.id)
        if pr is not None:
            pr.become_replicate()
            pr.recent_active = True
        # Any conf entry in the log may be uncommitted; wait for it before another change.
        self.pending_conf_index = self.log.last_index
        self._append_entry(EntryType.NORMAL, b"")  # §5.4.2: commit an entry of our term

    def _campaign(self, pre_vote: bool, transfer: bool) -> None:
        if not self.promotable:
            return
        if pre_vote:
            self._become_pre_candidate()
            vote_type, term = MT.PRE_VOTE, self.term + 1
        else:
            self._become_candidate()
            vote_type, term = MT.VOTE, self.term
        self.votes[self.id] = True
        if self._poll() == VoteResult.WON:
            return
        context = CAMPAIGN_TRANSFER if transfer else b""
        for v in sorted(self.conf.voters | self.conf.voters_outgoing):
            if v != self.id:
                self._send(
                    vote_type,
                    v,
                    term=term,
                    log_term=self.log.last_term,
                    index=self.log.last_index,
                    context=context,
                )

    def _poll(self) -> VoteResult:
        """Tally votes; act on a decided election."""
        result = joint_vote_result(self.conf.voters, self.conf.voters_outgoing, self.votes)
        if result == VoteResult.WON:
            if self.role == Role.PRE_CANDIDATE:
                self._campaign(pre_vote=False, transfer=False)  # pre-vote won: the real one
            else:
                self._become_leader()
        elif result == VoteResult.LOST:
            self.become_follower(self.term, 0)
        return result

    # ---------------------------------------------------------------- ticks
    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self.promotable and self.election_elapsed >= self.randomized_election_timeout:
            self.election_elapsed = 0
            self._campaign(self.config.pre_vote, transfer=False)

    def _tick_heartbeat(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.config.election_tick:
            self.election_elapsed = 0
            if self.config.check_quorum:
                active = {i for i, pr in self.prs.items() if pr.recent_active or i == self.id}
                for pr in self.prs.values():
                    pr.recent_active = False
                if not has_quorum(self.conf.voters, self.conf.voters_outgoing, active):
                    log.info("leader %d lost contact with a quorum; stepping down", self.id)
                    self.become_follower(self.term, 0)
                    return
            self.lead_transferee = 0  # a transfer that took an election timeout is abandoned
        if self.heartbeat_elapsed >= self.config.heartbeat_tick:
            self.heartbeat_elapsed = 0
            self._bcast_heartbeat(self.readonly.last_pending_context())

    # ---------------------------------------------------------------- votes
    def _handle_vote_request(self, m: Message) -> None:
        resp = MT.VOTE_RESP if m.type == MT.VOTE else MT.PRE_VOTE_RESP
        can_vote = (
            self.vote == m.sender
            or (self.vote == 0 and self.lead == 0)
            or (m.type == MT.PRE_VOTE and m.term > self.term)
        )
        tie = (
            m.type == MT.PRE_VOTE
            and self.role == Role.PRE_CANDIDATE
            and m.sender < self.id
            and (m.log_term, m.index) == (self.log.last_term, self.log.last_index)
        )
        if can_vote and not tie and self.log.is_up_to_date(m.log_term, m.index):
            self._send(resp, m.sender, term=m.term)
            if m.type == MT.VOTE:
                self.election_elapsed = 0
                self.vote = m.sender
        else:
            self._send(resp, m.sender, reject=True)

    def _step_candidate(self, m: Message) -> None:
        t = m.type
        if t in (MT.APPEND, MT.HEARTBEAT, MT.SNAPSHOT):
            self.become_follower(m.term, m.sender)  # a leader of our term exists (§5.2)
            self._step_follower(m)
        elif (t == MT.VOTE_RESP and self.role == Role.CANDIDATE) or (
            t == MT.PRE_VOTE_RESP and self.role == Role.PRE_CANDIDATE
        ):
            self.votes.setdefault(m.sender, not m.reject)
            self._poll()

    # ---------------------------------------------------------------- sending
    def _send(self, type: MessageType, to: int, **fields: object) -> None:
        fields.setdefault("term", self.term)
        self.msgs.append(Message(type=type, to=to, sender=self.id, **fields))  # type: ignore[arg-type]

    # ---------------------------------------------------------------- proposals, config
    def _check_can_propose(self) -> None:
        if self.role != Role.LEADER:
            raise NotLeader(self.id, self.lead)
        if self.lead_transferee:
            raise ProposalDropped(f"leadership is being transferred to {self.lead_transferee}")

    def _append_entry(self, type: EntryType, data: bytes) -> int:
        index = self.log.last_index + 1
        self.log.append((Entry(self.term, index, type, data),))
        if type == EntryType.CONF_CHANGE:
            self._sync_conf()
        if self.role == Role.LEADER:
            self._bcast_append()
        return index

    def _sync_conf(self) -> None:
        """Adopt the latest configuration in the log (diss. §4.1) if it changed."""
        if self._conf_version == self.log.conf_version:
            return
        self._conf_version = self.log.conf_version
        conf = self.log.conf_state_at(self.log.last_index)
        if conf == self.conf:
            return
        self.conf = conf
        members = conf.voters | conf.learners | conf.voters_outgoing
        last = self.log.last_index
        for i in list(self.prs):
            if i not in members:
                del self.prs[i]
        for i in members:
            pr = self.prs.get(i)
            if pr is None:
                pr = self.prs[i] = Progress(next=last + 1)
                if i == self.id:
                    pr.match = self.log.stable
                    pr.recent_active = True
            pr.is_learner = i in conf.learners
        if self.lead_transferee and self.lead_transferee not in conf.voters:
            self.lead_transferee = 0
        if self.role == Role.LEADER and self._maybe_commit():
            self._bcast_append()

    # ---------------------------------------------------------------- invariants
    def check(self) -> None:
        """O(members): the log's cursors and the leader's progress invariants."""
        self.log.check()
        assert self.vote == 0 or self.term > 0
        if self.role == Role.LEADER:
            assert self.lead == self.id
            for pr in self.prs.values():
                pr.check()
