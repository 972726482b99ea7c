"""Raft messages between nodes over HTTP: one pooled keep-alive aiohttp session, one sender
task per peer that batches everything queued for that peer into one unit: a binary frame on
a WebSocket stream kept open to that peer (the default), or a single POST.

`send()` never blocks and never fails: Raft tolerates lost messages, so a message that
cannot be delivered (peer down, queue full, timeout) is dropped, logged at DEBUG, and the
peer is reported through `on_unreachable` so the core can slow down its probing. Each peer
has at most one request in flight; messages queued meanwhile go in the next batch, which is
how appends pipeline under load without reordering (a batch is delivered in order).

Wire (docs/raft.md, "Endpoints"): `GET http://<addr>/raft/stream` upgraded to a WebSocket
carrying one `codec.encode_messages(batch)` per binary frame, with nothing sent back unless
the receiver refuses a frame (a text frame with the reason, then a close); or
`POST http://<addr>/raft/messages` with that body, `Content-Type: application/x-msgpack`,
answered 204. The stream saves a request/response round and its parsing per batch, which
is most of the cost of a message on a busy machine.

With `tls` (an `ssl.SSLContext` for clients: the cluster's CA, this node's certificate)
both go over TLS instead: `wss`-style `https://<addr>/raft/stream` and `https://.../messages`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import ssl
from collections import deque
from collections.abc import Callable, Iterable
from typing import Protocol

import aiohttp

from raft import codec
from raft.messages import Message

log = logging.getLogger(__name__)

RAFT_PATH = "/raft/messages"
STREAM_PATH = "/raft/stream"
CONTENT_TYPE = "application/x-msgpack"
MAX_QUEUED_PER_PEER = 8192  # beyond this a peer is far behind; older messages are dropped
MAX_BATCH_BYTES = 4 << 20  # stays under the receiver's body limit (codec.MAX_BODY_BYTES)
REQUEST_TIMEOUT_S = 2.0  # a peer that takes longer is treated as unreachable for this batch
CONNECT_TIMEOUT_S = 0.5
RETRY_PAUSE_S = 0.05  # after a failed POST, so a dead peer does not cost a busy loop


class Transport(Protocol):
    """What the driver needs from a transport."""

    def send(self, messages: Iterable[Message]) -> None: ...
    async def start(self) -> None: ...
    async def close(self) -> None: ...


class _Peer:
    def __init__(self, peer_id: int, address: str) -> None:
        self.id = peer_id
        self.address = address
        self.queue: deque[Message] = deque()
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.reader: asyncio.Task[None] | None = None


def source_address(address: str) -> tuple[str, int] | None:
    """Where to bind outgoing connections of a node listening on `address` (HOST:PORT).

    A node on a loopback address other than 127.0.0.1 (a local test cluster, one address
    per node) sends from that address, so that a firewall rule on two nodes' addresses cuts
    exactly their link; anywhere else the operating system picks the source as usual.
    """
    host = address.rpartition(":")[0]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    return (host, 0) if ip.is_loopback and host != "127.0.0.1" and ip.version == 4 else None


# Headers every peer call of this process carries: the cluster's peer token
# (`Authorization: Bearer ...`, kvstore/auth_http.py). The node sets them once, before its
# peer sessions open; Raft, lock forwarding, the replica peers, gossip and anti-entropy all
# read them here (raft imports nothing of ours, so the one place lives at the bottom).
# Empty in an open cluster. One process holds one node's settings.
_PEER_HEADERS: dict[str, str] = {}


def set_peer_headers(headers: dict[str, str]) -> None:
    """Replace the headers `peer_headers()` answers (the node does this at start)."""
    _PEER_HEADERS.clear()
    _PEER_HEADERS.update(headers)


def peer_headers() -> dict[str, str]:
    """A copy of the headers to send with every peer call (see set_peer_headers)."""
    return dict(_PEER_HEADERS)


class HttpTransport:
    def __init__(
        self,
        self_id: int,
        addresses: dict[int, str],
        *,
        on_unreachable: Callable[[int], None] | None = None,
        stream: bool = True,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.self_id = self_id
        self.tls = tls
        self._scheme = "http" if tls is None else "https"
        self.stream = stream
        self._addresses = dict(addresses)
        self._on_unreachable = on_unreachable
        self._peers: dict[int, _Peer] = {}
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self.sent_batches = 0
        self.dropped = 0

    @property
    def addresses(self) -> dict[int, str]:
        return dict(self._addresses)

    def set_address(self, peer_id: int, address: str) -> None:
        """Learn or change where a peer listens (membership changes)."""
        self._addresses[peer_id] = address
        peer = self._peers.get(peer_id)
        if peer is not None:
            peer.address = address

    async def start(self) -> None:
        local = source_address(self._addresses.get(self.self_id, ""))
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=4, keepalive_timeout=60,
                                         local_addr=local,
                                         ssl=self.tls if self.tls is not None else True)
        self._session = aiohttp.ClientSession(
            connector=connector, headers=peer_headers(),
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S, connect=CONNECT_TIMEOUT_S),
        )

    async def close(self) -> None:
        self._closed = True
        tasks = [p.task for p in self._peers.values() if p.task is not None]
        tasks += [p.reader for p in self._peers.values() if p.reader is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        for p in self._peers.values():
            if p.ws is not None:
                await p.ws.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def send(self, messages: Iterable[Message]) -> None:
        for m in messages:
            if self._closed:
                return
            peer = self._peers.get(m.to)
            if peer is None:
                address = self._addresses.get(m.to)
                if address is None:
                    log.debug("no address for node %d; dropping %s", m.to, m.type.name)
                    self.dropped += 1
                    continue
                peer = self._peers[m.to] = _Peer(m.to, address)
                peer.task = asyncio.get_running_loop().create_task(self._run(peer))
            if len(peer.queue) >= MAX_QUEUED_PER_PEER:
                peer.queue.popleft()
                self.dropped += 1
            peer.queue.append(m)
            peer.wake.set()

    def _take_batch(self, peer: _Peer) -> list[Message]:
        batch: list[Message] = []
        size = 0
        while peer.queue:
            m = peer.queue[0]
            m_size = 64 + len(m.data) + sum(len(e.data) + 24 for e in m.entries)
            if batch and size + m_size > MAX_BATCH_BYTES:
                break
            batch.append(peer.queue.popleft())
            size += m_size
        return batch

    async def _run(self, peer: _Peer) -> None:
        while not self._closed:
            await peer.wake.wait()
            peer.wake.clear()
            while peer.queue:
                batch = self._take_batch(peer)
                send = self._send_frame if self.stream else self._post
                if not await send(peer, batch):
                    self.dropped += len(batch)
                    if self._on_unreachable is not None:
                        self._on_unreachable(peer.id)
                    await asyncio.sleep(RETRY_PAUSE_S)

    async def _post(self, peer: _Peer, batch: list[Message]) -> bool:
        assert self._session is not None, "start() the transport before sending"
        url = f"{self._scheme}://{peer.address}{RAFT_PATH}"
        try:
            async with self._session.post(
                url, data=codec.encode_messages(batch), headers={"Content-Type": CONTENT_TYPE}
            ) as resp:
                if resp.status != 204:
                    text = await resp.text()
                    log.warning("node %d refused %d messages: %d %s",
                                peer.id, len(batch), resp.status, text[:200])
                    return False
                self.sent_batches += 1
                return True
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            log.debug("node %d unreachable at %s: %r", peer.id, peer.address, exc)
            return False

    async def _send_frame(self, peer: _Peer, batch: list[Message]) -> bool:
        assert self._session is not None, "start() the transport before sending"
        ws = peer.ws
        if ws is None or ws.closed:
            try:
                ws = await self._session.ws_connect(f"{self._scheme}://{peer.address}{STREAM_PATH}",
                                                    autoping=True)
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                log.debug("node %d unreachable at %s: %r", peer.id, peer.address, exc)
                return False
            peer.ws = ws
            peer.reader = asyncio.get_running_loop().create_task(self._read_stream(peer, ws))
        try:
            await ws.send_bytes(codec.encode_messages(batch))
        except (TimeoutError, aiohttp.ClientError, OSError, RuntimeError) as exc:
            log.debug("stream to node %d broke: %r", peer.id, exc)
            await ws.close()
            return False
        self.sent_batches += 1
        return True

    async def _read_stream(self, peer: _Peer, ws: aiohttp.ClientWebSocketResponse) -> None:
        """The receiver sends nothing back but refusals; this also notices a close."""
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                log.warning("node %d refused a batch: %s", peer.id, str(msg.data)[:200])
