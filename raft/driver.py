"""The asyncio driver: the I/O half around the sans-I/O core (raft/core.py).

One task runs the loop; everything else (the tick timer, the Raft endpoint, `propose()`)
only queues input and wakes it. Each turn of the loop:

  0. feeds the core what arrived since the last turn: messages, ticks, proposals, reads;
  then, while the core has a Ready, follows its steps (raft/ready.py) strictly in order:
  1-2. persists hard state, snapshot and entries, and fsyncs (`RaftStorage.save`, in a
     worker thread so the event loop never blocks on the disk);
  3. only then sends the Ready's messages (they may promise what steps 1-2 made durable);
  4. restores a received snapshot into the state machine, applies committed entries in
     order, and resolves the futures of `propose()` callers with the results;
  5. answers ReadIndex requests (each returns once its index is applied);
  6. calls `advance(ready)`, then snapshots the state machine if the log grew enough.
While step 1 waits for the disk, new input piles up and goes into the next Ready: this is
group commit, one fsync for every proposal that arrived meanwhile.

A proposal is known by the (index, term) that `core.propose` gave it: when the entry at that
index is applied with that term, the caller gets the state machine's result; with another
term, the proposal was overwritten by a new leader and surely not applied (`ProposalLost`,
safe to retry). A node that stops being leader fails its waiting proposals at once
(`ProposalOutcomeUnknown`: the entry may still commit under the next leader), so callers at a
deposed leader learn within the election timeout that check-quorum needs, not after a
fixed request timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import ssl
from collections.abc import Iterable
from typing import Any

from raft.config import Config
from raft.core import RaftCore
from raft.driver_errors import (
    DriverStopped,
    NotLeaderError,
    ProposalLost,
    ProposalOutcomeUnknown,
    ProposalRefused,
    ReadTimeout,
)
from raft.errors import InvalidMessage, ProposalDropped, RaftError
from raft.errors import NotLeader as CoreNotLeader
from raft.messages import ConfChange, ConfChangeType, ConfState, Entry, EntryType, Message
from raft.ready import Ready, Role
from raft.statemachine import StateMachine
from raft.storage import RaftStorage
from raft.transport import HttpTransport, Transport
from raft.waiters import Waiters

__all__ = [
    "Driver",
    "DriverStopped",
    "NotLeaderError",
    "ProposalLost",
    "ProposalOutcomeUnknown",
    "ProposalRefused",
    "ReadTimeout",
]

log = logging.getLogger(__name__)

DEFAULT_TICK_S = 0.04  # one core tick: heartbeats every tick, elections after 10-20 ticks
MAX_INFLIGHT_PROPOSALS = 10_000  # beyond this propose() refuses (backpressure)


class Driver:
    """Runs one Raft core with real storage, a transport, a timer and a state machine."""

    def __init__(
        self,
        core: RaftCore,
        storage: RaftStorage,
        state_machine: StateMachine,
        transport: Transport,
        *,
        addresses: dict[int, str],
        tick_s: float = DEFAULT_TICK_S,
        snapshot_threshold: int = 10_000,
    ) -> None:
        self.id = core.id
        self.core = core
        self.storage = storage
        self.sm = state_machine
        self.transport = transport
        self.addresses = dict(addresses)
        self.tick_s = tick_s
        self.snapshot_threshold = snapshot_threshold
        self.max_learner_lag = 1000  # entries; a learner further behind is not promoted
        # A forwarded ReadIndex can be lost; its caller gives up after two election timeouts.
        self.read_timeout_s = 2 * core.config.election_tick * tick_s
        self.leader_id = 0
        self.leader_changes = 0  # times this node learnt of a new leader (exact; /metrics)
        self.is_leader = False
        # Set whenever leader_id or is_leader changes; whoever waits on it clears it.
        self.leadership_changed = asyncio.Event()
        self.applied = storage.snapshot_index
        self.conf_state: ConfState = core.conf
        self._inbox: list[Message] = []
        self._ticks = 0
        self._proposals: list[tuple[bytes, asyncio.Future[Any]]] = []
        self._conf_changes: list[tuple[ConfChange, asyncio.Future[ConfState]]] = []
        self._reads: list[tuple[bytes, asyncio.Future[int]]] = []
        self._waiters = Waiters()  # what was handed to the core and awaits its outcome
        self._read_seq = itertools.count(1)
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._running = False
        if storage.snapshot is not None:
            self.sm.restore(storage.snapshot.data)

    # -- construction from a data folder ---------------------------------------------

    @classmethod
    def open(
        cls,
        *,
        node_id: int,
        addresses: dict[int, str],
        data_dir: str,
        state_machine: StateMachine,
        initial_voters: set[int],
        tick_s: float = DEFAULT_TICK_S,
        config: Config | None = None,
        snapshot_threshold: int = 10_000,
        sync: bool = True,
        seed: int | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> Driver:
        """Recover storage from `data_dir`, build the core on it, and wire an HTTP transport.

        `initial_voters` is the bootstrap configuration, the same on every node and every
        start (a snapshot's configuration replaces it once there is one).
        """
        storage = RaftStorage(data_dir, sync=sync)
        state = storage.recovered()
        core = RaftCore(
            node_id,
            ConfState(voters=frozenset(initial_voters)),
            random.Random(seed),
            config,
            hard_state=state.hard_state,
            snapshot=state.snapshot,
            entries=state.entries,
        )
        transport = HttpTransport(node_id, addresses, tls=tls)  # tls: HTTPS to peers
        return cls(core, storage, state_machine, transport, addresses=addresses, tick_s=tick_s,
                   snapshot_threshold=snapshot_threshold)

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        await self.transport.start()
        self._running = True
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._run()), loop.create_task(self._ticker())]

    async def stop(self) -> None:
        self._running = False
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks = []
        self._fail_all(DriverStopped(f"node {self.id} is stopping"))
        await self.transport.close()
        await asyncio.to_thread(self.storage.close)

    # -- inputs (any task) --------------------------------------------------------------

    def deliver(self, messages: Iterable[Message]) -> None:
        """Messages from the Raft endpoint; stepped into the core on the next turn."""
        if not self._running:
            raise RuntimeError(f"node {self.id} is not running")
        self._inbox.extend(messages)
        self._wake.set()

    def leader_address(self) -> str | None:
        return self.addresses.get(self.leader_id) if self.leader_id else None

    def _not_leader(self, leader: int | None = None) -> NotLeaderError:
        leader = self.leader_id if leader is None else leader
        return NotLeaderError(self.id, leader, self.addresses.get(leader))

    def _check_running(self) -> None:
        if not self._running:
            raise DriverStopped(f"node {self.id} is not running")

    async def propose(self, command: bytes) -> Any:
        """Replicate `command`; return what the state machine's `apply` returned for it.

        Raises `NotLeaderError` (with the leader's id and address) off the leader,
        `ProposalOutcomeUnknown` if leadership is lost before the entry is applied here,
        `ProposalLost` if a new leader overwrote it, `raft.errors.ProposalDropped` during a
        leadership transfer, and whatever `apply` raised for this command.
        """
        if not command:
            raise ValueError("a command is non-empty bytes (empty data is the leader's no-op)")
        self._check_running()
        if not self.is_leader:
            raise self._not_leader()
        if len(self._waiters) + len(self._proposals) >= MAX_INFLIGHT_PROPOSALS:
            raise ProposalRefused(f"node {self.id} has too many proposals in flight")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._proposals.append((bytes(command), fut))
        self._wake.set()
        return await fut

    async def change_membership(self, change: ConfChange) -> ConfState:
        """Propose one membership change; return the configuration once it is applied here.

        Raises `NotLeaderError`, `raft.errors.ProposalDropped` (another change is still in
        flight: retry) or `raft.errors.ConfChangeInvalid`.
        """
        self._check_running()
        if not self.is_leader:
            raise self._not_leader()
        fut: asyncio.Future[ConfState] = asyncio.get_running_loop().create_future()
        self._conf_changes.append((change, fut))
        self._wake.set()
        return await fut

    def transfer_leadership(self, to: int) -> None:
        self.core.transfer_leadership(to)
        self._wake.set()

    async def read_index(self) -> int:
        """Wait until a linearizable read may be served from the local state machine.

        ReadIndex (dissertation section 6.4): the leader confirms its leadership with a
        heartbeat round; the read is served once this node has applied that commit index.
        Works on followers too (the core forwards the request to the leader).
        """
        self._check_running()
        ctx = f"{self.id}:{next(self._read_seq)}".encode()
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._reads.append((ctx, fut))
        self._waiters.reads[ctx] = fut
        self._wake.set()
        try:
            index = await asyncio.wait_for(fut, self.read_timeout_s)
        except TimeoutError:
            raise ReadTimeout(f"no ReadIndex answer within {self.read_timeout_s:.1f}s") from None
        finally:
            self._waiters.reads.pop(ctx, None)
        await self.wait_applied(index)
        return index

    async def wait_applied(self, index: int) -> None:
        if self.applied >= index:
            return
        self._check_running()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.applied.append((index, fut))
        await fut

    def status(self) -> dict[str, Any]:
        hs = self.core.hard_state
        return {
            "id": self.id,
            "term": hs.term,
            "vote": hs.vote,
            "commit": hs.commit,
            "leader_id": self.leader_id,
            "leader_changes": self.leader_changes,
            "is_leader": self.is_leader,
            "role": self.core.role.value,
            "applied": self.applied,
            "last_index": self.storage.last_index,
            "snapshot_index": self.storage.snapshot_index,
            "voters": sorted(self.conf_state.voters),
            "learners": sorted(self.conf_state.learners),
        }

    # -- the loop -----------------------------------------------------------------------

    async def _ticker(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            next_at += self.tick_s
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            now = loop.time()
            if now - next_at > self.tick_s:  # the loop was stalled: do not burst ticks
                next_at = now
            self._ticks += 1
            self._wake.set()

    async def _run(self) -> None:
        try:
            while self._running:
                await self._wake.wait()
                self._wake.clear()
                self._feed()
                while (rd := self.core.ready()) is not None:
                    await self._handle_ready(rd)
                    self._feed()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("node %d: driver loop failed; stopping", self.id)
            self._running = False
            self._fail_all(DriverStopped(f"node {self.id}: driver failed"))

    def _feed(self) -> None:
        """Step 0: hand the core everything that arrived since the last turn."""
        inbox, self._inbox = self._inbox, []
        for m in inbox:
            try:
                self.core.step(m)
            except InvalidMessage as exc:  # the endpoint checks first; this is a backstop
                log.warning("node %d: dropping %s from %d: %s", self.id, m.type.name,
                            m.sender, exc)
            except Exception:  # a peer's message must never take the node down
                log.exception("node %d: dropping %s from %d that the core refused",
                              self.id, m.type.name, m.sender)
        ticks, self._ticks = self._ticks, 0
        for _ in range(ticks):
            self.core.tick()
        proposals, self._proposals = self._proposals, []
        for data, fut in proposals:
            if fut.done():
                continue
            try:
                index = self.core.propose(data)
            except RaftError as exc:
                fut.set_exception(self._translate(exc))
            else:
                self._waiters.proposals[index] = (self.core.term, fut)
        changes, self._conf_changes = self._conf_changes, []
        for change, cfut in changes:
            try:
                self._check_promotion(change)
                index = self.core.propose_conf_change(change)
            except RaftError as exc:
                cfut.set_exception(self._translate(exc))
            else:
                self._waiters.conf_changes.append((index, self.core.term, cfut))
        reads, self._reads = self._reads, []
        for ctx, rfut in reads:
            try:
                self.core.read_index(ctx)
            except RaftError as exc:
                rfut.set_exception(self._translate(exc))

    def _check_promotion(self, change: ConfChange) -> None:
        """A learner becomes a voter only once it has caught up (dissertation §4.2.1)."""
        node = change.node_id
        if change.type != ConfChangeType.ADD_VOTER or node not in self.core.conf.learners:
            return
        lag = self.core.committed - self.core.match_index().get(node, 0)
        if lag > self.max_learner_lag:
            raise ProposalDropped(f"learner {node} is {lag} entries behind the commit index; "
                                  "promote it once it has caught up")

    def _translate(self, exc: RaftError) -> Exception:
        if isinstance(exc, CoreNotLeader) and not isinstance(exc, NotLeaderError):
            return self._not_leader(exc.leader)
        return exc

    async def _handle_ready(self, rd: Ready) -> None:
        # 1-2. Persist and fsync, off the event loop. A commit-only hard state is a small
        # write with no fsync: done inline, it saves a thread hop on the commit path.
        if rd.hard_state is not None or rd.entries or rd.snapshot is not None:
            if self.storage.must_sync(rd.hard_state, rd.entries, rd.snapshot):
                await asyncio.to_thread(self.storage.save, rd.hard_state, rd.entries,
                                        rd.snapshot)
            else:
                self.storage.save(rd.hard_state, rd.entries, rd.snapshot)
        # 3. Only now may messages that promise durable state leave.
        if rd.messages:
            self.transport.send(rd.messages)
        if rd.conf_state is not None:
            self.conf_state = rd.conf_state
        # 4. Restore a snapshot, apply committed entries.
        if rd.snapshot is not None:
            self.sm.restore(rd.snapshot.data)
            self.applied = rd.snapshot.meta.index
            self._waiters.snapshot_installed(rd.snapshot.meta.index)
        for e in rd.committed_entries:
            self._apply(e)
        # Leadership changes after applying, so a proposal committed in this very Ready
        # gets its result rather than "outcome unknown".
        if rd.soft_state is not None:
            self._on_soft_state(rd.soft_state.leader, rd.soft_state.role == Role.LEADER)
        # 5. Reads: the index is known now; callers wait in wait_applied for it to apply.
        for rs in rd.read_states:
            self._waiters.read_answered(rs.context, rs.index)
        self._waiters.applied_to(self.applied)
        # 6.
        self.core.advance(rd)
        if self.applied - self.storage.snapshot_index >= self.snapshot_threshold:
            await self._snapshot()

    def _apply(self, e: Entry) -> None:
        if e.index <= self.applied:
            return
        self.applied = e.index
        fut = self._waiters.proposer_of(e)
        if e.type == EntryType.CONF_CHANGE:
            self._waiters.conf_change_applied(e, self.core.conf)
            return
        if not e.data:
            return  # a leader's no-op
        try:
            result = self.sm.apply(e.index, e.data)
        except Exception as exc:  # the command's own error, the same on every replica
            if fut is not None and not fut.done():
                fut.set_exception(exc)
            return
        if fut is not None and not fut.done():
            fut.set_result(result)

    def _on_soft_state(self, leader: int, is_leader: bool) -> None:
        was_leader = self.is_leader
        if (leader, is_leader) != (self.leader_id, was_leader):
            self.leadership_changed.set()
        if leader and leader != self.leader_id:
            self.leader_changes += 1
            if leader != self.id:  # a new leader says so itself when it has taken over
                log.info("node %d: node %d leads term %d", self.id, leader,
                         self.core.hard_state.term)
        self.leader_id, self.is_leader = leader, is_leader
        if was_leader and not is_leader:
            log.info("node %d lost leadership (leader now %d); failing %d proposals",
                     self.id, leader, len(self._waiters) + len(self._proposals))
            self._fail_proposals(ProposalOutcomeUnknown(
                f"node {self.id} lost leadership before the proposal was applied; "
                f"it may still be committed (leader now: {leader or 'unknown'})"))

    def _fail_proposals(self, exc: Exception) -> None:
        self._waiters.fail_proposals(exc)
        for _, fut in self._proposals:
            if not fut.done():
                fut.set_exception(exc)
        self._proposals = []

    def _fail_all(self, exc: Exception) -> None:
        self._fail_proposals(exc)
        self._waiters.fail_all(exc)
        for _, cfut in self._conf_changes:
            if not cfut.done():
                cfut.set_exception(exc)
        self._conf_changes = []
        for _, rfut in self._reads:
            if not rfut.done():
                rfut.set_exception(exc)
        self._reads = []

    async def _snapshot(self) -> None:
        """Snapshot the state machine at the applied index and compact the log (section 7).

        The core folds its log first and returns the Snapshot; storage then writes it and
        drops the segments below it. Both happen before the next Ready is taken.
        """
        index = self.applied
        if index != self.core.applied or index <= self.core.log.snap_index:
            return
        data = self.sm.snapshot()
        snap = self.core.compact(index, data)
        await asyncio.to_thread(self.storage.save_snapshot, snap)
        log.info("node %d: snapshot at %d (%d bytes), log compacted", self.id, index, len(data))
