"""Fencing for downstream services: is this sequencer still current? (Chubby §2.4)

A service that accepts writes on behalf of lock holders (the KV store's fenced put) asks
the lock service whether the writer's sequencer is still the current grant of its lock,
and refuses the write otherwise. `SequencerCache` asks through any `checker` (the
in-process `LockServer.check_sequencer`, or `AsyncLockClient.check_sequencer` over HTTP),
keeps each answer for `ttl_s`, shares one question among concurrent callers of the same
token, and forgets the answers about a lock when a lock event names it (`on_event`, fed by
`follow(client)` or by whoever sees the events; `on_change(kind, name)`, fed by a voter's
own table through `LockServer.add_change_listener`).

The trade-off, as in Chubby: for up to `ttl_s` after a holder lost its lock, a cached
"current" may still let its write through, unless an event invalidated it first. A holder
whose session *expired* cannot be followed by another holder before its lock-delay ends,
so keep `ttl_s` well below the lock-delay (default 0.5 s against 10 s); a holder that
*released* the lock cleanly has stopped writing by its own choice.

    cache = SequencerCache(server.check_sequencer, rejected=SequencerRejected)
    coordinator = Coordinator(..., fence=cache.check)   # raises SequencerRejected
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from lockservice.client_errors import SequencerNotCurrent
from lockservice.events import Event, EventKind
from lockservice.sequencer import Sequencer

if TYPE_CHECKING:
    from lockservice.async_client import AsyncLockClient

log = logging.getLogger(__name__)

LOCK_EVENTS = {EventKind.LOCK_ACQUIRED, EventKind.LOCK_RELEASED, EventKind.LOCK_GRANTED,
               EventKind.SESSION_EXPIRED}


class SequencerCache:
    def __init__(self, checker: Callable[[str], Awaitable[bool]], *, ttl_s: float = 0.5,
                 max_entries: int = 10_000,
                 rejected: Callable[[str], Exception] = SequencerNotCurrent,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if ttl_s < 0 or max_entries < 1:
            raise ValueError("ttl_s is not negative and max_entries is positive")
        self.checker, self.ttl_s, self.max_entries = checker, ttl_s, max_entries
        self.rejected, self.clock = rejected, clock
        # token -> (lock name, current?, asked at); oldest first
        self._answers: OrderedDict[str, tuple[str, bool, float]] = OrderedDict()
        self._asking: dict[str, tuple[str, asyncio.Future[bool]]] = {}  # token -> (name, f)
        self._epoch: dict[str, int] = {}  # lock name -> invalidations so far
        self.asked = 0  # questions sent to the lock service (for tests and stats)

    async def check(self, token: str) -> None:
        """Return if `token` is current; raise `rejected(detail)` if not.

        A token that does not decode raises BadSequencerToken (a ValueError) before any
        question is asked: callers answer that as a bad request, not a stale writer.
        """
        if not await self.is_current(token):
            name = Sequencer.from_token(token).name
            raise self.rejected(f"sequencer of lock {name!r} is not current")

    fence = check

    async def is_current(self, token: str) -> bool:
        seq = Sequencer.from_token(token)
        hit = self._answers.get(token)
        if hit is not None and self.clock() - hit[2] < self.ttl_s:
            return hit[1]
        pending = self._asking.get(token)
        if pending is not None:
            return await asyncio.shield(pending[1])
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._asking[token] = (seq.name, future)
        epoch = self._epoch.get(seq.name, 0)
        asked_at = self.clock()
        try:
            self.asked += 1
            current = await self.checker(token)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody waits
            raise
        else:
            future.set_result(current)
            if self._epoch.get(seq.name, 0) == epoch:  # no event overtook the question
                self._remember(token, seq.name, current, asked_at)
            return current
        finally:
            del self._asking[token]

    def invalidate(self, name: str) -> None:
        """Forget every answer about lock `name` (an event says its holders changed)."""
        self._epoch[name] = self._epoch.get(name, 0) + 1
        for token in [t for t, (n, _, _) in self._answers.items() if n == name]:
            del self._answers[token]

    def on_event(self, event: Event) -> None:
        self.on_change(event.kind, event.name)

    def on_change(self, kind: EventKind, name: str) -> None:
        """An event of `kind` about `name`: forget the lock's answers if its holders changed
        (a voter feeds this from its own table: `LockServer.add_change_listener`)."""
        if kind in LOCK_EVENTS:
            self.invalidate(name)

    async def follow(self, client: AsyncLockClient, prefix: str = "") -> None:
        """Invalidate from `client`'s watch on `prefix` until cancelled or the session ends."""
        watch = await client.watch(prefix)
        try:
            async for event in watch:
                self.on_event(event)
        finally:
            watch.close()

    def _remember(self, token: str, name: str, current: bool, asked_at: float) -> None:
        self._answers[token] = (name, current, asked_at)
        self._answers.move_to_end(token)
        while len(self._answers) > self.max_entries:
            self._answers.popitem(last=False)
        if len(self._epoch) > 4 * self.max_entries:  # names with no answer left
            live = {n for n, _, _ in self._answers.values()}
            live |= {n for n, _ in self._asking.values()}
            self._epoch = {n: e for n, e in self._epoch.items() if n in live}


__all__ = ["SequencerCache"]
