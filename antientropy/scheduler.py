"""When exchanges run: every partition this node replicates, with every other replica,
periodically, within a rate limit.

Theory of operation (Dynamo §4.7; Riak's AAE exchange tick)

- Every `interval_s` (while enabled), for each other member that shares partitions with
  this node (both among the partition's N primaries in this node's ring view) and that
  the failure detector calls alive, one exchange covers all the partitions they share
  (antientropy/exchange.py). Exchanges run one at a time on a node.
- Rate limit: two token buckets, `keys_per_s` (keys scanned here for listings, and keys
  repaired) and `bytes_per_s` (request and reply bodies); an exchange waits for tokens
  after each piece of work, so a large repair spreads out and foreground requests keep
  their latency. 0 means unlimited. An operator's "exchange now" may bypass the limit.
- Bookkeeping per partition: last exchange time and peer, keys repaired; totals: keys
  repaired, bytes, exchange durations, failures (antientropy/api.py serves them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from antientropy.exchange import Exchange, ExchangeResult, Transport
from antientropy.ratelimit import TokenBucket
from antientropy.trees import Trees
from kvstore.errors import RinglockError
from kvstore.replica import ReplicaStore
from kvstore.ring import Ring

logger = logging.getLogger(__name__)

INTERVAL_S = 10.0  # between rounds; a round with no differences costs ~1 KiB per peer
KEYS_PER_S = 10_000.0
BYTES_PER_S = 8.0 * (1 << 20)


class Scheduler:
    """Periodic exchanges of one node. See the module docstring."""

    def __init__(self, name: str, trees: Trees, replica: ReplicaStore, transport: Transport,
                 *, ring: Callable[[], Ring], n: int, is_alive: Callable[[str], bool],
                 interval_s: float = INTERVAL_S, keys_per_s: float = KEYS_PER_S,
                 bytes_per_s: float = BYTES_PER_S, clock: Callable[[], float] = time.time,
                 enabled: bool = True) -> None:
        self.name, self.trees, self.replica, self.transport = name, trees, replica, transport
        self.ring, self.n, self.is_alive, self._clock = ring, n, is_alive, clock
        self.enabled = enabled
        self.configure(interval_s=interval_s, keys_per_s=keys_per_s, bytes_per_s=bytes_per_s)
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.last: dict[int, tuple[float, str]] = {}  # partition -> (time, peer)
        self.repaired: dict[int, int] = {}
        self.totals = {"exchanges": 0, "failures": 0, "keys_repaired": 0, "bytes_sent": 0,
                       "bytes_received": 0, "duration_total_s": 0.0, "duration_max_s": 0.0,
                       "duration_last_s": 0.0}

    def configure(self, *, interval_s: float | None = None, keys_per_s: float | None = None,
                  bytes_per_s: float | None = None, enabled: bool | None = None) -> None:
        if interval_s is not None:
            self.interval_s = float(interval_s)
        if keys_per_s is not None:
            self.keys = TokenBucket(keys_per_s, burst=max(keys_per_s / 10, 256))
        if bytes_per_s is not None:
            self.bytes = TokenBucket(bytes_per_s, burst=max(bytes_per_s / 10, 1 << 16))
        if enabled is not None:
            self.enabled = enabled
        if hasattr(self, "_wake"):
            self._wake.set()

    def settings(self) -> dict:
        return {"enabled": self.enabled, "interval_s": self.interval_s,
                "keys_per_s": self.keys.rate, "bytes_per_s": self.bytes.rate}

    def holds(self, partition: int) -> bool:
        """True when this node is one of `partition`'s N primaries in its ring view."""
        return self.name in self.ring().preference_list_for(partition, self.n)

    def shared(self) -> dict[str, list[int]]:
        """Other replicas -> the partitions this node replicates with them."""
        ring, out = self.ring(), {}
        for p in range(ring.ring_size):
            replicas = ring.preference_list_for(p, self.n)
            if self.name in replicas:
                for peer in replicas:
                    if peer != self.name:
                        out.setdefault(peer, []).append(p)
        return out

    async def _pace(self, keys: int, nbytes: int) -> None:
        now = time.monotonic()
        await asyncio.sleep(max(self.keys.reserve(keys, now), self.bytes.reserve(nbytes, now)))

    async def exchange(self, peer: str, partitions: list[int] | None = None, *,
                       full: bool = False, limited: bool = True) -> ExchangeResult:
        """Exchange `partitions` (default: all shared) with `peer` now; raises what the
        exchange raised (PeerFailed, InvalidMessage), counting a failure."""
        if partitions is None:
            partitions = self.shared().get(peer, [])
        async with self._lock:
            ex = Exchange(self.trees, self.replica, self.transport, peer, full=full,
                          **({"pace": self._pace} if limited else {}))
            try:
                result = await ex.run(partitions)
            except BaseException:
                self.totals["failures"] += 1
                raise
            self._record(result, partitions)
            return result

    def _record(self, r: ExchangeResult, partitions: list[int]) -> None:
        t, now = self.totals, self._clock()
        t["exchanges"] += 1
        t["keys_repaired"] += r.repaired_here + r.repaired_there
        t["bytes_sent"] += r.bytes_sent
        t["bytes_received"] += r.bytes_received
        t["duration_total_s"] += r.duration_s
        t["duration_max_s"] = max(t["duration_max_s"], r.duration_s)
        t["duration_last_s"] = r.duration_s
        skipped = set(r.skipped)
        for p in partitions:
            if p not in skipped:
                self.last[p] = (now, r.peer)
        for p, count in r.repaired.items():
            self.repaired[p] = self.repaired.get(p, 0) + count
        if r.repaired_here or r.repaired_there:
            logger.info("exchange with %s: %d keys repaired here, %d there, %d bytes, %.3f s",
                        r.peer, r.repaired_here, r.repaired_there,
                        r.bytes_sent + r.bytes_received, r.duration_s)

    async def round(self) -> list[ExchangeResult]:
        """One exchange with every live replica sharing partitions with this node."""
        results = []
        for peer, partitions in sorted(self.shared().items()):
            if not self.is_alive(peer):
                continue
            try:
                results.append(await self.exchange(peer, partitions))
            except (RinglockError, OSError) as exc:
                logger.info("exchange with %s failed: %s", peer, exc)
        return results

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval_s)
            if not self.enabled:
                continue
            try:
                await self.round()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("anti-entropy round failed")

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def status(self) -> dict:
        partitions = {}
        for p in sorted(set(p for ps in self.shared().values() for p in ps)):
            at, peer = self.last.get(p, (None, None))
            partitions[str(p)] = {"tree_age_s": self.trees.age(p), "last_exchange": at,
                                  "last_peer": peer, "keys_repaired": self.repaired.get(p, 0)}
        return {"settings": self.settings(), "totals": dict(self.totals),
                "partitions": partitions}


__all__ = ["BYTES_PER_S", "INTERVAL_S", "KEYS_PER_S", "Scheduler"]
