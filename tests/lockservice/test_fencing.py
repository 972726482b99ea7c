"""Chubby §2.4 sequencers checked by a downstream service: `SequencerCache`.

The cache rules run against a plain async function standing in for the question (pure
logic, a fake clock); the end-to-end cases ask three real members.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from lockservice.client import AsyncLockClient, SequencerNotCurrent
from lockservice.errors import BadSequencerToken
from lockservice.events import Event, EventKind
from lockservice.fencing import SequencerCache
from lockservice.sequencer import LockMode, Sequencer
from tests.lockservice.cluster import LockCluster
from tests.lockservice.shared_cluster import shared_lock_cluster

A1 = Sequencer("a", LockMode.EXCLUSIVE, 1, 7).to_token()
A2 = Sequencer("a", LockMode.EXCLUSIVE, 2, 8).to_token()
B1 = Sequencer("b", LockMode.SHARED, 3, 7).to_token()


class Answers:
    """The lock service's answers, set by the test; counts the questions."""

    def __init__(self) -> None:
        self.current: set[str] = set()
        self.questions: list[str] = []
        self.gate: asyncio.Event | None = None

    async def __call__(self, token: str) -> bool:
        self.questions.append(token)
        if self.gate is not None:
            await self.gate.wait()
        return token in self.current


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Rejected(Exception):
    pass


def test_answers_are_cached_for_ttl_then_asked_again() -> None:
    async def run() -> None:
        answers, clock = Answers(), Clock()
        cache = SequencerCache(answers, ttl_s=1.0, clock=clock, rejected=Rejected)
        answers.current = {A1}
        await cache.check(A1)
        await cache.check(A1)
        assert answers.questions == [A1]
        answers.current = set()
        clock.now = 0.99
        await cache.check(A1)  # still cached: the documented window
        clock.now = 1.0
        with pytest.raises(Rejected, match="'a'"):
            await cache.check(A1)
        assert answers.questions == [A1, A1]

    asyncio.run(run())


def test_a_lock_event_forgets_the_answers_about_that_lock_only() -> None:
    async def run() -> None:
        answers = Answers()
        answers.current = {A1, B1}
        cache = SequencerCache(answers, ttl_s=60)
        assert await cache.is_current(A1) and await cache.is_current(B1)
        answers.current = {A2, B1}
        cache.on_event(Event(1, EventKind.ENTRY_CHANGED, "a", version=3))  # not a lock event
        assert await cache.is_current(A1)
        cache.on_event(Event(2, EventKind.SESSION_EXPIRED, "a", session=7, generation=1))
        with pytest.raises(SequencerNotCurrent):
            await cache.check(A1)
        assert await cache.is_current(B1)
        assert answers.questions == [A1, B1, A1]

    asyncio.run(run())


def test_an_event_during_the_question_keeps_its_answer_out_of_the_cache() -> None:
    async def run() -> None:
        answers = Answers()
        answers.current = {A1}
        answers.gate = asyncio.Event()
        cache = SequencerCache(answers, ttl_s=60)
        first = asyncio.create_task(cache.is_current(A1))
        second = asyncio.create_task(cache.is_current(A1))  # shares the question
        await asyncio.sleep(0)
        cache.invalidate("a")
        answers.gate.set()
        assert await first and await second
        assert answers.questions == [A1]
        answers.gate = None
        answers.current = set()
        assert not await cache.is_current(A1)  # the overtaken answer was not kept

    asyncio.run(run())


