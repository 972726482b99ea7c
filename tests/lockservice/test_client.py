"""Chubby §2.8 (sessions, KeepAlives, jeopardy, grace) and §2.4 (locks, sequencers), from
the client library's side, against three real members (tests/lockservice/cluster.py).

Times compared across clients are `time.monotonic()` readings in this one process.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from lockservice.client import (
    AsyncLockClient,
    LockBusy,
    LockClient,
    LockLost,
    SessionLost,
    VersionMismatch,
)
from lockservice.events import EventKind
from lockservice.lease import LeaseState
from lockservice.members import parse_members
from lockservice.sequencer import Sequencer
from tests.lockservice.cluster import LockCluster
from tests.lockservice.proxy import Partition
from tests.lockservice.shared_cluster import members, shared_lock_cluster
from tests.waiting import wait_until


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> LockCluster:
    return shared_lock_cluster(request, tmp_path_factory)



def test_lock_yields_a_sequencer_and_is_released_on_exit(cluster: LockCluster) -> None:
    """§2.4: a holder gets a sequencer; the lock is exclusive; generations increase."""
    with LockClient(members(cluster), ttl_ms=5000) as a, \
            LockClient(members(cluster), ttl_ms=5000) as b:
        with a.lock("client/basic") as held:
            assert held.valid and held.session == a.session_id
            assert Sequencer.from_token(held.token) == held.sequencer
            assert a.check_sequencer(held.token)
            assert b.try_acquire("client/basic") is None
            with pytest.raises(LockBusy):
                b.acquire("client/basic", timeout=0.2)
        assert not held.valid
        with pytest.raises(LockLost):
            held.check()
        second = b.try_acquire("client/basic")
        assert second is not None and second.generation > held.generation
        assert not a.check_sequencer(held.token) and b.check_sequencer(second.token)
        holders = b.lock_status("client/basic")["holders"]
        assert [h["session"] for h in holders] == [b.session_id]


def test_a_waiter_is_granted_the_lock_when_the_holder_releases(cluster: LockCluster) -> None:
    with LockClient(members(cluster), ttl_ms=5000) as a, \
            LockClient(members(cluster), ttl_ms=5000) as b:
        held = a.acquire("client/wait")
        got = []
        waiter = threading.Thread(target=lambda: got.append(b.acquire("client/wait", timeout=30)))
        waiter.start()
        assert wait_until(lambda: b.lock_status("client/wait")["waiters"], 30)
        a.release(held)
        waiter.join(60)
        assert got and got[0].valid and got[0].generation > held.generation


def test_entries_compare_and_set_and_ephemerals(cluster: LockCluster) -> None:
    with LockClient(members(cluster), ttl_ms=5000) as a:
        assert a.get("client/e") is None
        v1 = a.put("client/e", b"\x00one", expected_version=0)
        assert a.get("client/e").value == b"\x00one"
        with pytest.raises(VersionMismatch):
            a.cas("client/e", b"two", v1 + 1000)
        v2 = a.cas("client/e", b"two", v1)
        assert v2 > v1 and a.get("client/e", stale=False).version == v2
        with pytest.raises(VersionMismatch):
            a.delete("client/e", expected_version=v1)
        a.delete("client/e", expected_version=v2)
        assert a.get("client/e") is None
        a.put("client/eph", b"mine", ephemeral=True)
        with LockClient(members(cluster), ttl_ms=5000) as other:
            assert other.get("client/eph").value == b"mine"
            a.close()  # ends the session: its ephemeral entry goes with it
            assert other.get("client/eph") is None


def test_watch_delivers_lock_and_entry_events_in_order(cluster: LockCluster) -> None:
    """§2.5: events on watched names arrive through the KeepAlive."""
    with LockClient(members(cluster), ttl_ms=5000) as a, \
            LockClient(members(cluster), ttl_ms=5000) as b:
        watch = a.watch("client/w/")
        held = b.acquire("client/w/lock")
        b.put("client/w/entry", b"x")
        b.put("client/other", b"not watched")
        b.release(held)
        kinds = [(e.kind, e.name) for e in (watch.next(30) for _ in range(3)) if e]
        assert kinds == [(EventKind.LOCK_ACQUIRED, "client/w/lock"),
                         (EventKind.ENTRY_CHANGED, "client/w/entry"),
                         (EventKind.LOCK_RELEASED, "client/w/lock")]
        assert watch.next(0.3) is None  # the unwatched name did not come through


def test_a_cut_off_holder_knows_before_anyone_else_gets_the_lock(
        cluster: LockCluster) -> None:
    """§2.8: the local lease ends before the server's, so jeopardy comes before any new
    grant (lock-delay 0 here, so only the lease protects the lock)."""
    partition = Partition(list(cluster.ports.values()))
    times: dict[str, float] = {}
    events = []

    def on(state: str):  # the last jeopardy counts (a loaded machine may blink before)
        return lambda t: (times.__setitem__(state, time.monotonic()), events.append(t))

    try:
        # 3 s: a TTL short enough for a quick test, long enough that a loaded machine's
        # round trips stay within the keepalive's budget (lockservice/keepalive.py)
        a = LockClient(partition.addresses, ttl_ms=3000, grace_ms=1000,
                       on_jeopardy=on("jeopardy"), on_lost=on("lost"))
        with a, LockClient(members(cluster), ttl_ms=5000) as b:
            held = a.acquire("client/cut", lock_delay_ms=0)
            partition.cut()
            granted = b.acquire("client/cut", timeout=60)
            times["granted"] = time.monotonic()
            assert times["jeopardy"] < times["granted"]
            assert not held.valid and granted.generation > held.generation
            assert wait_until(lambda: a.state is LeaseState.LOST, 30)
            # the callback runs on the client's own thread just after the state changes
            assert wait_until(lambda: events and events[-1].new is LeaseState.LOST, 30)
            assert [(t.old, t.new) for t in events[-2:]] == [
                (LeaseState.HEALTHY, LeaseState.JEOPARDY), (LeaseState.JEOPARDY, LeaseState.LOST)]
            with pytest.raises(SessionLost):
                a.acquire("client/cut2")
    finally:
        partition.close()


def test_failover_keeps_sessions_and_locks_and_sequencers_increase(
        cluster: LockCluster) -> None:
    """§2.8/§2.9: the leader dies; the session and its lock survive on the new leader,
    and the next grant's generation is higher than any before the failover."""

    async def run() -> None:
        async with AsyncLockClient(members(cluster), ttl_ms=3000) as a, \
                AsyncLockClient(members(cluster), ttl_ms=3000) as b:
            held = await a.acquire("client/failover")
            old = cluster.leader()
            cluster.kill(old)
            try:
                new = await asyncio.to_thread(cluster.leader)
                assert new != old
                assert await b.try_acquire("client/failover") is None
                info = await b.lock_status("client/failover")
                assert [h["session"] for h in info["holders"]] == [a.session_id]
                deadline = time.monotonic() + 30
                while not held.valid and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                assert held.valid and a.state is LeaseState.HEALTHY
                await a.release(held)
                again = await b.acquire("client/failover", timeout=10)
                assert again.generation > held.generation
            finally:
                await asyncio.to_thread(cluster.start, old)

    asyncio.run(run())


