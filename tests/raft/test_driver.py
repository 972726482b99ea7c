"""The asyncio driver with real storage and real cores, in one process over an in-process
transport (a second real Transport, like the simulator's network but on the event loop).

The transport checks, on every message it is handed, that what the message promises is
already durable in the sender's storage (Ready: persist before send)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable
from pathlib import Path

import pytest

from raft import demo_statemachine as dsm
from raft.config import Config
from raft.core import RaftCore
from raft.driver import Driver, NotLeaderError, ProposalOutcomeUnknown
from raft.messages import ConfState, Message, MessageType
from raft.storage import RaftStorage
from tests.waiting import async_wait_until

TICK_S = 0.01
CONFIG = Config(election_tick=10, heartbeat_tick=1)


class LocalNet:
    def __init__(self) -> None:
        self.drivers: dict[int, Driver] = {}
        self.cut: set[int] = set()
        self.checked = {"vote": 0, "append_ack": 0, "term": 0}

    def check_durable(self, m: Message) -> None:
        st = self.drivers[m.sender].storage
        if m.type not in (MessageType.PRE_VOTE, MessageType.PRE_VOTE_RESP):  # future terms
            assert st.hard_state.term >= m.term, (m, st.hard_state)
            self.checked["term"] += 1
        if m.type == MessageType.VOTE_RESP and not m.reject:
            assert st.hard_state.vote == m.to, (m, st.hard_state)
            self.checked["vote"] += 1
        if m.type == MessageType.APPEND_RESP and not m.reject:
            assert st.last_index >= m.index, (m, st.last_index)
            self.checked["append_ack"] += 1


class LocalTransport:
    def __init__(self, net: LocalNet, node_id: int) -> None:
        self.net, self.id = net, node_id

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def send(self, messages: Iterable[Message]) -> None:
        for m in messages:
            self.net.check_durable(m)
            target = self.net.drivers.get(m.to)
            if target is None or m.sender in self.net.cut or m.to in self.net.cut:
                continue
            asyncio.get_running_loop().call_soon(_deliver, target, m)


def _deliver(d: Driver, m: Message) -> None:
    if d._running:
        d.deliver([m])


def make_driver(net: LocalNet, root: Path, node: int, voters: set[int], *,
                snapshot_threshold: int = 10_000) -> Driver:
    storage = RaftStorage(str(root / f"n{node}"))
    st = storage.recovered()
    core = RaftCore(node, ConfState(voters=frozenset(voters)), random.Random(node), CONFIG,
                    hard_state=st.hard_state, snapshot=st.snapshot, entries=st.entries)
    d = Driver(core, storage, dsm.KVStateMachine(), LocalTransport(net, node),
               addresses={i: f"127.0.0.1:{7000 + i}" for i in voters}, tick_s=TICK_S,
               snapshot_threshold=snapshot_threshold)
    net.drivers[node] = d
    return d


async def start_cluster(root: Path, n: int, **kw) -> tuple[LocalNet, dict[int, Driver]]:
    net = LocalNet()
    voters = set(range(1, n + 1))
    drivers = {i: make_driver(net, root, i, voters, **kw) for i in voters}
    for d in drivers.values():
        await d.start()
    return net, drivers


async def leader_of(drivers: dict[int, Driver], exclude: set[int] = frozenset()) -> Driver:
    for _ in range(1000):
        leaders = [d for i, d in drivers.items() if d.is_leader and i not in exclude]
        if len(leaders) == 1:
            return leaders[0]
        await asyncio.sleep(0.01)
    raise AssertionError("no single leader")


async def stop_all(drivers: dict[int, Driver]) -> None:
    for d in drivers.values():
        await d.stop()


def run(coro) -> None:
    asyncio.run(asyncio.wait_for(coro, 60))


def test_messages_leave_only_after_their_state_is_durable(tmp_path: Path) -> None:
    """Raft §5.1 / Ready step 1-2: a vote or an append acknowledgement is sent only once the
    term, vote and entries it vouches for are in storage."""

    async def main() -> None:
        net, drivers = await start_cluster(tmp_path, 3)
        try:
            leader = await leader_of(drivers)
            for i in range(30):
                assert await leader.propose(dsm.put(f"k{i}", i)) == i + 1
        finally:
            await stop_all(drivers)
        assert net.checked["vote"] >= 1 and net.checked["append_ack"] >= 30

    run(main())


def test_propose_returns_the_state_machine_result_and_its_errors(tmp_path: Path) -> None:
    async def main() -> None:
        _, drivers = await start_cluster(tmp_path, 1)
        try:
            d = await leader_of(drivers)
            assert [await d.propose(dsm.incr("c")) for _ in range(3)] == [1, 2, 3]
            with pytest.raises(dsm.CommandError, match="unknown command"):
                await d.propose(b"\x91\xa4nope")
            with pytest.raises(ValueError, match="non-empty"):
                await d.propose(b"")
        finally:
            await stop_all(drivers)

    run(main())


def test_follower_refuses_with_the_leaders_id_and_address(tmp_path: Path) -> None:
    async def main() -> None:
        _, drivers = await start_cluster(tmp_path, 3)
        try:
            leader = await leader_of(drivers)
            follower = next(d for d in drivers.values() if d is not leader)
            # the follower hears the leader's first heartbeat
            await async_wait_until(lambda: follower.leader_id)
            with pytest.raises(NotLeaderError) as info:
                await follower.propose(dsm.put("k", 1))
            assert info.value.leader == leader.id
            assert info.value.leader_address == f"127.0.0.1:{7000 + leader.id}"
            assert str(leader.id) in str(info.value)
        finally:
            await stop_all(drivers)

    run(main())


def test_partitioned_leader_fails_waiting_proposals_instead_of_hanging(tmp_path: Path) -> None:
    """Check-quorum (dissertation §6.2): a leader cut off from the majority steps down, and
    the driver fails the proposals waiting on it with an outcome-unknown error."""

    async def main() -> None:
        net, drivers = await start_cluster(tmp_path, 3)
        try:
            old = await leader_of(drivers)
            await old.propose(dsm.put("before", 1))
            await async_wait_until(lambda: all(d.leader_id == old.id for d in drivers.values()))
            net.cut.add(old.id)
            with pytest.raises(ProposalOutcomeUnknown, match="lost leadership"):
                await old.propose(dsm.put("stranded", 1))
            assert not old.is_leader
            new = await leader_of(drivers, exclude={old.id})
            assert await new.propose(dsm.put("after", 1)) >= 1
            # each connected member learnt of two leaders, and counts both (/metrics)
            others = [d for d in drivers.values() if d is not old]
            await async_wait_until(lambda: all(d.leader_id == new.id for d in others))
            assert [d.status()["leader_changes"] for d in others] == [2, 2]
        finally:
            await stop_all(drivers)

    run(main())


def test_linearizable_read_on_a_follower_sees_the_latest_write(tmp_path: Path) -> None:
    """ReadIndex (dissertation §6.4) through a follower: the read waits for the leader's
    commit index to be applied locally."""

    async def main() -> None:
        _, drivers = await start_cluster(tmp_path, 3)
        try:
            leader = await leader_of(drivers)
            follower = next(d for d in drivers.values() if d is not leader)
            for i in range(5):
                await leader.propose(dsm.put("x", i))
                await follower.read_index()
                assert follower.sm.get("x") == i
        finally:
            await stop_all(drivers)

    run(main())


def test_restart_recovers_state_from_log_and_snapshot(tmp_path: Path) -> None:
    """Restart recovers from disk: the newest snapshot is restored and the log after it is
    applied again, giving the same state machine."""

    async def main() -> None:
        _, drivers = await start_cluster(tmp_path, 1, snapshot_threshold=10)
        d = await leader_of(drivers)
        for i in range(35):
            await d.propose(dsm.put(f"k{i}", i))
        before = (dict(d.sm.data), d.sm.digest, d.applied)
        assert d.storage.snapshot_index >= 10
        await d.stop()
        again = make_driver(LocalNet(), tmp_path, 1, {1}, snapshot_threshold=10)
        await again.start()
        try:
            await leader_of({1: again})
            await again.wait_applied(before[2])
            assert (dict(again.sm.data), again.sm.digest) == before[:2]
        finally:
            await again.stop()

    run(main())
