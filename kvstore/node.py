"""One ringlock node: the process that `kv serve` runs.

Theory of operation (shared/DESIGN.md "One node")

- One asyncio loop, one aiohttp server on the port of the node's name, bound to its host.
  It serves the public KV API (kvstore/http_api.py), the internal replica API
  (kvstore/replica_api.py), gossip and operator endpoints (kvstore/membership.py) and,
  with `--lock-id`, a lock-service voter (lockservice/server.py).
- Start, in order: open the replica store (DIR/replicas) and hint store (DIR/hints); start
  the peer session; start membership (loads DIR/ring, or creates a one-node ring); serve
  HTTP; join the seed when `--join` is given (others gossip with us from then on, so we
  must be serving); start hinted handoff and the lock voter; then print
  `ringlock node NAME ready` on stderr, at any log level.
- SIGTERM or SIGINT: stop accepting connections and give in-flight requests up to
  `SHUTDOWN_S` to finish (aiohttp's graceful shutdown), then stop handoff, the lock voter,
  membership and background replication, close the peer session and the engines, and
  return (exit status 0). A second signal during shutdown is ignored; the stores close in
  any case.
- Wiring: the coordinator reads the ring and liveness from membership; handoff delivers
  hints, and membership's partition transfers (kvstore/transfer.py) stream data to new
  owners, both with the internal `merge_many` call on the receiver; a sequencer on a write is
  checked with `lockservice.fencing.SequencerCache` when a lock service is configured
  (`--lock-peers`; a voter asks its own LockServer, others ask the voters over HTTP);
  anti-entropy (antientropy/service.py, DIR/aae) opens right after the replica store, so
  its Merkle trees see every write, and serves /internal/v1/aae/ and /admin/v1/aae.
  The cache is not fed lock events, so a sequencer stays "current" for up to its ttl_s
  (0.5 s) after its lock changed hands (the trade-off fencing.py documents).
- Auth (`--auth-file`, kvstore/auth_http.py, docs/auth.md): the file is read when the Node
  is made (a bad one: AuthFileError, exit status 1); its middleware checks every request's
  token before the handlers; the peer token goes out with every peer call
  (raft.transport.peer_headers) and the sequencer checks; SIGHUP reads the file again.
- TLS (`--tls-cert/--tls-key/--tls-ca`, kvstore/tls.py): the files are loaded when the
  Node is made (a bad one: TLSError, exit status 1); the server is HTTPS only, peer routes
  need a node certificate (tls.peer_guard), and every peer call uses the node's client
  context (peers, membership, anti-entropy, Raft, lock forwarding and sequencer checks).
- Observability: `GET /metrics` (kvstore/metrics.py, read from the parts' stats at scrape
  time); every route runs under a request id (kvstore/logs.py), and log lines are plain
  or JSON (`--log-format`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path

from aiohttp import web

from antientropy.service import AntiEntropy
from kvstore import http_api, logs, tls
from kvstore.auth import AuthFileError
from kvstore.auth_http import Guard
from kvstore.config import ConfigError, NodeConfig, add_arguments, from_args
from kvstore.coordinator import Coordinator
from kvstore.errors import InvalidRequest, QuorumFailed, SequencerRejected
from kvstore.handoff import Handoff
from kvstore.hints import HintStore
from kvstore.membership import Membership, MembershipConfig
from kvstore.metrics import NodeMetrics, Sources
from kvstore.peers import Peers
from kvstore.replica import ReplicaStore
from kvstore.replica_api import ReplicaApi
from kvstore.vclock import SiblingSet
from raft.transport import set_peer_headers

logger = logging.getLogger(__name__)

SHUTDOWN_S = 2.0  # in-flight requests get this long after a stop signal
DELIVER_TIMEOUT_S = 30.0  # one merge_many batch (hinted handoff, partition transfer)


class Node:
    """The parts of one node, started and stopped in the order the docstring gives."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.name = config.name
        self.data = Path(config.data)
        self.runner: web.AppRunner | None = None
        self.lock = None
        self.handoff: Handoff | None = None
        self._closers: list = []
        self.tls = (tls.NodeTLS.load(config.tls_cert, config.tls_key, config.tls_ca)
                    if config.tls_cert else None)
        self.peer_tls = self.tls.client if self.tls else None  # client context of peer calls
        # Tokens and ACLs (kvstore/auth_http.py): a bad file raises AuthFileError here,
        # before anything opens; its peer token goes out with every peer call.
        self.guard = Guard.load(config.auth_file) if config.auth_file else None
        set_peer_headers(self.guard.peer_headers() if self.guard else {})

    async def start(self) -> None:
        cfg = self.config
        self.data.mkdir(parents=True, exist_ok=True)
        self.replica = await ReplicaStore.open(self.data / "replicas", node=self.name,
                                               ring_size=cfg.ring_size, sync=cfg.sync)
        self._closers.append(self.replica.close)
        # Anti-entropy (antientropy/service.py): its trees follow the store from before
        # any write; exchanges start one interval after the node serves.
        self.aae = AntiEntropy(self.data / "aae", self.replica, name=self.name, n=cfg.n,
                               ring=lambda: self.membership.ring,
                               is_alive=lambda node: self.membership.is_alive(node),
                               tls=self.peer_tls)
        await self.aae.open()
        self._closers.append(self.aae.close)
        self.hints = await HintStore.open(self.data / "hints", sync=cfg.sync)
        self._closers.append(self.hints.close)
        self.peers = Peers(self.name, tls=self.peer_tls)
        await self.peers.start()
        self._closers.append(self.peers.close)
        # Membership keeps its own small session: gossip must not queue behind data
        # traffic in the peers' pool, or a busy node would look dead.
        self.membership = Membership(self.name, self.data, ring_size=cfg.ring_size,
                                     config=MembershipConfig(n_val=cfg.n, tls=self.peer_tls),
                                     store=self.replica, deliver=self._deliver)
        await self.membership.start()
        self._closers.append(self.membership.stop)
        if self.membership.ring.ring_size != cfg.ring_size:
            logger.info("%s: ring size is %d (from DIR/ring), not --ring-size %d", self.name,
                        self.membership.ring.ring_size, cfg.ring_size)
        fence = self._start_lock_service()
        self.coordinator = Coordinator(
            self.name, replica=self.replica, hints=self.hints, peers=self.peers,
            ring=lambda: self.membership.ring, is_alive=self.membership.is_alive,
            n=cfg.n, r=cfg.r, w=cfg.w, timeout_s=cfg.timeout_s, fence=fence,
            max_value=cfg.max_value)
        self._closers.append(self.coordinator.close)
        await self._serve()
        if cfg.join:
            await self.membership.join(cfg.join)
        self.handoff = Handoff(self.hints, deliver=self._deliver,
                               is_alive=self.membership.is_alive,
                               ring=lambda: self.membership.ring, n=cfg.n)
        await self.handoff.start()
        self._closers.append(self.handoff.stop)
        if self.lock is not None:
            await self.lock.start()
            self._closers.append(self.lock.stop)

    def _start_lock_service(self):
        """The lock voter (with --lock-id) and the fence for sequencers (with --lock-peers):
        a voter asks its own LockServer, any other node asks the voters over HTTP; the
        answers are cached briefly (lockservice.fencing.SequencerCache, its ttl_s)."""
        cfg = self.config
        if not cfg.lock_peers:
            return None
        from lockservice.errors import BadSequencerToken
        from lockservice.fencing import SequencerCache

        if cfg.lock_id is not None:
            from lockservice.limits import Limits
            from lockservice.server import LockServer

            self.lock = LockServer.open(node_id=cfg.lock_id, addresses=dict(cfg.lock_peers),
                                        data_dir=str(self.data / "lock"),
                                        sync=cfg.sync != "none", tls=self.peer_tls,
                                        limits=Limits(**cfg.lock_limits))
            checker = self.lock.check_sequencer
        else:
            from lockservice.async_client import AsyncLockClient

            peer = self.guard.config.peer_token if self.guard else None
            client = AsyncLockClient(list(cfg.lock_peers.values()), token=peer,
                                     **self._lock_tls())
            self._closers.append(client.members.close)
            checker = client.check_sequencer
        cache = SequencerCache(checker, rejected=SequencerRejected)
        if self.lock is not None:  # a voter forgets a lock's answers as its own table changes
            self.lock.add_change_listener(cache.on_change)

        async def fence(token: str) -> None:
            try:
                await cache.check(token)
            except BadSequencerToken as exc:
                raise InvalidRequest(f"sequencer: {exc}") from None
            except (SequencerRejected, asyncio.CancelledError):
                raise
            except Exception as exc:  # no leader, unreachable voters: nothing was written
                raise QuorumFailed("fence", 1, 0, indeterminate=False,
                                   detail=f"the lock service cannot check the sequencer:"
                                          f" {exc}") from None
        return fence

    async def _serve(self) -> None:
        self.metrics = NodeMetrics(self.name, Sources(
            coordinator=self.coordinator.stats, replica=self.replica.stats,
            hints=self.hints.stats, handoff=lambda: self.handoff and self.handoff.stats(),
            aae=self.aae.status, lock=lambda: self.lock))
        guard = [tls.peer_guard] if self.tls else []
        app = web.Application(middlewares=[logs.request_ids, *guard, self.metrics.middleware])
        if self.guard is not None:  # checks tokens before the request metrics and handlers
            self.guard.on_denied = lambda reason: self.metrics.auth_denied.labels(reason).inc()
            app.middlewares.insert(app.middlewares.index(self.metrics.middleware),
                                   self.guard.middleware)
        app.add_routes(self.metrics.routes())
        app.add_routes(ReplicaApi(replica=self.replica, hints=self.hints,
                                  coordinator=self.coordinator, status=self.status).routes())
        app.add_routes(self.membership.routes())
        app.add_routes(self.aae.routes())
        if self.lock is not None:
            app.add_routes(self.lock.routes())
        from kvstore import status_page  # GET /status (page), /status/v1 (its JSON)
        status_page.install(app, node=self)  # before http_api: its middleware picks the page
        info = http_api.NodeInfo(name=self.name, ring=lambda: self.membership.ring,
                                 is_alive=self.membership.is_alive, status=self.status,
                                 max_value_bytes=self.config.max_value,
                                 joining=lambda: self.membership.joining)
        http_api.install(app, self.coordinator, info)
        self.runner = web.AppRunner(app, shutdown_timeout=SHUTDOWN_S, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, self.config.host, self.config.port,
                          reuse_address=True, backlog=4096,  # lockservice.node.LISTEN_BACKLOG
                          ssl_context=self.tls.server if self.tls else None).start()
        logger.info("%s: serving on %s://%s/", self.name, "https" if self.tls else "http",
                    self.name)

    def _lock_tls(self) -> dict:
        cfg = self.config
        return ({"tls_ca": str(cfg.tls_ca), "tls_cert": str(cfg.tls_cert),
                 "tls_key": str(cfg.tls_key)} if self.tls else {})

    async def _deliver(self, owner: str, items: list[tuple[bytes, SiblingSet]]) -> None:
        await self.peers.merge_many(owner, items, DELIVER_TIMEOUT_S)

    def status(self) -> dict:
        """Node-wide counters for /status and the internal status op."""
        out = {"hints": self.hints.count(), "hint_owners": sorted(self.hints.owners()),
               "replica": self.replica.stats(), "coordinator": self.coordinator.stats(),
               "membership": self.membership.status(), "peers": self.peers.stats()}
        if self.handoff is not None:
            out["handoff"] = self.handoff.stats()
        if self.lock is not None:
            out["lock"] = self.lock.status()
        return out

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()  # stop accepting; in-flight get SHUTDOWN_S
            self.runner = None
        for close in reversed(self._closers):
            try:
                await close()
            except Exception:
                logger.exception("%s: error while stopping", self.name)
        self._closers.clear()
        self.handoff = None


