"""Calls from this node to other nodes' internal API, over one pooled keep-alive session.

Theory of operation

- One `aiohttp.ClientSession` per node process, created in `start()` on the running loop,
  with a connection pool kept alive between calls (`POOL_PER_HOST` connections per peer),
  so a request path costs no TCP handshake. `close()` closes it.
- Every call has a deadline (`timeout_s`, the remaining time of the client request that
  caused it). Anything that goes wrong in transport (refused, reset, timed out, a
  non-msgpack reply) raises `NodeUnavailable`; `NotApplied` when the request surely never
  reached the peer (the connection was refused) or the peer refused it as misdirected.
  A peer's typed refusal (`{"error": ...}` bodies, see kvstore/wire.py) is raised as its
  own type (QuorumFailed, SequencerRejected, WireError, ...).
- Reachability as seen from here: the first failure after a success is logged at INFO
  ("peer X unreachable"), and so is the first success after failures ("peer X reachable
  again"). `suspect(node)` is true for `SUSPECT_S` after a transport failure, so a
  coordinator can route around a peer the failure detector has not yet declared down
  instead of waiting on it for every request; after that window real traffic probes it.
- `merge_many` splits a batch into bodies below `BATCH_BYTES`.
- Every call carries the current request's `X-Request-Id` (kvstore/logs.py), so the
  replica's log lines for it name the client request that caused it.
- With `tls` (the node's client context, kvstore/tls.py) every call is HTTPS: the peer's
  certificate is verified against the cluster's CA and this node presents its own.
"""

from __future__ import annotations

import io
import ipaddress
import logging
import ssl
import time

import aiohttp

from kvstore import logs, vclock, wire
from kvstore.errors import NodeUnavailable
from kvstore.vclock import SiblingSet
from raft.transport import peer_headers

logger = logging.getLogger(__name__)

POOL_PER_HOST = 64  # concurrent calls to one peer before they queue for a connection
KEEPALIVE_S = 30.0  # idle pooled connections are kept this long
SUSPECT_S = 1.0  # after a transport failure, route around the peer for this long
# A call that timed out with less than this to answer says nothing about the peer, only
# about the caller's deadline (a client may ask for timeout_ms=1): it does not make the
# peer suspect, or one such request would turn every other client away for SUSPECT_S.
SUSPECT_MIN_WAIT_S = 0.5
BATCH_BYTES = 8 << 20  # merge_many bodies are split below this size
LARGE_BODY = 1 << 20  # aiohttp wants larger bodies as a file-like object, not bytes


def source_address(name: str) -> tuple[str, int] | None:
    """Where a node named `name` (HOST:PORT) binds its outgoing connections.

    A node on its own loopback address other than 127.0.0.1 (a chaos or test cluster:
    127.0.0.11, 127.0.0.12, ...) sends from it, so a firewall rule on two nodes' addresses
    cuts exactly their link; anywhere else the operating system picks, as usual.
    """
    host = name.rpartition(":")[0]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    return (host, 0) if ip.version == 4 and ip.is_loopback and host != "127.0.0.1" else None


