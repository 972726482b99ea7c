"""Membership: gossip rounds, failure detection, the claimant and ring changes (the I/O side).

Theory of operation (Dynamo §4.8; Riak's claimant; Cassandra's gossiper)

- Every `interval_s` (0.1 s) a node raises its heartbeat and gossips (push-pull) with up to
  `fanout` (2) random live ring members, plus one random member it believes down (so a
  healed partition is noticed): one `POST /internal/v1/gossip` each (kvstore/gossip.py).
  Sends run as background tasks, one in flight per peer, so a dead peer's timeout never
  delays the round clock.
- Failure detection: a rising heartbeat of node X in any merged message is an arrival for
  X's phi accrual detector (kvstore/failure_detector.py). Verdicts are recomputed every
  round; X is down once phi > `phi_threshold` (8: ~1.8 s of silence on loopback, never
  under 0.9 s) and up again at its next arrival. If our own round ran more than `pause_s`
  late (our event loop stalled), silence is forgiven, not convicted. Only ring members
  are monitored; each is assumed up (its silence counted) from when we learn of it.
- The ring: kvstore/ring_file.py. A node started with no `DIR/ring` creates a one-member
  ring of itself (version 1), as Riak does; `join` replaces it with the cluster's ring
  (a no-op for a node already in a ring with others; a node that left or was removed may
  join again, and hands off whatever it still holds). Every new ring is written to disk
  before the node acts on it.
- The claimant (kvstore/claimant.py): every change (join, leave, remove) goes to the
  lowest-named member believed up (`POST /internal/v1/gossip/change`, forwarded by whoever
  receives it, at most 3 hops), which computes the next ring (version + 1) under a lock,
  persists and adopts it, and answers with it; gossip carries it to everyone else.
- Data: with a `store` (ReplicaStore) and `deliver(node, items)` (the internal merge_many
  call), a new ring starts kvstore/transfer.py's pushes. `leave()` returns once this node
  is out of the ring and has handed every partition off; it then announces status "left"
  and the process may exit. `remove(node)` takes a dead node out; the surviving replicas
  push its partitions to the new holders.
- `on_ring_change(callback)` callbacks run synchronously, in order, with (old, new), after
  a new ring is persisted and adopted.

Construction (kvstore/node.py): `Membership(name, DIR, ring_size=..., config=
MembershipConfig(n_val=N), store=replica_store, deliver=peers_merge_many)`, then `start()`,
`routes()` mounted on the node's app, `join(seed)` when --join is given, `stop()`.
The endpoints are listed in kvstore/membership_http.py.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from kvstore import gossip, membership_http, ring_file
from kvstore.claimant import NoClaimant, claimant, next_ring
from kvstore.errors import InvalidRing, MembershipError, NodeUnavailable, WireError
from kvstore.failure_detector import DetectorConfig, Liveness
from kvstore.gossip import GossipMessage, NodeState
from kvstore.peers import source_address
from kvstore.ring import DEFAULT_RING_SIZE, Ring
from kvstore.transfer import Items, Transfers

log = logging.getLogger(__name__)

RING_FILE = ring_file.RING_FILE
MAX_HOPS = 3
MAX_OUTSIDERS = 64  # states kept of nodes outside the ring (leavers, joiners): shown only


@dataclass(frozen=True, slots=True)
class MembershipConfig:
    interval_s: float = 0.1  # gossip round period (and heartbeat period)
    fanout: int = 2  # live peers gossiped with per round
    phi_threshold: float = 8.0  # ~18.4 rounds of silence: ~1.8 s (failure_detector.py)
    detector_window: int = 250  # intervals remembered: 25 s, so the mean adapts to load
    pause_s: float = 0.5  # a round this late means our own loop stalled: convict nobody
    rpc_timeout_s: float = 1.0  # one gossip exchange or change request
    join_timeout_s: float = 30.0  # how long join() retries an unreachable seed
    n_val: int = 3  # replicas per key that transfers keep (the node's default N)


class Membership:
    """One node's view of the cluster: ring, liveness, gossip, and ring changes."""

    def __init__(self, name: str, data_dir: str | os.PathLike, *,
                 ring_size: int = DEFAULT_RING_SIZE, config: MembershipConfig | None = None,
                 session: aiohttp.ClientSession | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None, store: Any = None,
                 deliver: Callable[[str, Items], Awaitable[None]] | None = None) -> None:
        self.name = name
        self.config = config or MembershipConfig()
        self._dir = Path(data_dir)
        self._ring_size = ring_size
        self._session, self._own_session = session, session is None
        self._clock = clock
        self._rng = rng or random.Random()
        self.ring = Ring.new(ring_size)
        self._me = NodeState(generation=time.time_ns() // 1_000_000, heartbeat=0)
        self._view: dict[str, NodeState] = {}
        self._live = Liveness(DetectorConfig(
            threshold=self.config.phi_threshold, window=self.config.detector_window,
            initial_interval_s=self.config.interval_s * 2,
            max_interval_s=max(2.0, self.config.interval_s * 10),
            min_mean_s=self.config.interval_s / 2))
        self._callbacks: list[Callable[[Ring, Ring], None]] = []
        self._ring_lock = asyncio.Lock()
        self._claim_lock = asyncio.Lock()
        self._in_flight: dict[str, asyncio.Task] = {}
        self._loop_task: asyncio.Task | None = None
        self._leave_task: asyncio.Task | None = None
        self.transfers: Transfers | None = None
        if store is not None:
            if deliver is None:
                raise TypeError("a store needs a deliver callable")
            self.transfers = Transfers(
                store, me=name, ring=lambda: self.ring, deliver=deliver,
                ready=self.acts_on_our_ring, n_val=self.config.n_val,
                on_settled=self._settled)

    # -- the contract's reading side ------------------------------------------------------

    def is_alive(self, node: str) -> bool:
        return node == self.name or node in self._live.up

    def alive(self) -> set[str]:
        return {self.name} | self._live.up

    def routes(self) -> list[web.RouteDef]:
        """The gossip, change and operator endpoints (kvstore/membership_http.py)."""
        return membership_http.routes(self)

    def on_ring_change(self, callback: Callable[[Ring, Ring], None]) -> None:
        self._callbacks.append(callback)

    def claimant(self) -> str | None:
        """The lowest-named ring member believed up (None when the ring is empty)."""
        return claimant(self.ring, self.is_alive)

    def ring_id(self) -> tuple[int, int]:
        return (self._me.ring_version, self._me.ring_digest)

    def states(self) -> dict[str, NodeState]:
        """What we gossip: our own state and those of ring members (not outsiders')."""
        out = {n: s for n, s in self._view.items() if n in self.ring.members}
        out[self.name] = self._me
        return out

    def acts_on_our_ring(self, node: str) -> bool:
        """True when `node` is up and its last gossiped state names our ring."""
        s = self._view.get(node)
        return node == self.name or (
            self.is_alive(node) and s is not None
            and (s.ring_version, s.ring_digest) == self.ring_id())

    def converged(self) -> bool:
        """True when every live ring member says it acts on our ring."""
        return all(self.acts_on_our_ring(m) for m in self.ring.members if self.is_alive(m))

    def status(self) -> dict[str, Any]:
        """Members, their states and phi, ring version, claimant, transfers (JSON-ready)."""
        return membership_http.status_of(self, self._clock())

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Load (or create) DIR/ring, then start gossiping. Idempotent per object."""
        self._dir.mkdir(parents=True, exist_ok=True)
        path = self._dir / RING_FILE
        ring = await asyncio.to_thread(ring_file.read_ring, path)
        if ring is not None:
            log.info("%s: loaded ring v%d from %s (%d members)", self.name, ring.version,
                     path, len(ring.members))
        else:
            ring = Ring.new(self._ring_size).join(self.name)
            await asyncio.to_thread(ring_file.write_atomically, path, ring.to_bytes())
            log.info("%s: created a new cluster (ring v1 holding only this node)", self.name)
        self._set_ring(ring)
        if self._session is None:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(
                local_addr=source_address(self.name)))
        self._loop_task = asyncio.create_task(self._run(), name=f"gossip {self.name}")
        if self.transfers is not None:
            base = await asyncio.to_thread(ring_file.read_ring,
                                           self._dir / ring_file.HANDOFF_FILE)
            if base is not None:
                log.info("%s: resuming transfers owed since ring v%d", self.name, base.version)
                self.transfers.ring_changed(base)
            await self.transfers.start()

    async def stop(self) -> None:
        if self.transfers is not None:
            await self.transfers.stop()
        tasks = [t for t in (self._loop_task, self._leave_task, *self._in_flight.values())
                 if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._loop_task = None
        self._in_flight.clear()
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    # -- ring changes ------------------------------------------------------------------------

    async def join(self, seed: str) -> None:
        """Join the cluster `seed` belongs to (retrying an unreachable seed a while)."""
        if seed == self.name or (self.name in self.ring.members and len(self.ring.members) > 1):
            return  # bootstrapping node, or already a member (restart with --join)
        deadline = self._clock() + self.config.join_timeout_s
        while True:
            try:
                ring = await self._request_change(seed, "join", self.name, hops=0)
                break
            except NodeUnavailable as exc:
                if self._clock() >= deadline:
                    raise
                log.info("%s: seed %s not reachable yet (%s); retrying", self.name, seed,
                         exc.detail)
                await asyncio.sleep(0.25)
        await self._adopt(ring, force=True)
        log.info("%s: joined the cluster through %s (ring v%d, %d members)", self.name, seed,
                 ring.version, len(ring.members))

    async def leave(self) -> None:
        """Leave the ring, hand every partition off, then announce status "left"."""
        if self.name in self.ring.members:
            await self.change("leave", self.name)
        while self.transfers is not None and not self.transfers.idle():
            await asyncio.sleep(self.config.interval_s)
        self.set_status("left")
        await asyncio.sleep(self.config.interval_s * 5)  # a few rounds carry "left" out
        log.info("%s: left the cluster; this process may exit", self.name)

    async def remove(self, node: str) -> None:
        """Remove a dead `node` from the ring (refused while it is seen alive)."""
        if node == self.name:
            raise MembershipError("a node cannot remove itself; use leave")
        await self.change("remove", node)

    async def change(self, op: str, node: str, hops: int = 0) -> Ring:
        """Have the claimant apply `op` to `node`; adopt and return the resulting ring.

        A request that finds no claimant (rings still spreading) is retried for up to
        `join_timeout_s` when it starts here (hops == 0).
        """
        deadline = self._clock() + self.config.join_timeout_s
        while True:
            try:
                return await self._change(op, node, hops)
            except NoClaimant:
                if hops or self._clock() >= deadline:
                    raise
                await asyncio.sleep(self.config.interval_s * 5)

    async def _change(self, op: str, node: str, hops: int) -> Ring:
        if hops > MAX_HOPS:
            raise NoClaimant(f"no claimant found after {MAX_HOPS} forwards; the members "
                             "disagree on the ring or on who is up, retry shortly")
        decider = self.claimant()
        if decider is None:
            raise MembershipError("this node has no ring")
        if decider != self.name:
            ring = await self._request_change(decider, op, node, hops=hops + 1)
            await self._adopt(ring)
            return ring
        async with self._claim_lock:
            new = next_ring(self.ring, op, node, node_alive=self.is_alive(node))
            if new is not self.ring:
                await self._adopt(new)
                log.info("%s (claimant): %s %s -> ring v%d", self.name, op, node, new.version)
            return new

    async def _request_change(self, target: str, op: str, node: str, *, hops: int) -> Ring:
        return await membership_http.request_change(
            self._client(target), target, op, node, hops, self.config.rpc_timeout_s)

    async def _adopt(self, ring: Ring, *, force: bool = False) -> bool:
        """Persist and act on `ring` if it wins over ours (or `force`); True if adopted."""
        async with self._ring_lock:
            if not force and not gossip.ring_wins(gossip.ring_id(ring), self.ring_id()):
                return False
            if ring == self.ring:
                return False
            old = self.ring
            if self.transfers is not None and self.transfers.base is None:
                await asyncio.to_thread(ring_file.write_atomically,
                                        self._dir / ring_file.HANDOFF_FILE, old.to_bytes())
            await asyncio.to_thread(ring_file.write_atomically, self._dir / RING_FILE,
                                    ring.to_bytes())
            self._set_ring(ring)
            log.info("%s: ring v%d -> v%d, members %s", self.name, old.version, ring.version,
                     ", ".join(ring.members))
            if self.name in old.members and self.name not in ring.members:
                log.warning("%s: this node is no longer a ring member", self.name)
            if self.transfers is not None:
                self.transfers.ring_changed(old)
            for cb in self._callbacks:
                try:
                    cb(old, ring)
                except Exception:
                    log.exception("%s: ring change callback failed", self.name)
            return True

    async def _settled(self) -> None:
        """Every transfer owed is done: the data matches the ring; forget the base."""
        await asyncio.to_thread(ring_file.remove_durably, self._dir / ring_file.HANDOFF_FILE)

    def _set_ring(self, ring: Ring) -> None:
        self.ring = ring
        rv, rd = gossip.ring_id(ring)
        status = self._me.status
        if self.name in ring.members:
            status = "up"  # (again, after a leave and a new join)
        elif status == "up":
            status = "leaving"
        self._me = self._me.beat(ring_version=rv, ring_digest=rd, status=status)
        self._live.monitor(set(ring.members) - {self.name}, self._clock())

    def set_status(self, status: str) -> None:
        """Announce our own status ("left" once a leaving node has handed everything off)."""
        if status != self._me.status:
            self._me = self._me.beat(status=status)
            log.info("%s: status %s", self.name, status)

    # -- gossip ------------------------------------------------------------------------------

    async def _run(self) -> None:
        cfg = self.config
        due = self._clock()
        while True:
            now = self._clock()
            if now - due > cfg.pause_s:
                log.warning("%s: gossip round %.2f s late (this process stalled); not "
                            "convicting anyone for it", self.name, now - due)
                self._live.detector.forgive(now)
            due = now + cfg.interval_s
            self._me = self._me.beat()
            for m in self._live.judge(now):
                log.warning("%s: node %s is down (phi %.1f)", self.name, m,
                            self._live.detector.phi(m, now))
            for target in self._targets():
                if target not in self._in_flight:
                    task = asyncio.create_task(self._exchange(target))
                    self._in_flight[target] = task
                    task.add_done_callback(lambda _t, n=target: self._in_flight.pop(n, None))
            await asyncio.sleep(max(0.0, due - self._clock()))

    def _targets(self) -> list[str]:
        peers = [m for m in self.ring.members if m != self.name]
        live = [m for m in peers if m in self._live.up]
        down = [m for m in peers if m not in self._live.up]
        chosen = self._rng.sample(live, min(self.config.fanout, len(live)))
        if down:
            chosen.append(self._rng.choice(down))
        return chosen

    def _message(self, ring_for: str | None) -> GossipMessage:
        states = self.states()
        ring = None
        if ring_for is not None:
            peer = self._view.get(ring_for)
            peer_id = (peer.ring_version, peer.ring_digest) if peer else (-1, -1)
            if gossip.ring_wins(self.ring_id(), peer_id):
                ring = self.ring.to_bytes()
        return GossipMessage(self.name, states, ring)

    async def _exchange(self, target: str) -> None:
        try:
            answer = await membership_http.post(
                self._client(target), target, "/internal/v1/gossip",
                self._message(target).encode(), self.config.rpc_timeout_s)
            await self._absorb(gossip.decode_message(answer))
        except (NodeUnavailable, WireError) as exc:
            log.debug("%s: gossip with %s failed: %s", self.name, target, exc)

    async def _absorb(self, msg: GossipMessage) -> None:
        """Merge a peer's states (arrivals for the detector) and maybe its ring."""
        ring = None
        if msg.ring is not None:
            try:
                ring = Ring.from_bytes(msg.ring)
            except InvalidRing as exc:
                raise WireError(f"gossiped ring: {exc.reason}") from None
            if ring.ring_size != self.ring.ring_size:
                raise WireError(f"gossiped ring has {ring.ring_size} partitions, ours "
                                f"{self.ring.ring_size}")
        self._view, newer = gossip.merge_views(self._view, msg.states, me=self.name)
        outsiders = [n for n in self._view if n not in self.ring.members]
        for n in outsiders[MAX_OUTSIDERS:]:  # bounded: anyone can send us states
            del self._view[n]
        now = self._clock()
        for n in newer:
            if self._live.arrival(n, now):
                log.info("%s: node %s is up", self.name, n)
        if ring is not None:
            await self._adopt(ring)

    def _client(self, target: str) -> aiohttp.ClientSession:
        if self._session is None:
            raise NodeUnavailable(target, "membership is not started")
        return self._session
