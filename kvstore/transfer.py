"""Partition transfer: after a ring change, stream data to its new owners while traffic goes on.

Theory of operation (Dynamo §4.9 "adding/removing storage nodes"; Riak's ownership handoff)

- Choice: **the new ring serves at once, and the old holders stream.** As soon as a node
  adopts a ring, coordinators send reads and writes to the new preference lists; every
  node that held a partition under the old ring pushes its copy to the nodes that joined
  that partition's preference list, and a node that is no longer in a partition's list
  pushes it to all N new holders and then deletes exactly what it shipped. Nothing is
  deleted before the new holders acknowledged it (`merge_many` is durable per the sync
  policy), deletes are conditional (`ReplicaStore.remove_many` keeps a key written after
  the scan; the next sweep ships it too), and the merges are vector-clock syncs, so a copy
  that arrives twice or late changes nothing. No acknowledged write is lost.
- Trade-off against Riak's pending ownership (keep serving from the old owners, or write
  to both, until the handoff completes): that needs the coordinator to know about pending
  owners; this needs nothing from it. The price is a window, until the stream of a
  partition ends, in which a read whose R replies all come from new holders can miss a
  version only the old holders have (one join or leave adds one new holder per preference
  list, so with R=2 at least one reply comes from an old holder unless that holder missed
  the write itself). Read repair and the stream close it; writes are never affected.
- Who receives: a push goes only to nodes that are up and already act on our ring (their
  gossiped ring id equals ours), so a node never receives a partition its own older ring
  would make it push away again.
- A push to a node that is down waits; a partition to drop waits until all its new holders
  are reachable (so a leave waits for a dead member to be removed or to return).
- The base: the pushes owed are computed from the ring the data last matched (`base`) and
  the current ring. Membership persists the base in DIR/ring.handoff before adopting a new
  ring and removes it when `on_settled` fires, so a restarted node redoes what it owed.
  Partitions held but not owned are found from the data itself (`ReplicaStore.
  partitions()`), so they are handed off even without a base (after a restart, or writes
  that reached us late through a stale coordinator). A handed-off partition whose scan
  finds no key is remembered as empty and re-scanned every sweep (`ReplicaStore.
  remove_many` leaves it in `partitions()`; `drop_partition` is not used, because it would
  delete a late write this module has not shipped).
- Load: one partition at a time, batches of `batch` keys, one `deliver` per batch and
  target; a failed delivery ends that push for this pass, retried `retry_s` later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from kvstore.ring import Ring
from kvstore.vclock import SiblingSet

log = logging.getLogger(__name__)

Items = list[tuple[bytes, SiblingSet]]


@dataclass(frozen=True, slots=True)
class Push:
    """Send partition `partition` to `targets`; with `drop`, delete what was shipped."""

    partition: int
    targets: tuple[str, ...]
    drop: bool


def plan(base: Ring | None, ring: Ring, me: str, held: Iterable[int], n_val: int) -> list[Push]:
    """The pushes `me` owes for the partitions it holds data of (pure). O(len(held) * n).

    Not in the current preference list: push to all of it and drop. Still in it: push to
    the members that were not in the base ring's list (nothing when there is no base).
    """
    pushes = []
    for p in sorted(held):
        now = ring.preference_list_for(p, n_val) if ring.members else ()
        assert isinstance(now, tuple)
        if me not in now:
            if now:
                pushes.append(Push(p, now, True))
        elif base is not None:
            before = base.preference_list_for(p, n_val) if base.members else ()
            new = tuple(t for t in now if t not in before and t != me)
            if new:
                pushes.append(Push(p, new, False))
    return pushes


class Transfers:
    """Runs the pushes one node owes, in a background task, until none are left."""

    def __init__(self, store: Any, *, me: str, ring: Callable[[], Ring],
                 deliver: Callable[[str, Items], Awaitable[None]],
                 ready: Callable[[str], bool], n_val: int = 3, batch: int = 256,
                 retry_s: float = 0.5, sweep_s: float = 2.0,
                 on_settled: Callable[[], Awaitable[None]] | None = None) -> None:
        """`on_settled`, when given, is awaited once nothing is pending and must call
        `clear_base()` (after forgetting the base durably) if that still holds."""
        self._store, self._me, self._ring = store, me, ring
        self._deliver, self._ready = deliver, ready
        self._n, self._batch, self._retry_s, self._sweep_s = n_val, batch, retry_s, sweep_s
        self._on_settled = on_settled
        self.base: Ring | None = None
        self._done: set[tuple[int, str]] = set()  # (partition, target) pushed since base
        self._empty: set[int] = set()  # handed-off partitions whose last scan found no key
        self._owed: set[int] = set()  # partitions found owing a push since the base was set
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.counts = dict(keys_sent=0, batches_sent=0, keys_removed=0, pushes_done=0,
                           failures=0, settled=0)

    def ring_changed(self, old: Ring) -> None:
        """A new ring was adopted; `old` is the ring before it."""
        if self.base is None:
            self.base = old
            self._done.clear()
            self._owed.clear()
        self._wake.set()

    def pending(self) -> list[Push]:
        pushes = plan(self.base, self._ring(), self._me, self._store.partitions(), self._n)
        out = []
        for push in pushes:
            if push.drop and push.partition in self._empty:
                continue
            if not push.drop:
                targets = tuple(t for t in push.targets if (push.partition, t) not in self._done)
                if not targets:
                    continue
                push = Push(push.partition, targets, False)
            out.append(push)
        return out

    def clear_base(self) -> None:
        """Every push owed since the base is done: the data matches the current ring."""
        if self.base is not None:
            log.info("%s: transfers done since ring v%d", self._me, self.base.version)
        self.base = None
        self._done.clear()
        self.counts["settled"] += 1

    def idle(self) -> bool:
        return self.base is None and not self.pending()

    def stats(self) -> dict[str, Any]:
        """Counters, and the progress of the current hand-off (`kv cluster join --wait`):
        `partitions_owed` partitions have owed a push since the base ring (kept after it
        settles, until the next change), `partitions_done` of them owe nothing now."""
        pending = self.pending()
        owing = {push.partition for push in pending}
        self._owed |= owing
        return {**self.counts, "base_version": self.base.version if self.base else None,
                "pending": len(pending), "partitions_owed": len(self._owed),
                "partitions_done": len(self._owed - owing)}

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"transfers {self._me}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                left = await self._pass()
            except asyncio.CancelledError:
                raise
            except Exception:  # never let the loop die; the next pass retries
                log.exception("%s: transfer pass failed", self._me)
                left = True
            if not left and self.base is not None:
                if self._on_settled is not None:
                    await self._on_settled()  # forgets the base on disk, then clear_base()
                else:
                    self.clear_base()
            wait = self._retry_s if left else self._sweep_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    async def _pass(self) -> bool:
        """One attempt at every pending push; True if some remain."""
        held = self._store.partitions()
        for p in list(self._empty):  # a late write may have reached a handed-off partition
            if p not in held or await self._has_keys(p):
                self._empty.discard(p)
        pending = self.pending()
        self._owed.update(push.partition for push in pending)
        for push in pending:
            ready = tuple(t for t in push.targets if self._ready(t))
            if push.drop and len(ready) < len(push.targets):
                continue  # every new holder must take it before we delete it
            if ready:
                await self._push(Push(push.partition, ready, push.drop))
        return bool(self.pending())

    async def _push(self, push: Push) -> None:
        p = push.partition
        sent = removed = 0
        try:
            batch: Items = []
            async for item in self._store.scan_partition(p):
                batch.append(item)
                if len(batch) >= self._batch:
                    removed += await self._send(batch, push)
                    sent, batch = sent + len(batch), []
            if batch:
                removed += await self._send(batch, push)
                sent += len(batch)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.counts["failures"] += 1
            log.warning("%s: push of partition %d to %s stopped after %d keys: %s", self._me,
                        p, ",".join(push.targets), sent, exc)
            return
        if not push.drop:
            self._done.update((p, t) for t in push.targets)
        elif sent == 0:
            self._empty.add(p)  # ReplicaStore.partitions() still lists it: it holds no key
            return
        self.counts["pushes_done"] += 1
        log.info("%s: partition %d pushed to %s (%d keys%s)", self._me, p,
                 ",".join(push.targets), sent, f", {removed} removed here" if push.drop else "")

    async def _has_keys(self, p: int) -> bool:
        async for _ in self._store.scan_partition(p):
            return True
        return False

    async def _send(self, batch: Items, push: Push) -> int:
        for target in push.targets:
            await self._deliver(target, batch)
        self.counts["keys_sent"] += len(batch) * len(push.targets)
        self.counts["batches_sent"] += len(push.targets)
        if not push.drop:
            return 0
        removed = await self._store.remove_many(batch)
        self.counts["keys_removed"] += removed
        return removed
