"""Deterministic simulation of whole Raft clusters in one process, driven by a seed.

`Network(seed)` holds the cores and a simulated transport: messages wait in a queue
ordered by delivery tick, and may be dropped (`drop`, `cut`, `isolate`, partitions),
delayed and reordered (`delay`), or duplicated (`duplicate`). `recover` heals all of it.
Nodes run the driver loop of raft/ready.py exactly: a Ready's hard state, snapshot and
entries become durable before its messages enter the network, then committed entries are
applied, then `advance`. A node's Ready is processed only some of the time (a seeded coin
per step, always at the end of a tick round), so `crash` loses exactly what a real node
would: everything the core knew but had not yet handed to the driver. `restart` rebuilds the
core from the durable state alone.

`Checker` (tests/raft/checker.py) asserts the Raft safety properties after every step; the
seeded fault schedule is tests/raft/scenario.py. Run seeds by hand (a failure prints the
trace tail): `.venv/bin/python -m tests.raft.sim SEED [SEED ...]`.
"""

from __future__ import annotations

import contextlib
import heapq
import random
import sys
import zlib
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from raft import (
    ConfChange,
    Config,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    NotLeader,
    ProposalDropped,
    RaftCore,
    RaftError,
    Ready,
    Role,
    Snapshot,
)
from tests.raft.checker import Checker


# ----------------------------------------------------------------------------- state machine
@dataclass
class StateMachine:
    """Applies commands into a running CRC (its whole state), so equal digests = equal states."""

    applied: int = 0
    digest: int = 0
    commands: int = 0

    def apply(self, e: Entry) -> None:
        assert e.index == self.applied + 1, f"applied {self.applied} then got {e.index}"
        self.applied = e.index
        if e.type == EntryType.NORMAL and e.data:
            self.digest = zlib.crc32(e.data, self.digest)
            self.commands += 1

    def snapshot(self, pad: int) -> bytes:
        return f"{self.applied}:{self.digest}:{self.commands}:".encode() + b"." * pad

    @classmethod
    def restore(cls, data: bytes) -> StateMachine:
        applied, digest, commands = data.split(b":")[:3]
        return cls(int(applied), int(digest), int(commands))


# ----------------------------------------------------------------------------- one node
@dataclass
class Durable:
    """What a node's disk holds: exactly what the driver persisted."""

    hard_state: HardState = field(default_factory=HardState)
    snapshot: Snapshot | None = None
    entries: list[Entry] = field(default_factory=list)

    def persist(self, rd: Ready) -> None:
        if rd.hard_state is not None:
            self.hard_state = rd.hard_state
        if rd.snapshot is not None:  # the leader's snapshot replaces the whole log
            self.snapshot = rd.snapshot
            self.entries = []
        if rd.entries:  # entries are contiguous: truncate by position, then append
            first = rd.entries[0].index
            if self.entries:
                del self.entries[max(0, first - self.entries[0].index) :]
            self.entries.extend(rd.entries)

    def compacted(self, snap: Snapshot) -> None:
        self.snapshot = snap
        self.entries = [e for e in self.entries if e.index > snap.meta.index]


@dataclass
class SimNode:
    id: int
    core: RaftCore
    durable: Durable
    sm: StateMachine
    alive: bool = True


# ----------------------------------------------------------------------------- the network
@dataclass
class Faults:
    drop: float = 0.0  # every message, on top of per-link drops
    duplicate: float = 0.0
    delay: float = 0.0  # chance a message is held back 1..max_delay ticks (reordering)
    max_delay: int = 3


def format_message(m: Message) -> str:
    parts = [f"{m.sender}->{m.to} {m.type.name} term={m.term}"]
    if m.type.name in ("APPEND", "VOTE", "PRE_VOTE"):
        parts.append(f"log_term={m.log_term} index={m.index}")
    elif m.index or m.type.name in ("APPEND_RESP", "READ_INDEX_RESP"):
        parts.append(f"index={m.index}")
    if m.entries:
        parts.append("entries=[" + " ".join(_fmt_entry(e) for e in m.entries) + "]")
    if m.commit:
        parts.append(f"commit={m.commit}")
    if m.reject:
        parts.append(f"reject hint={m.reject_hint}/{m.hint_term}")
    if m.context:
        parts.append(f"context={m.context.decode(errors='replace')}")
    if m.snapshot is not None:
        parts.append(f"snapshot={m.snapshot.index}/{m.snapshot.term} offset={m.offset}")
        if m.data:
            parts.append(f"bytes={len(m.data)}")
        if m.done:
            parts.append("done")
    return " ".join(parts)


