"""Hinted handoff: a background task that delivers held hints to owners that are back.

Theory of operation (Dynamo §4.6: "once the node detects that A has recovered, it will
attempt to deliver the replica to A; once the transfer succeeds, D may delete the object")

- Every `interval_s` (or at once after `wake()`), one round: for each owner with hints,
  in name order, that `is_alive(owner)` says is up and whose back-off has run out, read
  `batch` hints (`HintStore.pending`), send them with `deliver(owner, items)`, then
  `HintStore.remove_many` them. Removal is conditional: a hint that grew while its batch
  was in flight stays and goes in a later batch, so a hint is deleted only after the
  exact state deleted reached the owner. The owner merges (`vclock.sync`), so delivering
  a state twice (a crash between deliver and remove) is harmless.
- A round for one owner goes on while batches remove something and the owner stays
  alive; a batch that removed nothing (every hint changed meanwhile) ends it until the
  next round, so a stream of new hints cannot pin the task on one owner.
- Failure (deliver raised or timed out, or a hint could not be read): the batch stays,
  the owner backs off exponentially (interval_s doubling up to max_backoff_s) and the
  next owner is tried; a success resets the back-off. The task logs each failure at
  WARNING and never dies of one; `stop()` cancels it, which may cut a delivery short
  (its hints stay).
- Logged at INFO: when a handoff to an owner starts (hints pending) and ends (delivered,
  failed, still pending). `stats()` counts hints delivered, hints in failed batches and
  failed attempts (`errors`), in total and per owner, with what is pending.

- An owner that is no longer a ring member (it left, or an operator removed it while it
  was dead) will never come back for its hints, and the write they hold may be on no
  current replica. With `ring` (the node's current ring) and `n`, such hints are sent
  instead to the key's current primaries that are alive, and deleted only once every one
  of them has merged them; a key with no live primary keeps its hint for a later round.

`deliver` is the node's internal `merge_many` call on the owner; it must raise on any
failure (a reply that is not a success), since silence means the hints are deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from kvstore import quorum
from kvstore.hints import HintStore
from kvstore.ring import Ring
from kvstore.vclock import SiblingSet

logger = logging.getLogger(__name__)

Deliver = Callable[[str, list[tuple[bytes, SiblingSet]]], Awaitable[None]]


@dataclass(slots=True)
class _Owner:
    delivered: int = 0
    failed: int = 0
    errors: int = 0  # failed attempts (a hint that cannot be read fails with no batch)
    failures_in_a_row: int = 0
    retry_at: float = 0.0  # time.monotonic() before which the owner is skipped


class Handoff:
    """Delivers `hints` to their owners in the background. See the module docstring."""

    def __init__(self, hints: HintStore, *, deliver: Deliver,
                 is_alive: Callable[[str], bool], interval_s: float = 1.0,
                 batch: int = 256, max_backoff_s: float = 30.0,
                 deliver_timeout_s: float = 30.0,
                 ring: Callable[[], Ring] | None = None, n: int = 3) -> None:
        if batch < 1 or interval_s <= 0 or max_backoff_s < interval_s \
                or deliver_timeout_s <= 0:
            raise ValueError("need batch >= 1 and 0 < interval_s <= max_backoff_s,"
                             " deliver_timeout_s > 0")
        self.hints = hints
        self._deliver = deliver
        self._is_alive = is_alive
        self.interval_s = interval_s
        self.batch = batch
        self.max_backoff_s = max_backoff_s
        self.deliver_timeout_s = deliver_timeout_s
        self._ring, self._n = ring, n
        self._owners: dict[str, _Owner] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._rounds = 0

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="hinted-handoff")

    async def stop(self) -> None:
        """Cancel the task and wait for it; hints in a cut-short delivery stay."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def wake(self) -> None:
        """Start the next round now (e.g. the failure detector saw an owner come back)."""
        self._wake.set()

    async def _run(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception:  # a bug must not end handoff for good
                logger.exception("hinted handoff round failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval_s)
            self._wake.clear()

    async def run_once(self) -> int:
        """One round over every owner that is alive and not backing off; returns the
        number of hints delivered."""
        self._rounds += 1
        delivered = 0
        now = time.monotonic()
        for owner in sorted(self.hints.owners()):
            state = self._owners.setdefault(owner, _Owner())
            if state.retry_at > now:
                continue
            if self._ring is not None and owner not in self._ring().members:
                delivered += await self._hand_off(owner, state, redirect=True)
            elif self._alive(owner):
                delivered += await self._hand_off(owner, state)
        return delivered

    def _alive(self, owner: str) -> bool:
        try:
            return bool(self._is_alive(owner))
        except Exception:
            logger.exception("is_alive(%r) raised; treating the owner as down", owner)
            return False

    async def _hand_off(self, owner: str, state: _Owner, *, redirect: bool = False) -> int:
        logger.info("handoff %s %s started: %d hints pending",
                    "of hints for former member" if redirect else "to", owner,
                    self.hints.count(owner))
        delivered = failed = 0
        items: list[tuple[bytes, SiblingSet]] = []
        try:
            while redirect or self._alive(owner):
                items = await self.hints.pending(owner, self.batch)
                if redirect:
                    items = await self._redirect(items)
                if not items:
                    break
                if not redirect:
                    await asyncio.wait_for(self._deliver(owner, items),
                                           self.deliver_timeout_s)
                delivered += len(items)
                state.delivered += len(items)
                sent, items = items, []  # a failure to remove them is not a failed delivery
                if not await self.hints.remove_many(owner, sent):
                    break
        except Exception as exc:
            failed = len(items)
            state.failed += failed
            state.errors += 1
            state.failures_in_a_row += 1
            backoff = min(self.max_backoff_s,
                          self.interval_s * 2 ** min(state.failures_in_a_row - 1, 30))
            state.retry_at = time.monotonic() + backoff
            logger.warning("handoff to %s failed (%s: %s); retrying in %.1f s", owner,
                           type(exc).__name__, exc, backoff)
        else:
            state.failures_in_a_row = 0
            state.retry_at = 0.0
        finally:
            logger.info("handoff to %s ended: %d delivered, %d failed, %d still pending",
                        owner, delivered, failed, self.hints.count(owner))
        return delivered

    async def _redirect(self, items: list[tuple[bytes, SiblingSet]]
                        ) -> list[tuple[bytes, SiblingSet]]:
        """Send hints of a former member to each key's live current primaries; the items
        every primary of theirs took (raises if a delivery fails)."""
        assert self._ring is not None
        ring = self._ring()
        by_node: dict[str, list[tuple[bytes, SiblingSet]]] = {}
        sendable = []
        for key, hinted in items:
            targets = [p for p in quorum.plan(ring, key, self._n).primaries if self._alive(p)]
            if targets:
                sendable.append((key, hinted))
                for node in targets:
                    by_node.setdefault(node, []).append((key, hinted))
        for node, batch in sorted(by_node.items()):
            await asyncio.wait_for(self._deliver(node, batch), self.deliver_timeout_s)
        return sendable

    def stats(self) -> dict[str, Any]:
        owners = {
            owner: {"pending": self.hints.count(owner), "delivered": s.delivered,
                    "failed": s.failed, "errors": s.errors,
                    "retry_in_s": round(max(0.0, s.retry_at - time.monotonic()), 3)}
            for owner, s in sorted(self._owners.items())}
        for owner in self.hints.owners() - owners.keys():
            owners[owner] = {"pending": self.hints.count(owner), "delivered": 0,
                             "failed": 0, "errors": 0, "retry_in_s": 0.0}
        return {
            "running": self._task is not None and not self._task.done(),
            "rounds": self._rounds,
            "pending": self.hints.count(),
            "delivered": sum(s.delivered for s in self._owners.values()),
            "failed": sum(s.failed for s in self._owners.values()),
            "errors": sum(s.errors for s in self._owners.values()),
            "owners": owners,
        }


__all__ = ["Handoff"]
