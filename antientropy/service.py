"""Anti-entropy on one node: trees, responder, scheduler and their HTTP client.

The node wires it in one place (kvstore/node.py):

    aae = AntiEntropy(DIR / "aae", replica, name=..., n=..., ring=..., is_alive=...)
    await aae.open()        # right after the replica store opens, before any write
    app.add_routes(aae.routes())
    await aae.close()       # on shutdown, before the store closes (saves the trees)

`open()` loads or queues the trees and starts the scheduler, whose first round comes
`interval_s` later (the node serves by then). Calls to peers use this object's own
pooled aiohttp session (like gossip, so exchanges never queue in front of client
traffic in the peers' pool) and raise PeerFailed on any failure. With `tls` (the node's
client context, kvstore/tls.py) they are HTTPS, verified against the cluster's CA.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from pathlib import Path

import aiohttp
from aiohttp import web

from antientropy import codec
from antientropy.errors import PeerFailed
from antientropy.responder import Responder
from antientropy.scheduler import Scheduler
from antientropy.trees import Trees
from kvstore.replica import ReplicaStore
from kvstore.ring import Ring
from raft.transport import peer_headers

logger = logging.getLogger(__name__)

CALL_TIMEOUT_S = 120.0  # one call (a listing of 10,000 keys, or 8 MiB of states)
PREFIX = "/internal/v1/aae/"


class AntiEntropy:
    """Everything anti-entropy on one node. See the module docstring."""

    def __init__(self, folder: str | Path, replica: ReplicaStore, *, name: str, n: int,
                 ring: Callable[[], Ring], is_alive: Callable[[str], bool],
                 tls: ssl.SSLContext | None = None, **scheduler_options: float) -> None:
        self.name = name
        self.tls = tls
        self.replica = replica
        self.trees = Trees(folder, replica)
        self.scheduler = Scheduler(name, self.trees, replica, self._call, ring=ring, n=n,
                                   is_alive=is_alive, **scheduler_options)  # type: ignore[arg-type]
        self.responder = Responder(self.trees, replica, self.scheduler.holds)
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        await self.trees.open()
        self.scheduler.start()

    async def close(self) -> None:
        await self.scheduler.stop()
        if self._session is not None:
            await self._session.close()
            self._session = None
        await self.trees.close()

    def routes(self) -> list[web.RouteDef]:
        from antientropy.api import routes

        return routes(self)

    async def _call(self, peer: str, op: str, body: bytes) -> bytes:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit_per_host=4, ssl=self.tls if self.tls is not None else True),
                headers={"Content-Type": codec.CONTENT_TYPE, **peer_headers()})
        try:
            scheme = "http" if self.tls is None else "https"
            async with self._session.post(f"{scheme}://{peer}{PREFIX}{op}", data=body,
                                          timeout=aiohttp.ClientTimeout(CALL_TIMEOUT_S)) as resp:
                if (resp.content_length or 0) > codec.MAX_BODY_BYTES:
                    raise PeerFailed(peer, f"{op}: reply of {resp.content_length} bytes")
                data = await resp.read()
                if resp.status != 200:
                    raise PeerFailed(peer, f"{op}: HTTP {resp.status} {data[:300]!r}")
                return data
        except TimeoutError:
            raise PeerFailed(peer, f"{op}: no answer in {CALL_TIMEOUT_S} s") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise PeerFailed(peer, f"{op}: {type(exc).__name__}: {exc}") from None

    def status(self) -> dict:
        return {"node": self.name, "trees": self.trees.stats(),
                "responder": dict(self.responder.counts), **self.scheduler.status()}


__all__ = ["AntiEntropy"]