def test_a_voters_table_invalidates_its_cache_without_watches() -> None:
    """A voter feeds the cache from its own table (LockServer.add_change_listener does
    this wiring): a release and a new grant make the cached "current" go at once, long
    before the answer's TTL, though no session watches the lock."""
    from lockservice import commands as c
    from lockservice.fsm import LockStateMachine
    from lockservice.results import Granted

    async def run() -> None:
        fsm = LockStateMachine()
        cache = SequencerCache(lambda token: _now_current(fsm, token), ttl_s=3600.0,
                               rejected=Rejected)
        seen: list[tuple[EventKind, str]] = []
        fsm.change_listener = lambda kind, name: (seen.append((kind, name)),
                                                  cache.on_change(kind, name))
        a = fsm.execute(1, c.OpenSession(10_000, now=0)).session  # type: ignore[union-attr]
        b = fsm.execute(2, c.OpenSession(10_000, now=0)).session  # type: ignore[union-attr]
        got = fsm.execute(3, c.Acquire(a, "job", LockMode.EXCLUSIVE, False, now=0))
        assert isinstance(got, Granted)
        token = got.sequencer.to_token()
        await cache.check(token)
        fsm.execute(4, c.Release(a, "job"))
        fsm.execute(5, c.Acquire(b, "job", LockMode.EXCLUSIVE, False, now=0))
        with pytest.raises(Rejected):
            await cache.check(token)
        assert cache.asked == 2
        assert (EventKind.LOCK_RELEASED, "job") in seen and (EventKind.LOCK_ACQUIRED, "job") in seen

    asyncio.run(run())


async def _now_current(fsm: object, token: str) -> bool:
    return fsm.check_sequencer(Sequencer.from_token(token))  # type: ignore[attr-defined]


def test_errors_reach_every_waiter_and_nothing_is_cached() -> None:
    async def run() -> None:
        async def down(token: str) -> bool:
            await asyncio.sleep(0.01)
            raise ConnectionError("lock service down")

        cache = SequencerCache(down)
        results = await asyncio.gather(cache.check(A1), cache.check(A1), return_exceptions=True)
        assert all(isinstance(r, ConnectionError) for r in results)
        assert cache.asked == 1
        with pytest.raises(ConnectionError):
            await cache.check(A1)
        assert cache.asked == 2

    asyncio.run(run())


def test_hostile_tokens_are_refused_before_any_question() -> None:
    async def run() -> None:
        answers = Answers()
        cache = SequencerCache(answers)
        for bad in ("", "!!", "x" * 5000, A1 + "A", "bm90IG1zZ3BhY2s"):
            with pytest.raises(BadSequencerToken):
                await cache.check(bad)
        assert answers.questions == []

    asyncio.run(run())
    with pytest.raises(ValueError):
        SequencerCache(Answers(), ttl_s=-1)


def test_the_cache_stays_bounded() -> None:
    async def run() -> None:
        answers = Answers()
        cache = SequencerCache(answers, ttl_s=60, max_entries=3)
        tokens = [Sequencer(f"n{i}", LockMode.EXCLUSIVE, i + 1, 1).to_token() for i in range(10)]
        for t in tokens:
            await cache.is_current(t)
        await cache.is_current(tokens[-1])
        await cache.is_current(tokens[0])
        assert len(answers.questions) == 11  # the oldest was dropped, the newest kept

    asyncio.run(run())


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> LockCluster:
    return shared_lock_cluster(request, tmp_path_factory)


def test_a_stale_holder_is_fenced_once_its_lock_moves_on(cluster: LockCluster) -> None:
    """§2.4: the released holder's sequencer is rejected at once (event), well within the
    cache's long TTL; the new holder's is accepted."""
    members = [f"127.0.0.1:{p}" for p in cluster.ports.values()]

    async def run() -> None:
        async with AsyncLockClient(members, ttl_ms=5000) as service, \
                AsyncLockClient(members, ttl_ms=5000) as a, \
                AsyncLockClient(members, ttl_ms=5000) as b:
            cache = SequencerCache(service.check_sequencer, ttl_s=3600, rejected=Rejected)
            follower = asyncio.create_task(cache.follow(service, "fence/"))
            await asyncio.sleep(0.2)
            old = await a.acquire("fence/lock")
            await cache.check(old.token)
            await a.release(old)
            new = await b.acquire("fence/lock", timeout=10)

            async def fenced() -> bool:
                try:
                    await cache.check(old.token)
                except Rejected:
                    return True
                return False

            deadline = time.monotonic() + 30
            while not await fenced() and time.monotonic() < deadline:
                await asyncio.sleep(0.02)  # until the release event reaches the cache
            assert cache.asked == 2  # one question before, one after the invalidation
            await cache.check(new.token)
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)

    asyncio.run(run())