class Peers:
    """The node's client side of the internal API. Requires: `start()` before calls."""

    def __init__(self, name: str, *, tls: ssl.SSLContext | None = None) -> None:
        self.name = name
        self.tls = tls
        self._scheme = "http" if tls is None else "https"
        self._session: aiohttp.ClientSession | None = None
        self._failed_at: dict[str, float] = {}  # node -> monotonic time of its last failure
        self.calls = 0
        self.failures = 0

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=POOL_PER_HOST,
                                         keepalive_timeout=KEEPALIVE_S,
                                         local_addr=source_address(self.name),
                                         ssl=self.tls if self.tls is not None else True)
        self._session = aiohttp.ClientSession(
            connector=connector,  # peer_headers: the peer token (kvstore/auth_http.py)
            headers={"Content-Type": wire.CONTENT_TYPE, **peer_headers()},
            skip_auto_headers=("User-Agent",))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def suspect(self, node: str) -> bool:
        """True when a call to `node` failed in transport within the last SUSPECT_S."""
        at = self._failed_at.get(node)
        return at is not None and time.monotonic() - at < SUSPECT_S

    def stats(self) -> dict:
        return {"calls": self.calls, "failures": self.failures,
                "unreachable": sorted(self._failed_at)}

    # -- transport ------------------------------------------------------------------------

    async def call(self, node: str, req: wire.Request, timeout_s: float) -> bytes:
        """POST `req` to `node`; the 200 reply's body. Raises as the module docstring says."""
        if self._session is None:
            raise RuntimeError("Peers.start() was not called")
        op = wire.op_of(req)
        self.calls += 1
        if timeout_s <= 0:
            raise NodeUnavailable(node, f"{op}: no time left before the deadline")
        url = f"{self._scheme}://{node}/internal/v1/{op}"
        body = wire.encode_request(req)
        try:
            async with self._session.post(
                url, data=body if len(body) <= LARGE_BODY else io.BytesIO(body),
                headers=logs.outgoing_headers(),
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as resp:
                if (resp.content_length or 0) > wire.MAX_BODY_BYTES:
                    raise aiohttp.ClientPayloadError(f"reply of {resp.content_length} bytes")
                data = await resp.read()
                status = resp.status
        except aiohttp.ClientConnectorError as exc:
            self._failed(node, f"{op}: {exc.strerror or exc}")
            raise wire.NotApplied(node, f"{op}: cannot connect ({exc.strerror or exc})") from None
        except TimeoutError:
            if timeout_s >= SUSPECT_MIN_WAIT_S:
                self._failed(node, f"{op}: no answer within {timeout_s:.3f} s")
            raise NodeUnavailable(node, f"{op}: no answer within {timeout_s:.3f} s") from None
        except (aiohttp.ClientError, OSError) as exc:
            self._failed(node, f"{op}: {type(exc).__name__}: {exc}")
            raise NodeUnavailable(node, f"{op}: {type(exc).__name__}: {exc}") from None
        self._succeeded(node)
        if status != 200:
            raise wire.decode_error(node, status, data)
        return data

    def _failed(self, node: str, detail: str) -> None:
        self.failures += 1
        if node not in self._failed_at:
            logger.info("peer %s unreachable from %s (%s)", node, self.name, detail)
        else:
            logger.debug("peer %s still unreachable (%s)", node, detail)
        self._failed_at[node] = time.monotonic()

    def _succeeded(self, node: str) -> None:
        if self._failed_at.pop(node, None) is not None:
            logger.info("peer %s reachable again from %s", node, self.name)

    async def _state_call(self, node: str, req: wire.Request, timeout_s: float) -> SiblingSet:
        data = await self.call(node, req, timeout_s)
        try:
            return wire.decode_state_reply(data)
        except Exception as exc:  # a peer that answers garbage is as good as down
            self._failed(node, f"bad reply: {exc}")
            raise NodeUnavailable(node, f"{wire.op_of(req)}: bad reply ({exc})") from None

    async def _ack_call(self, node: str, req: wire.Request, timeout_s: float) -> None:
        data = await self.call(node, req, timeout_s)
        try:
            wire.decode_ack(data)
        except Exception as exc:
            self._failed(node, f"bad reply: {exc}")
            raise NodeUnavailable(node, f"{wire.op_of(req)}: bad reply ({exc})") from None

    # -- ops ------------------------------------------------------------------------------

    async def get(self, node: str, key: bytes, timeout_s: float) -> SiblingSet:
        return await self._state_call(node, wire.GetRequest(key), timeout_s)

    async def merge(self, node: str, key: bytes, state: SiblingSet, timeout_s: float) -> None:
        await self._ack_call(node, wire.MergeRequest(key, state), timeout_s)

    async def hint(self, node: str, owner: str, key: bytes, state: SiblingSet,
                   timeout_s: float) -> None:
        await self._ack_call(node, wire.HintRequest(owner, key, state), timeout_s)

    async def coordinate(self, node: str, req: wire.CoordinateRequest,
                         timeout_s: float) -> SiblingSet:
        return await self._state_call(node, req, timeout_s)

    async def merge_many(self, node: str, items: list[tuple[bytes, SiblingSet]],
                         timeout_s: float) -> None:
        """Merge `items` on `node`, in bodies below BATCH_BYTES, within one deadline."""
        deadline = time.monotonic() + timeout_s
        batch: list[tuple[bytes, SiblingSet]] = []
        size = 0
        for key, state in items:
            item_size = len(key) + len(vclock.encode(state)) + 16
            if batch and (size + item_size > BATCH_BYTES or len(batch) >= wire.MAX_ITEMS):
                await self._ack_call(node, wire.MergeManyRequest(tuple(batch)),
                                     deadline - time.monotonic())
                batch, size = [], 0
            batch.append((key, state))
            size += item_size
        if batch:
            await self._ack_call(node, wire.MergeManyRequest(tuple(batch)),
                                 deadline - time.monotonic())

    async def status(self, node: str, timeout_s: float) -> dict:
        return wire.unpack_map(await self.call(node, wire.StatusRequest(), timeout_s))
