"""Chubby §2.9 on three real members: idle sessions kept alive through followers survive a
leader SIGKILL (issue 7: "a leader change never kills a healthy session").

Hundreds of sessions, each kept alive by back-to-back long-polling KeepAlives (what a client
with watches does, and what bench/lock.py's keepalive phase does), sent to the two followers
as a client that sticks to the member that answered does; the followers relay them to the
leader. Some sessions have a long TTL, so the leader holds their polls for many seconds
(until a third of the TTL is left); the others have a short TTL. The leader is SIGKILLed
and the survivors elect a new one. No session may expire: a relayed long poll must never
delay another session's KeepAlive, and the new leader must renew each session at its first
KeepAlive rather than hold them all until the fresh leases it granted run low together.

Before the fix this lost sessions: a member relayed through an HTTP pool of 100 connections,
so 100 held long polls made every other relayed KeepAlive wait (bench/lock.py saw 57 of
1,000 sessions expire across a leader change).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import aiohttp

from tests.lockservice.cluster import LockCluster, running_cluster

LONG_TTL_MS = 30_000  # held about 20 s at the leader: longer than the whole test
SHORT_TTL_MS = 3_000
LONG_PER_FOLLOWER = 105  # more than aiohttp's default pool of 100 connections
SHORT_PER_FOLLOWER = 60


async def _keep_sessions(cluster: LockCluster) -> tuple[Counter[int], int, int]:
    """Open the sessions, keep them alive through the followers, SIGKILL the leader, keep
    going for two short TTLs; returns (statuses other than 200 answered, sessions opened,
    the new leader)."""
    leader = await asyncio.to_thread(cluster.leader)
    followers = [i for i in cluster.ids if i != leader]
    url = {i: f"http://127.0.0.1:{p}" for i, p in cluster.ports.items()}
    statuses: Counter[int] = Counter()
    stop = asyncio.Event()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:

        async def open_session(ttl_ms: int) -> int:
            for _ in range(100):
                try:
                    async with http.post(url[leader] + "/lock/v1/sessions",
                                         json={"ttl_ms": ttl_ms}) as r:
                        if r.status == 201:
                            return int((await r.json())["session"])
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
            raise AssertionError("could not open a session")

        async def keep(member: int, ttl_ms: int) -> None:
            sid = await open_session(ttl_ms)
            opened.append(sid)
            path = f"/lock/v1/sessions/{sid}/keepalive"
            while not stop.is_set():
                try:
                    async with http.post(url[member] + path, json={"ack": 0}) as r:
                        await r.read()
                        if r.status != 200:
                            statuses[r.status] += 1
                        if r.status in (404, 410):
                            return  # expired: the failure this test looks for
                        if r.status != 200:
                            await asyncio.sleep(0.05)
                except aiohttp.ClientError:
                    await asyncio.sleep(0.05)  # the member went away: a client retries

        opened: list[int] = []
        tasks = [asyncio.create_task(keep(m, ttl))
                 for m in followers
                 for ttl in [LONG_TTL_MS] * LONG_PER_FOLLOWER + [SHORT_TTL_MS] * SHORT_PER_FOLLOWER]
        while len(opened) < len(tasks):
            await asyncio.sleep(0.1)
        await asyncio.sleep(SHORT_TTL_MS / 1000)
        await asyncio.to_thread(cluster.kill, leader)
        # The new leader's fresh leases end a TTL after its election (well under a second
        # after the kill); two TTLs let any expiry happen and be seen.
        await asyncio.sleep(2 * SHORT_TTL_MS / 1000)
        new_leader = await asyncio.to_thread(cluster.leader)
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return statuses, len(opened), new_leader


def test_idle_sessions_kept_alive_through_followers_survive_a_leader_sigkill(
        tmp_path: Path) -> None:
    with running_cluster(tmp_path) as cluster:
        statuses, opened, new_leader = asyncio.run(_keep_sessions(cluster))
        status = cluster.status(new_leader)
        assert status is not None
        assert statuses[410] == 0 and statuses[404] == 0, (
            f"sessions expired or unknown: {dict(statuses)}")
        assert status["sessions"] == opened == 2 * (LONG_PER_FOLLOWER + SHORT_PER_FOLLOWER)
