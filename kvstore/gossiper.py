"""Gossip rounds and failure detection for one node (the I/O around kvstore/gossip.py).

Theory of operation (Cassandra's gossiper; Dynamo §4.8.1)

- Every `interval_s` (0.1 s) the node raises its heartbeat and gossips (push-pull) with up
  to `fanout` (2) random live ring members, plus one random member it believes down (so a
  healed partition is noticed): one `POST /internal/v1/gossip` each, the answer being the
  peer's newer states (kvstore/gossip.py). Sends run as background tasks, one in flight
  per peer, so a dead peer's timeout never delays the round clock.
- Failure detection: a rising heartbeat of node X in any merged message is an arrival for
  X's phi accrual detector (kvstore/failure_detector.py). Verdicts are recomputed every
  round; X is down once phi > `phi_threshold` (8: ~1.8 s of silence on loopback, never
  under 0.9 s) and up again at its next arrival. If our own round ran more than `pause_s`
  late (our event loop stalled), silence is forgiven, not convicted. Only ring members
  are monitored; each is assumed up (its silence counted) from when we learn of it.
- What travels: our own state and the ring members' (never more: anyone can send us
  states, so at most MAX_OUTSIDERS states of non-members are kept, for display). The ring
  goes along when the peer's last known ring id differs from ours and ours wins; a ring
  that arrives is handed to `adopt` (kvstore.membership persists it and acts on it).
- `MembershipConfig.tls` (the node's client context, kvstore/tls.py): gossip and change
  requests go over HTTPS (membership's session is made with it), verified against the CA.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp

from kvstore import gossip, membership_http
from kvstore.errors import InvalidRing, NodeUnavailable, WireError
from kvstore.failure_detector import DetectorConfig, Liveness
from kvstore.gossip import GossipMessage, NodeState
from kvstore.ring import Ring

log = logging.getLogger(__name__)

MAX_OUTSIDERS = 64  # states kept of nodes outside the ring (leavers, joiners): shown only


@dataclass(frozen=True, slots=True)
class MembershipConfig:
    interval_s: float = 0.1  # gossip round period (and heartbeat period)
    fanout: int = 2  # live peers gossiped with per round
    phi_threshold: float = 8.0  # ~18.4 rounds of silence: ~1.8 s (failure_detector.py)
    detector_window: int = 250  # intervals remembered: 25 s, so the mean adapts to load
    pause_s: float = 0.5  # a round this late means our own loop stalled: convict nobody
    rpc_timeout_s: float = 1.0  # one gossip exchange
    change_timeout_s: float = 10.0  # one change request (the claimant fsyncs the ring)
    join_timeout_s: float = 30.0  # how long join() and changes retry (seed down, no claimant)
    n_val: int = 3  # replicas per key that transfers keep (the node's default N)
    tls: ssl.SSLContext | None = None  # peer calls over HTTPS with this client context

    @property
    def scheme(self) -> str:
        return "http" if self.tls is None else "https"


class Gossiper:
    """Our own state, our view of the others', and their liveness."""

    def __init__(self, name: str, config: MembershipConfig, *, ring: Callable[[], Ring],
                 adopt: Callable[[Ring], Awaitable[bool]], clock: Callable[[], float],
                 rng: random.Random) -> None:
        self.name, self.config = name, config
        self._ring, self._adopt, self._clock, self._rng = ring, adopt, clock, rng
        self.me = NodeState(generation=time.time_ns() // 1_000_000, heartbeat=0)
        self.view: dict[str, NodeState] = {}
        self.live = Liveness(DetectorConfig(
            threshold=config.phi_threshold, window=config.detector_window,
            initial_interval_s=config.interval_s * 2,
            max_interval_s=max(2.0, config.interval_s * 10), min_mean_s=config.interval_s / 2))
        self._session: aiohttp.ClientSession | None = None
        self._in_flight: dict[str, asyncio.Task] = {}
        self._task: asyncio.Task | None = None

    # -- reading ---------------------------------------------------------------------------

    def is_alive(self, node: str) -> bool:
        return node == self.name or node in self.live.up

    def ring_id(self) -> tuple[int, int]:
        return (self.me.ring_version, self.me.ring_digest)

    def states(self) -> dict[str, NodeState]:
        """What we gossip: our own state and those of ring members (not outsiders')."""
        members = self._ring().members
        out = {n: s for n, s in self.view.items() if n in members}
        out[self.name] = self.me
        return out

    def acts_on_our_ring(self, node: str) -> bool:
        """True when `node` is up and its last gossiped state names our ring."""
        s = self.view.get(node)
        return node == self.name or (
            self.is_alive(node) and s is not None
            and (s.ring_version, s.ring_digest) == self.ring_id())

    def phi(self, node: str) -> float:
        return 0.0 if node == self.name else self.live.detector.phi(node, self._clock())

    # -- our own state ---------------------------------------------------------------------

    def on_ring(self, ring: Ring) -> None:
        """We act on `ring` now: announce its id (and our status), monitor its members."""
        rv, rd = gossip.ring_id(ring)
        status = self.me.status
        if self.name in ring.members:
            status = "up"  # (again, after a leave and a new join)
        elif status == "up":
            status = "leaving"
        self.me = self.me.beat(ring_version=rv, ring_digest=rd, status=status)
        self.live.monitor(set(ring.members) - {self.name}, self._clock())

    def set_status(self, status: str) -> None:
        if status != self.me.status:
            self.me = self.me.beat(status=status)
            log.info("%s: status %s", self.name, status)

    # -- rounds ----------------------------------------------------------------------------

    def start(self, session: aiohttp.ClientSession) -> None:
        self._session = session
        self._task = asyncio.create_task(self._run(), name=f"gossip {self.name}")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._in_flight.values()) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task, self._session = None, None
        self._in_flight.clear()

    async def _run(self) -> None:
        cfg = self.config
        due = self._clock()
        while True:
            now = self._clock()
            if now - due > cfg.pause_s:
                log.warning("%s: gossip round %.2f s late (this process stalled); not "
                            "convicting anyone for it", self.name, now - due)
                self.live.detector.forgive(now)
            due = now + cfg.interval_s
            self.me = self.me.beat()
            for m in self.live.judge(now):
                log.warning("%s: node %s is down (phi %.1f)", self.name, m,
                            self.live.detector.phi(m, now))
            for target in self._targets():
                if target not in self._in_flight:
                    task = asyncio.create_task(self._exchange(target))
                    self._in_flight[target] = task
                    task.add_done_callback(lambda _t, n=target: self._in_flight.pop(n, None))
            await asyncio.sleep(max(0.0, due - self._clock()))

    def _targets(self) -> list[str]:
        peers = [m for m in self._ring().members if m != self.name]
        live = [m for m in peers if m in self.live.up]
        down = [m for m in peers if m not in self.live.up]
        chosen = self._rng.sample(live, min(self.config.fanout, len(live)))
        if down:
            chosen.append(self._rng.choice(down))
        return chosen

    def message(self, peer_ring_id: tuple[int, int] | None,
                states: dict[str, NodeState]) -> GossipMessage:
        """`states` for a peer, with our ring if the peer's ring id loses to ours."""
        wins = gossip.ring_wins(self.ring_id(), peer_ring_id or (-1, -1))
        return GossipMessage(self.name, states, self._ring().to_bytes() if wins else None)

    async def _exchange(self, target: str) -> None:
        peer = self.view.get(target)
        msg = self.message((peer.ring_version, peer.ring_digest) if peer else None,
                           self.states())
        try:
            if self._session is None:
                raise NodeUnavailable(target, "gossip is not started")
            answer = await membership_http.post(self._session, target, "/internal/v1/gossip",
                                                msg.encode(), self.config.rpc_timeout_s,
                                                scheme=self.config.scheme)
            await self.absorb(gossip.decode_message(answer))
        except (NodeUnavailable, WireError) as exc:
            log.debug("%s: gossip with %s failed: %s", self.name, target, exc)

    async def absorb(self, msg: GossipMessage) -> None:
        """Merge a peer's states (arrivals for the detector) and adopt its ring if it wins.

        Raises WireError (changing nothing) when the ring in `msg` is damaged or foreign.
        """
        ours, ring = self._ring(), None
        if msg.ring is not None:
            try:
                ring = Ring.from_bytes(msg.ring)
            except InvalidRing as exc:
                raise WireError(f"gossiped ring: {exc.reason}") from None
            if ring.ring_size != ours.ring_size:
                raise WireError(f"gossiped ring has {ring.ring_size} partitions, ours "
                                f"{ours.ring_size}")
        self.view, newer = gossip.merge_views(self.view, msg.states, me=self.name)
        outsiders = [n for n in self.view if n not in ours.members]
        for n in outsiders[MAX_OUTSIDERS:]:
            del self.view[n]
        now = self._clock()
        for n in newer:
            if self.live.arrival(n, now):
                log.info("%s: node %s is up", self.name, n)
        if ring is not None:
            await self._adopt(ring)