def test_member_lists_are_checked() -> None:
    assert parse_members("1=127.0.0.1:1, 127.0.0.1:2") == ["127.0.0.1:1", "127.0.0.1:2"]
    for bad in ("", "host", "h:0", "h:x", ":80", "h:65536"):
        with pytest.raises(ValueError):
            parse_members(bad)
    with pytest.raises(ValueError):
        AsyncLockClient([])
    for margin in (100, 34):
        with pytest.raises(ValueError):
            AsyncLockClient(["127.0.0.1:1"], ttl_ms=100, safety_margin_ms=margin)


def test_members_that_answer_junk_are_passed_over(cluster: LockCluster) -> None:
    """Hostile or broken members (not HTTP, not JSON, not an object) never reach the
    caller as answers: the client moves on to the next member."""
    answers = [b"\x00\xffnot http at all\r\n\r\n",
               b"HTTP/1.1 201 Created\r\nContent-Length: 6\r\n\r\n<html>",
               b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
               b"Content-Length: 2\r\n\r\n[]"]

    async def run() -> None:
        def serve(answer: bytes):
            async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                await reader.read(65536)
                writer.write(answer)
                await writer.drain()
                writer.close()
            return handle

        servers = [await asyncio.start_server(serve(a), "127.0.0.1", 0) for a in answers]
        try:
            junk = [f"127.0.0.1:{s.sockets[0].getsockname()[1]}" for s in servers]
            async with AsyncLockClient(junk + members(cluster), ttl_ms=5000) as c:
                held = await c.acquire("client/junk")
                assert held.valid and await c.check_sequencer(held.token)
        finally:
            for s in servers:
                s.close()
                await s.wait_closed()

    asyncio.run(run())