async def run(config: NodeConfig) -> None:
    """Run a node until SIGTERM or SIGINT; return once everything is closed."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    node = Node(config)
    if node.guard is not None:  # SIGHUP: read the auth file again (kvstore/auth_http.py)
        loop.add_signal_handler(signal.SIGHUP, node.guard.reload)
    try:
        starting = asyncio.ensure_future(node.start())
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if starting.done():
            starting.result()  # raise what start() raised
            sys.stderr.write(f"ringlock node {config.name} ready\n")
            sys.stderr.flush()
            ring = node.membership.ring
            logger.info("%s: ready (%d ring members, ring v%d; N=%d R=%d W=%d, sync %s%s)",
                        config.name, len(ring.members), ring.version, config.n, config.r,
                        config.w, config.sync,
                        f", lock voter {config.lock_id}" if config.lock_id else "")
            await stopping
        else:
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
        stopping.cancel()
        logger.info("%s: stopping", config.name)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: None)  # a second signal waits for us
        await node.stop()
    logger.info("%s: stopped", config.name)


def main(config: NodeConfig) -> int:
    """Configure logging, run the node, return the exit status."""
    logs.setup(config.log_level, config.log_format, config.name)
    try:
        asyncio.run(run(config))
    except AuthFileError as exc:
        logger.error("%s: cannot run: %s", config.name, exc)
        return 1
    except (OSError, tls.TLSError) as exc:
        logger.error("%s: cannot run: %s", config.name, exc)
        return 1
    return 0


def _cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kvstore.node",
                                     description="Run one ringlock node (like `kv serve`).")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        config = from_args(args)
    except ConfigError as exc:
        parser.error(str(exc))
    return main(config)


if __name__ == "__main__":
    sys.exit(_cli())