def _fmt_entry(e: Entry) -> str:
    if e.type == EntryType.CONF_CHANGE:
        cc = ConfChange.from_bytes(e.data)
        return f"{e.term}/{e.index}:{cc.type.name.lower()}({cc.node_id})"
    return f"{e.term}/{e.index}:{e.data.decode(errors='replace') or '-'}"


class Network:
    """Cores over a simulated transport; every random choice comes from `seed`."""

    def __init__(
        self,
        seed: int,
        ids: Iterable[int] = (1, 2, 3),
        *,
        config: Config | None = None,
        learners: Iterable[int] = (),
        faults: Faults | None = None,
        sync_probability: float = 1.0,
        interleave: float = 0.0,
        snapshot_pad: int = 40,
        trace_len: int = 60,
        record: list[str] | None = None,
        core_class: type[RaftCore] = RaftCore,
    ) -> None:
        self.seed = seed
        self.core_class = core_class
        self.rng = random.Random(seed)
        self.config = config or Config()
        ids = list(ids)
        self.bootstrap = ConfState(frozenset(ids), frozenset(learners))
        self.faults = faults or Faults()
        self.sync_probability = sync_probability
        self.interleave = interleave  # chance of input between a ready() and its advance()
        self.snapshot_pad = snapshot_pad
        self.nodes: dict[int, SimNode] = {}
        self.queue: list[tuple[int, int, Message]] = []
        self.seq = 0
        self.now = 0
        self.cuts: set[tuple[int, int]] = set()
        self.link_drop: dict[tuple[int, int], float] = {}
        self.checker = Checker()
        self.trace: deque[str | tuple[int, Message]] = deque(maxlen=trace_len)
        self.record = record  # transcript output: delivered messages, formatted
        for i in sorted({*ids, *learners}):
            self.add_node(i)

    # --- membership of the simulation -------------------------------------------------
    def add_node(self, node_id: int) -> SimNode:
        """A fresh node with an empty disk, bootstrapped with the cluster's initial config."""
        core = self.core_class(node_id, self.bootstrap, self._node_rng(), self.config)
        node = SimNode(node_id, core, Durable(), StateMachine())
        self.nodes[node_id] = node
        return node

    def _node_rng(self) -> random.Random:
        return random.Random(self.rng.getrandbits(32))

    def crash(self, node_id: int) -> None:
        """Power loss: the node stops; messages reaching it while it is down are lost."""
        self.event(f"crash {node_id}")
        self.nodes[node_id].alive = False

    def restart(self, node_id: int) -> None:
        """Rebuild the core from what its disk holds; the state machine from the snapshot."""
        self.event(f"restart {node_id}")
        old = self.nodes[node_id]
        d = old.durable
        core = self.core_class(
            node_id,
            self.bootstrap,
            self._node_rng(),
            self.config,
            hard_state=d.hard_state,
            snapshot=d.snapshot,
            entries=list(d.entries),
        )
        sm = StateMachine.restore(d.snapshot.data) if d.snapshot else StateMachine()
        node = SimNode(node_id, core, d, sm)
        self.nodes[node_id] = node
        self.process(node)

    def load(self, node_id: int, hard_state: HardState, entries: list[Entry]) -> None:
        """Put a given durable state on a node's disk and restart it from there."""
        self.nodes[node_id].durable = Durable(hard_state, None, list(entries))
        self.restart(node_id)

    # --- faults ---------------------------------------------------------------------------
    def cut(self, a: int, b: int) -> None:
        self.cuts.update({(a, b), (b, a)})

    def isolate(self, node_id: int) -> None:
        for other in self.nodes:
            if other != node_id:
                self.cut(node_id, other)

    def partition(self, *groups: Iterable[int]) -> None:
        sets = [set(g) for g in groups]
        for i, g in enumerate(sets):
            for h in sets[i + 1 :]:
                for a in g:
                    for b in h:
                        self.cut(a, b)

    def drop(self, sender: int, to: int, fraction: float) -> None:
        self.link_drop[(sender, to)] = fraction

    def duplicate(self, probability: float) -> None:
        self.faults.duplicate = probability

    def delay(self, probability: float, max_delay: int = 3) -> None:
        self.faults.delay, self.faults.max_delay = probability, max_delay

    def recover(self) -> None:
        """Heal every partition and link fault (crashed nodes stay down: see `restart`)."""
        self.event("recover")
        self.cuts.clear()
        self.link_drop.clear()
        self.faults = Faults()

    # --- driving --------------------------------------------------------------------------
    def event(self, text: str) -> None:
        self.trace.append(f"t={self.now} {text}")

    def send(self, m: Message) -> None:
        if (m.sender, m.to) in self.cuts:
            return
        f, rng = self.faults, self.rng
        p = f.drop + self.link_drop.get((m.sender, m.to), 0.0)
        if p and rng.random() < p:
            return
        copies = 2 if f.duplicate and rng.random() < f.duplicate else 1
        for _ in range(copies):
            at = self.now
            if f.delay and rng.random() < f.delay:
                at += rng.randint(1, f.max_delay)
            self.seq += 1
            heapq.heappush(self.queue, (at, self.seq, m))

    def process(self, node: SimNode) -> None:
        """The driver loop of raft/ready.py, run until the core has nothing more."""
        core, checker = node.core, self.checker
        while (rd := core.ready()) is not None:
            node.durable.persist(rd)  # 1-2: persist and "fsync"
            if rd.entries:
                checker.persisted(node, rd.entries)
            for m in rd.messages:  # 3: send
                self.send(m)
            if rd.snapshot is not None:  # 4: restore, apply
                node.sm = StateMachine.restore(rd.snapshot.data)
                checker.state(node)
            for e in rd.committed_entries:
                node.sm.apply(e)
                checker.applied_entry(node, e)
            for rs in rd.read_states:  # 5: reads
                checker.read_released(node, rs.context, rs.index)
            if rd.soft_state is not None and rd.soft_state.role == Role.LEADER:
                checker.became_leader(node)
            if self.interleave and self.rng.random() < self.interleave:
                self._between_ready_and_advance(node)
            core.advance(rd)  # 6
        checker.after_step(node)

    def _between_ready_and_advance(self, node: SimNode) -> None:
        """The contract lets input reach the core while a Ready is outstanding (a driver
        may step messages while it waits for the disk): deliver one due message, or propose."""
        if node.core.role == Role.LEADER and self.rng.random() < 0.3:
            self.seq += 1
            with contextlib.suppress(NotLeader, ProposalDropped):
                node.core.propose(f"i{self.seq}".encode())
            return
        for k, (at, _, m) in enumerate(self.queue):
            if at <= self.now and m.to == node.id and (m.sender, m.to) not in self.cuts:
                self.queue[k] = self.queue[-1]
                self.queue.pop()
                heapq.heapify(self.queue)
                self.trace.append((self.now, m))
                node.core.step(m)
                self.checker.after_step(node)
                return

    def deliver_due(self, limit: int = 100_000) -> int:
        """Deliver every message due by now (including replies they cause); returns count."""
        n = 0
        queue, nodes = self.queue, self.nodes
        while queue and queue[0][0] <= self.now and n < limit:
            _, _, m = heapq.heappop(queue)
            node = nodes.get(m.to)
            if node is None or not node.alive or (m.sender, m.to) in self.cuts:
                continue
            n += 1
            self.trace.append((self.now, m))
            if self.record is not None:
                self.record.append(format_message(m))
            node.core.step(m)
            self.maybe_process(node)
        return n

    def maybe_process(self, node: SimNode) -> None:
        """Run the driver loop now, or (with 1 - sync_probability) leave it for later."""
        if self.sync_probability >= 1.0 or self.rng.random() < self.sync_probability:
            self.process(node)
        else:
            self.checker.after_step(node)

    def tick(self, rounds: int = 1) -> None:
        """Each round: tick every live node, then deliver what is due. A driver may still
        hold an unprocessed Ready at the end of a round (sync_probability < 1): a crash
        then loses it, as a real crash before fsync would."""
        for _ in range(rounds):
            self.now += 1
            for node in list(self.nodes.values()):
                if node.alive:
                    node.core.tick()
                    self.maybe_process(node)
            self.deliver_due()

    def sync_all(self) -> None:
        for node in self.nodes.values():
            if node.alive:
                self.process(node)

    def stabilize(self, limit: int = 10_000) -> None:
        """Deliver (without ticking) until no message is due."""
        self.sync_all()
        while self.queue and self.queue[0][0] <= self.now and limit > 0:
            limit -= self.deliver_due(limit)
            self.sync_all()

    # --- client operations ---------------------------------------------------------------
    def live(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.alive]

    def leader(self) -> SimNode | None:
        leaders = [n for n in self.live() if n.core.role == Role.LEADER]
        return max(leaders, key=lambda n: n.core.term) if leaders else None

    def propose(self, node_id: int, data: bytes) -> tuple[int, int] | None:
        node = self.nodes[node_id]
        try:
            index = node.core.propose(data)
        except (NotLeader, ProposalDropped):
            return None
        self.event(f"propose {node_id} {data!r} -> {index}")
        self.maybe_process(node)
        return index, node.core.term

    def propose_batch(self, node_id: int, commands: list[bytes]) -> int | None:
        node = self.nodes[node_id]
        try:
            first = node.core.propose_batch(commands)
        except (NotLeader, ProposalDropped):
            return None
        self.event(f"propose {node_id} {len(commands)} commands -> {first}..")
        self.maybe_process(node)
        return first

    def conf_change(self, node_id: int, change: ConfChange) -> int | None:
        node = self.nodes[node_id]
        if change.node_id not in self.nodes:
            self.add_node(change.node_id)
        try:
            index = node.core.propose_conf_change(change)
        except RaftError:
            return None
        self.event(f"conf change {change} at {node_id} -> {index}")
        self.process(node)
        return index

    def read_index(self, node_id: int, context: bytes) -> bool:
        node = self.nodes[node_id]
        committed = max(n.core.committed for n in self.nodes.values())
        try:
            node.core.read_index(context)
        except NotLeader:
            return False
        self.checker.read_asked(context, committed)
        self.process(node)
        return True

    def compact(self, node_id: int) -> Snapshot | None:
        node = self.nodes[node_id]
        if node.sm.applied <= node.core.log.snap_index:
            return None
        snap = node.core.compact(node.sm.applied, node.sm.snapshot(self.snapshot_pad))
        node.durable.compacted(snap)
        self.event(f"compact {node_id} to {snap.meta.index}")
        return snap

    def committed_everywhere(self, index: int, term: int) -> bool:
        """Entry (index, term) is applied by the leader and every live voter it knows."""
        lead = self.leader()
        if lead is None or self.checker.applied.get(index, (None,))[0] != term:
            return False
        voters = lead.core.conf.voters
        return all(n.sm.applied >= index for n in self.live() if n.id in voters)

    # --- reporting ------------------------------------------------------------------------
    def trace_tail(self) -> str:
        lines = []
        for item in self.trace:
            if isinstance(item, str):
                lines.append(item)
            else:
                lines.append(f"t={item[0]} {format_message(item[1])}")
        return "\n".join(lines)

    def final_check(self) -> None:
        for node in self.nodes.values():
            node.core.log.check_deep()


def main(argv: list[str]) -> int:
    from tests.raft.scenario import check_seed  # the schedule lives there

    seeds = [int(a) for a in argv] or [0]
    for seed in seeds:
        try:
            net = check_seed(seed)
        except AssertionError as exc:
            print(exc)
            return 1
        print(f"seed {seed}: ok, {net.now} ticks, leader {net.leader() and net.leader().id}")  # type: ignore[union-attr]
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