def test_jeopardy_then_recovery_within_the_grace_period_keeps_the_lock(
        cluster: LockCluster) -> None:
    """§2.8: a client in jeopardy that reaches a member again before its grace period ends
    is safe again: the session and its lock were kept, with the same sequencer."""
    partition = Partition(list(cluster.ports.values()))
    seen: list[tuple[LeaseState, LeaseState]] = []

    def on(t) -> None:
        seen.append((t.old, t.new))

    try:
        # A wide margin: jeopardy comes 1.5 s before the server's lease could end, the time
        # the client has to reach a member again after the partition heals.
        with LockClient(partition.addresses, ttl_ms=6000, safety_margin_ms=1500,
                        on_jeopardy=on, on_safe=on, on_lost=on) as a:
            held = a.acquire("client/blink")
            partition.cut()
            assert wait_until(lambda: a.state is LeaseState.JEOPARDY, 30)
            assert not held.valid
            partition.heal()
            assert wait_until(lambda: a.state is LeaseState.HEALTHY, 30)
            assert held.valid and a.check_sequencer(held.token)
            assert (LeaseState.HEALTHY, LeaseState.JEOPARDY) in seen
            assert seen[-1] == (LeaseState.JEOPARDY, LeaseState.HEALTHY)
            assert all(new is not LeaseState.LOST for _, new in seen)
    finally:
        partition.close()


def test_keepalive_events_are_parsed_strictly() -> None:
    from lockservice.events import Event
    from lockservice.handles import event_from_json, parse_mode

    good = {"seq": 3, "kind": "lock_released", "name": "a/b", "session": 7, "generation": 9,
            "version": 0}
    assert event_from_json(good) == Event(3, EventKind.LOCK_RELEASED, "a/b", 7, 9, 0)
    assert event_from_json({**good, "kind": 4}).kind is EventKind.ENTRY_CHANGED
    for bad in ([], "x", {**good, "kind": "nope"}, {**good, "kind": 99}, {**good, "seq": "3"},
                {**good, "seq": True}, {**good, "name": 5}, {**good, "kind": None}):
        with pytest.raises(ValueError):
            event_from_json(bad)
    assert parse_mode("SHARED").name == "SHARED"
    with pytest.raises(ValueError):
        parse_mode("both")


@pytest.mark.slow
def test_cut_off_holders_always_know_first_whenever_the_cut_comes(cluster: LockCluster) -> None:
    """The §2.8 promise above, repeated with the cut at random points of the lease cycle."""
    import random

    rng = random.Random(7)
    for round_ in range(12):
        partition = Partition(list(cluster.ports.values()))
        jeopardy: list[float] = []
        try:
            a = LockClient(partition.addresses, ttl_ms=3000, grace_ms=500,
                           on_jeopardy=lambda t, seen=jeopardy: seen.append(time.monotonic()))
            with a, LockClient(members(cluster), ttl_ms=5000) as b:
                name = f"client/stress-{round_}"
                held = a.acquire(name, lock_delay_ms=0)
                time.sleep(rng.uniform(0, 3))
                partition.cut()
                granted = b.acquire(name, timeout=60)
                at = time.monotonic()
                assert jeopardy and jeopardy[-1] < at, round_
                assert not held.valid and granted.generation > held.generation
        finally:
            partition.close()
