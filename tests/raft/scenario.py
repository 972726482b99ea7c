"""One seed of the simulation: a random fault schedule, then healing, then progress.

`run_seed(seed)` builds a cluster of 3 or 5 (tests/raft/sim.py), draws a configuration
(inflight, batch, chunk size, pre-vote and check-quorum on or off), runs CHAOS_TICKS ticks
of random partitions, link drops, reboots, crash-restarts, compactions, reads, leadership
transfers, membership changes and proposals, then heals everything and requires that a
leader commits a fresh proposal within HEAL_BOUND ticks. The Checker runs on every step.
"""

from __future__ import annotations

import random

from raft import ConfChange, ConfChangeType, Config, RaftCore, Role
from tests.raft.sim import Faults, Network

CHAOS_TICKS = 150
HEAL_BOUND = 120  # ticks after healing within which a leader commits a fresh proposal


def run_seed(
    seed: int,
    chaos_ticks: int = CHAOS_TICKS,
    holder: list[Network] | None = None,
    core_class: type[RaftCore] = RaftCore,
) -> Network:
    """A random fault schedule, then heal and require progress. Raises AssertionError."""
    rng = random.Random(seed ^ 0x5EED)
    size = rng.choice((3, 3, 5))
    config = Config(
        election_tick=10,
        heartbeat_tick=rng.choice((2, 3)),
        max_inflight=rng.choice((1, 4, 64)),
        max_entries_per_append=rng.choice((1, 3, 64)),
        snapshot_chunk_size=rng.choice((8, 32, 4096)),
        pre_vote=rng.random() < 0.75,
        check_quorum=rng.random() < 0.75,
    )
    net = Network(
        seed,
        range(1, size + 1),
        config=config,
        faults=Faults(drop=rng.choice((0.0, 0.0, 0.05, 0.2)), duplicate=0.03, delay=0.15),
        sync_probability=0.7,
        interleave=0.1,
        snapshot_pad=rng.choice((0, 40)),
        core_class=core_class,
    )
    if holder is not None:
        holder.append(net)
    universe = list(range(1, size + 3))
    proposals = 0
    reads = 0
    for _ in range(chaos_ticks):
        r = rng.random()
        ids = list(net.nodes)
        if r < 0.02:
            a = rng.choice(ids)
            net.event(f"isolate {a}")
            net.isolate(a)
        elif r < 0.04:
            rng.shuffle(ids)
            k = rng.randint(1, len(ids) - 1)
            net.event(f"partition {ids[:k]} / {ids[k:]}")
            net.partition(ids[:k], ids[k:])
        elif r < 0.06:
            net.recover()
            net.faults = Faults(drop=rng.choice((0.0, 0.0, 0.05, 0.2)), duplicate=0.03, delay=0.15)
        elif r < 0.08:
            a, b = rng.sample(ids, 2)
            net.drop(a, b, rng.choice((0.3, 1.0)))
        elif r < 0.1:
            live = net.live()
            if len(live) > 1:
                victim = rng.choice(live).id
                net.crash(victim)
                if rng.random() < 0.5:
                    net.restart(victim)  # a reboot: messages in flight still arrive after it
        elif r < 0.16:
            down = [n.id for n in net.nodes.values() if not n.alive]
            if down:
                net.restart(rng.choice(down))
        elif r < 0.18:
            live = net.live()
            if live:
                net.compact(rng.choice(live).id)
        elif r < 0.24:
            # Reads go to any node that believes it leads (stale leaders too) or to anyone.
            live = net.live()
            leaders = [n for n in live if n.core.role == Role.LEADER]
            pool = leaders if leaders and rng.random() < 0.7 else live
            if pool:
                reads += 1
                net.read_index(rng.choice(pool).id, f"r{reads}".encode())
        elif r < 0.245:
            lead = net.leader()
            if lead is not None:
                target = rng.choice(sorted(lead.core.conf.voters))
                net.event(f"transfer {lead.id} -> {target}")
                lead.core.transfer_leadership(target)
                net.process(lead)
        elif r < 0.255:
            lead = net.leader()
            if lead is not None:
                target = rng.choice(universe)
                conf = lead.core.conf
                if target in conf.learners:
                    kind = ConfChangeType.ADD_VOTER
                elif target in conf.voters:
                    kind = ConfChangeType.REMOVE_NODE
                else:
                    kind = rng.choice((ConfChangeType.ADD_LEARNER, ConfChangeType.ADD_VOTER))
                net.conf_change(lead.id, ConfChange(kind, target))
        if rng.random() < 0.4:
            lead = net.leader()
            if lead is not None:
                proposals += 1
                if rng.random() < 0.2:
                    batch = [f"c{proposals}.{k}".encode() for k in range(rng.randint(2, 4))]
                    net.propose_batch(lead.id, batch)
                else:
                    net.propose(lead.id, f"c{proposals}".encode())
        net.tick()

    # Heal: everything back, no faults; a leader must appear and commit within HEAL_BOUND.
    net.recover()
    for n in list(net.nodes.values()):
        if not n.alive:
            net.restart(n.id)
    pending: tuple[int, int] | None = None
    for _ in range(HEAL_BOUND):
        net.tick()
        if pending is not None and net.committed_everywhere(*pending):
            break
        lead = net.leader()
        if lead is not None and (pending is None or lead.core.term != pending[1]):
            pending = net.propose(lead.id, b"after-heal")
    else:
        raise AssertionError(
            f"no proposal committed within {HEAL_BOUND} ticks after healing "
            f"(pending={pending}, leader={net.leader() and net.leader().id})"  # type: ignore[union-attr]
        )
    net.final_check()
    return net


def replay_command(seed: int) -> str:
    return f".venv/bin/python -m tests.raft.sim {seed}"


def check_seed(seed: int, core_class: type[RaftCore] = RaftCore) -> Network:
    """run_seed, with a failure message that names the seed, shows the trace and how to replay."""
    holder: list[Network] = []
    try:
        return run_seed(seed, holder=holder, core_class=core_class)
    except AssertionError as exc:
        trace = holder[0].trace_tail() if holder else "(no trace)"
        raise AssertionError(
            f"seed {seed} failed: {exc}\n--- last events and messages ---\n{trace}\n"
            f"replay: {replay_command(seed)}"
        ) from exc
