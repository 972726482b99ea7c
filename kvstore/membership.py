"""Membership: the ring, its changes and the claimant, and data moving after them (I/O).

Theory of operation (Dynamo §4.8; Riak's claimant; Cassandra's gossiper)

- Gossip and failure detection: kvstore/gossiper.py (a round every 0.1 s to 2 random
  live members; a silent member is called down after ~1.8 s on loopback). `is_alive`,
  `alive` and the claimant choice read its verdicts.
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
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from kvstore import gossip, membership_http, ring_file
from kvstore.claimant import NoClaimant, claimant, next_ring
from kvstore.errors import MembershipError, NodeUnavailable
from kvstore.gossip import NodeState
from kvstore.gossiper import MAX_OUTSIDERS, Gossiper, MembershipConfig
from kvstore.peers import source_address
from kvstore.ring import DEFAULT_RING_SIZE, Ring
from kvstore.transfer import Items, Transfers
from raft.transport import peer_headers

log = logging.getLogger(__name__)

RING_FILE = ring_file.RING_FILE
MAX_HOPS = 3
__all__ = ["MAX_OUTSIDERS", "RING_FILE", "Membership", "MembershipConfig"]


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
        self.ring = Ring.new(ring_size)
        self.gossiper = Gossiper(name, self.config, ring=lambda: self.ring, adopt=self._adopt,
                                 clock=clock, rng=rng or random.Random())
        self._callbacks: list[Callable[[Ring, Ring], None]] = []
        self._ring_lock = asyncio.Lock()
        self._claim_lock = asyncio.Lock()
        self._leave_task: asyncio.Task | None = None
        self._joining = False  # a node never decides a change before its join has finished
        self.transfers: Transfers | None = None
        if store is not None:
            if deliver is None:
                raise TypeError("a store needs a deliver callable")
            self.transfers = Transfers(
                store, me=name, ring=lambda: self.ring, deliver=deliver,
                ready=self.gossiper.acts_on_our_ring, n_val=self.config.n_val,
                on_settled=self._settled)

    # -- the contract's reading side ------------------------------------------------------

    def is_alive(self, node: str) -> bool:
        return self.gossiper.is_alive(node)

    @property
    def joining(self) -> bool:
        """True while join() asks the cluster to take this node in."""
        return self._joining

    def alive(self) -> set[str]:
        return {self.name} | self.gossiper.live.up

    def routes(self) -> list[web.RouteDef]:
        """The gossip, change and operator endpoints (kvstore/membership_http.py)."""
        return membership_http.routes(self)

    def on_ring_change(self, callback: Callable[[Ring, Ring], None]) -> None:
        self._callbacks.append(callback)

    def claimant(self) -> str | None:
        """The lowest-named ring member believed up (None when the ring is empty)."""
        return claimant(self.ring, self.is_alive)

    def ring_id(self) -> tuple[int, int]:
        return self.gossiper.ring_id()

    def states(self) -> dict[str, NodeState]:
        return self.gossiper.states()

    def converged(self) -> bool:
        """True when every live ring member says it acts on our ring."""
        return all(self.gossiper.acts_on_our_ring(m) for m in self.ring.members
                   if self.is_alive(m))

    def status(self) -> dict[str, Any]:
        """Members, their states and phi, ring version, claimant, transfers (JSON-ready)."""
        return membership_http.status_of(self)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Load (or create) DIR/ring, then start gossiping and transfers."""
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
            self._session = aiohttp.ClientSession(headers=peer_headers(),
                                                  connector=aiohttp.TCPConnector(
                local_addr=source_address(self.name), ssl=self.config.tls or True))
        self.gossiper.start(self._session)
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
        if self._leave_task is not None:
            self._leave_task.cancel()
            await asyncio.gather(self._leave_task, return_exceptions=True)
        await self.gossiper.stop()
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    # -- ring changes ------------------------------------------------------------------------

    async def join(self, seed: str) -> None:
        """Join the cluster `seed` belongs to (retrying an unreachable seed a while)."""
        if seed == self.name or (self.name in self.ring.members and len(self.ring.members) > 1):
            return  # bootstrapping node, or already a member (restart with --join)
        deadline = self._clock() + self.config.join_timeout_s
        self._joining = True
        try:
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
            # Force over our own lone ring (or one we are out of): it may carry a higher
            # version than the cluster's. But never go back from a newer cluster ring that
            # gossip brought meanwhile (the claimant may gossip to us before its answer).
            alone = self.ring.members == (self.name,) or self.name not in self.ring.members
            await self._adopt(ring, force=alone)
        finally:
            self._joining = False  # only now: the cluster's ring is ours
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

    async def change(self, op: str, node: str, hops: int = 0,
                     ring: Ring | None = None) -> Ring:
        """Have the claimant apply `op` to `node`; adopt and return the resulting ring.

        `ring` is the ring of the node that forwarded the request here, adopted first when
        it wins over ours: the claimant is chosen on the forwarder's ring, and a node that
        has just become claimant (a joiner named below every member) may not have heard of
        that ring yet; deciding on an older one would fork the ring. A node whose own join
        is still in flight decides nothing (NoClaimant: retry shortly).
        A request that finds no claimant (rings still spreading) is retried for up to
        `join_timeout_s` when it starts here (hops == 0).
        """
        if ring is not None:
            await self._adopt(ring)
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
            ring = await self._request_change(decider, op, node, hops=hops + 1, ring=self.ring)
            await self._adopt(ring)
            return ring
        if self._joining:
            raise NoClaimant("the claimant is still joining the cluster; retry shortly")
        async with self._claim_lock:
            new = next_ring(self.ring, op, node, node_alive=self.is_alive(node))
            if new is not self.ring:
                await self._adopt(new)
                log.info("%s (claimant): %s %s -> ring v%d", self.name, op, node, new.version)
            return new

    async def _request_change(self, target: str, op: str, node: str, *, hops: int,
                              ring: Ring | None = None) -> Ring:
        if self._session is None:
            raise NodeUnavailable(target, "membership is not started")
        return await membership_http.request_change(
            self._session, target, op, node, hops, self.config.change_timeout_s, ring=ring,
            scheme=self.config.scheme)

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
        """Every transfer owed is done: forget the base, on disk first. Under the ring lock,
        so no ring adopted meanwhile finds its base half forgotten."""
        async with self._ring_lock:
            assert self.transfers is not None
            if self.transfers.base is None or self.transfers.pending():
                return
            await asyncio.to_thread(ring_file.remove_durably,
                                    self._dir / ring_file.HANDOFF_FILE)
            self.transfers.clear_base()

    def _set_ring(self, ring: Ring) -> None:
        self.ring = ring
        self.gossiper.on_ring(ring)

    def set_status(self, status: str) -> None:
        """Announce our own status ("left" once a leaving node has handed everything off)."""
        self.gossiper.set_status(status)
