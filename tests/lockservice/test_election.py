"""The election helper (lockservice/election.py) on three real members: one leader at a
time (Chubby §2.4, the lock), a new leader when the old one's session ends (§2.8), records
and observers, and `kv elect` processes whose leader is SIGKILLed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lockservice.async_client import AsyncLockClient
from lockservice.client import LockClient
from lockservice.client_errors import ClientError, LockLost
from lockservice.election import Election, Leader, decode_leader, encode_leader
from lockservice.lease import LeaseState
from tests.lockservice.cluster import REPO, LockCluster
from tests.lockservice.proxy import Partition
from tests.lockservice.shared_cluster import members, shared_lock_cluster
from tests.lockservice.test_lock_cli import CHILD, lines
from tests.waiting import wait_until


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> LockCluster:
    return shared_lock_cluster(request, tmp_path_factory)



def test_records_round_trip_and_junk_is_refused() -> None:
    record = Leader("jobs", b"\x00host:1", "tok", 5, 9)
    assert decode_leader("jobs", encode_leader(record)) == record
    for junk in (b"", b"[]", b'{"value": "!!", "sequencer": "t", "generation": 1, '
                 b'"session": 1}', b'{"value": "", "sequencer": 1, "generation": 1, '
                 b'"session": 1}', b'{"value": "", "sequencer": "t", "generation": true, '
                 b'"session": 1}'):
        with pytest.raises(ClientError):
            decode_leader("jobs", junk)


def test_campaign_resign_and_observe(cluster: LockCluster) -> None:
    async def run() -> None:
        async with AsyncLockClient(members(cluster), ttl_ms=5000) as a, \
                AsyncLockClient(members(cluster), ttl_ms=5000) as b, \
                AsyncLockClient(members(cluster), ttl_ms=5000) as c:
            ea, eb, watcher = Election(a), Election(b), Election(c)
            assert await watcher.leader("el/jobs") is None
            seen: list[Leader | None] = []

            async def observe() -> None:
                async for leader in watcher.observe("el/jobs"):
                    seen.append(leader)

            observer = asyncio.create_task(observe())
            first = await ea.campaign("el/jobs", "host-a")
            assert ea.is_leader and ea.sequencer == first.sequencer
            with pytest.raises(ClientError):
                await ea.campaign("el/other", "again")  # one campaign at a time
            assert await watcher.leader("el/jobs") == first
            waiting = asyncio.create_task(eb.campaign("el/jobs", b"host-b"))
            await asyncio.sleep(0.3)
            assert not waiting.done() and not eb.is_leader  # at most one leader
            await ea.resign()
            assert not ea.is_leader
            with pytest.raises(LockLost):
                ea.check()
            second = await asyncio.wait_for(waiting, 30)
            assert second.value == b"host-b" and second.generation > first.generation
            assert await c.check_sequencer(second.sequencer)
            assert not await c.check_sequencer(first.sequencer)
            deadline = time.monotonic() + 30
            while (not seen or seen[-1] != second) and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            leaders = [s for s in seen if s is not None]
            assert seen[0] in (None, first) and leaders[-1] == second
            assert [x.generation for x in leaders] == sorted({x.generation for x in leaders})
            observer.cancel()
            await asyncio.gather(observer, return_exceptions=True)

    asyncio.run(run())


def test_the_sync_client_campaigns_observes_and_resigns(cluster: LockCluster) -> None:
    with LockClient(members(cluster), ttl_ms=5000) as a, \
            LockClient(members(cluster), ttl_ms=5000) as b:
        changes = b.election().observe("el/sync")
        assert next(changes) is None
        election = a.election()
        won = election.campaign("el/sync", "primary-1")
        assert election.is_leader and election.sequencer == won.sequencer
        assert next(changes) == won == b.election().leader("el/sync")
        election.resign()
        assert next(changes) is None and not election.is_leader
        changes.close()


def test_a_cut_off_leader_stops_leading_before_another_is_elected(
        cluster: LockCluster) -> None:
    partition = Partition(list(cluster.ports.values()))
    times: dict[str, float] = {}

    async def run() -> None:
        a = AsyncLockClient(partition.addresses, ttl_ms=3000, grace_ms=500,
                            on_jeopardy=lambda t: times.__setitem__("a out", time.monotonic()))
        async with a, AsyncLockClient(members(cluster), ttl_ms=5000) as b:
            ea, eb = Election(a, lock_delay_ms=0), Election(b, lock_delay_ms=0)
            await ea.campaign("el/cut", "a")
            partition.cut()
            await eb.campaign("el/cut", "b", timeout=60)
            times["b in"] = time.monotonic()
            assert times["a out"] < times["b in"] and not ea.is_leader
            assert (await eb.leader("el/cut")).value == b"b"
            deadline = time.monotonic() + 30
            while a.state is not LeaseState.LOST and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert a.state is LeaseState.LOST

    try:
        asyncio.run(run())
    finally:
        partition.close()


def test_kv_elect_processes_one_leader_then_a_new_one_after_sigkill(
        cluster: LockCluster, tmp_path: Path) -> None:
    child = tmp_path / "child.py"
    child.write_text(CHILD)
    env = {**os.environ, "RINGLOCK_LOCK_MEMBERS": ",".join(members(cluster))}
    logs = [tmp_path / f"c{i}.log" for i in range(3)]
    procs = [subprocess.Popen(
        [sys.executable, "-m", "lockservice.cli", "elect", "el/sched", "--value", f"c{i}",
         "--ttl", "3000", "--lock-delay", "300", "--", sys.executable, str(child), str(log)],
        cwd=REPO, env=env, stderr=subprocess.DEVNULL) for i, log in enumerate(logs)]
    try:
        def started() -> list[int]:
            return [i for i, log in enumerate(logs) if lines(log, "start")]

        assert wait_until(lambda: len(started()) >= 1, 60)
        time.sleep(0.5)  # the others are queued on the lock, not running
        (old,) = started()
        leader = asyncio.run(_leader(members(cluster), "el/sched"))
        assert leader is not None and leader.value == f"c{old}".encode()
        procs[old].send_signal(signal.SIGKILL)
        procs[old].wait(10)
        assert wait_until(lambda: len(started()) == 2, 60)
        (new,) = [i for i in started() if i != old]
        last_beat = float(lines(logs[old], "beat")[-1][0])
        first_new = float(lines(logs[new], "start")[0][1])
        assert last_beat < first_new  # the old leader's command was gone first
        time.sleep(0.3)
        assert len(started()) == 2
        leader = asyncio.run(_leader(members(cluster), "el/sched"))
        assert leader is not None and leader.value == f"c{new}".encode()
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


async def _leader(addresses: list[str], name: str) -> Leader | None:
    async with AsyncLockClient(addresses) as client:
        return await Election(client).leader(name)
