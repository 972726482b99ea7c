"""Python clients of the store: `Client` (blocking) and `AsyncClient` (asyncio).

    with Client(["127.0.0.1:7001", "127.0.0.1:7002"]) as kv:
        kv.put(b"greeting", b"hello")
        got = kv.get(b"greeting")          # GetResponse(values=[b"hello"], context=...)
        kv.put(b"greeting", b"hi", got.context)   # replaces what was read

Keys and values are bytes (any bytes; keys 1..1024 of them). `get` returns every live
sibling; a `resolver(values) -> bytes` given to the client picks one (the response keeps
the context, so `put(key, resolved.value, resolved.context)` collapses the siblings on the
server). Errors are the typed errors of kvstore/errors.py, mapped back from the HTTP
answers (kvstore/http_codec.py): InvalidRequest, InvalidContext, SequencerRejected,
SiblingLimitExceeded, QuorumFailed (`.indeterminate`: a write may have been applied),
NodeUnavailable (no node answered; for a write that was sent, it may have been applied).

Failover: requests go to one node at a time, starting with the last that answered. A node
that cannot be connected to is skipped for any request. After a request was sent, only a
read moves on to the next node (on a lost answer, a timeout or a 503); a write answers
its error at once, since retrying it elsewhere could apply it twice (as two siblings).

`timeout` (seconds) bounds each request on the client; a per-call `timeout` is also sent to
the node as `timeout_ms` (its quorum deadline) and the client waits a second longer.
`Client` keeps one keep-alive connection per node and thread.

`token` (docs/auth.md) goes with every request as `Authorization: Bearer`; a node that
refuses it raises Unauthenticated (401) or Forbidden (403), kvstore/errors.py.

TLS (docs/tls.md): `tls_ca` (the CA that signed the nodes' certificates), `tls_cert` and
`tls_key` (a client certificate, optional), or nodes given as `https://host:port` make every
request HTTPS with the node's certificate and host name verified (kvstore/tls.py).
"""

from __future__ import annotations

import http.client
import json
import logging
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from kvstore.client_core import (
    Call,
    GetResponse,
    Headers,
    Nodes,
    Resolver,
    Sent,
    auth_headers,
    error_of,
    failover_worthy,
    get_call,
    lost,
    parse_node,
    read_get,
    read_json,
    read_write,
    unsent,
    with_headers,
    write_call,
)
from kvstore.errors import InvalidRequest, NodeUnavailable, RinglockError
from kvstore.tls import TLSError, client_setup

if TYPE_CHECKING:
    import aiohttp

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 10.0
GRACE = 1.0  # how much longer the client waits than the deadline it gave the node

__all__ = ["AsyncClient", "Client", "GetResponse"]


class Client:
    """Blocking client; see the module docstring."""

    def __init__(self, nodes: Sequence[str] | str | None = None, *,
                 timeout: float = DEFAULT_TIMEOUT, resolver: Resolver | None = None,
                 token: str | None = None,
                 tls_ca: str | None = None, tls_cert: str | None = None,
                 tls_key: str | None = None) -> None:
        self._nodes = Nodes(nodes)
        self._auth = auth_headers(token)  # Authorization: Bearer (docs/auth.md)
        self._scheme, self._tls = _tls_setup(nodes, tls_ca, tls_cert, tls_key)
        self.timeout = timeout
        self.resolver = resolver
        self._local = threading.local()

    def get(self, key: bytes, *, r: int | None = None,
            timeout: float | None = None) -> GetResponse:
        call = get_call(key, r=r, timeout=timeout)
        node, (status, headers, body) = self._send(call, timeout)
        return read_get(status, headers, body, node, self.resolver)

    def put(self, key: bytes, value: bytes, context: bytes | str | None = None, *,
            w: int | None = None, sequencer: str | None = None,
            timeout: float | None = None) -> bytes:
        """Store `value`; returns the new context."""
        call = write_call("PUT", key, value, context=context, w=w, sequencer=sequencer,
                          timeout=timeout)
        node, (status, headers, body) = self._send(call, timeout)
        return read_write(status, headers, body, node)

    def delete(self, key: bytes, context: bytes | str | None = None, *, w: int | None = None,
               sequencer: str | None = None, timeout: float | None = None) -> bytes:
        """Write a tombstone; returns the new context."""
        call = write_call("DELETE", key, b"", context=context, w=w, sequencer=sequencer,
                          timeout=timeout)
        node, (status, headers, body) = self._send(call, timeout)
        return read_write(status, headers, body, node)

    def health(self) -> dict:
        return self._info("/health")

    def ring(self) -> dict:
        return self._info("/ring")

    def status(self) -> dict:
        return self._info("/status")

    def _info(self, path: str) -> dict:
        node, (status, _headers, body) = self._send(Call("GET", path, {}, b"", True), None)
        return read_json(status, body, node)

    def admin(self, op: str, body: dict | None = None) -> dict:
        """An operator command (`join`, `leave`, `remove`; kvstore/membership_http.py) on
        the first node that answers, or `members` (GET)."""
        if op == "members":
            return self._info("/admin/v1/members")
        call = Call("POST", f"/admin/v1/{op}", {"Content-Type": "application/json"},
                    json.dumps(body or {}).encode())
        node, (status, _headers, answer) = self._send(call, None)
        return read_json(status, answer, node)

    def close(self) -> None:
        for conn in getattr(self._local, "conns", {}).values():
            conn.close()
        self._local.conns = {}

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, call: Call, timeout: float | None):
        wait = self.timeout if timeout is None else timeout + GRACE
        call = with_headers(call, self._auth)
        last: RinglockError | None = None
        for node in self._nodes.order():
            try:
                answer = self._exchange(node, call, wait)
            except NodeUnavailable as exc:  # not sent: any request may go elsewhere
                last = exc
                continue
            except Sent as sent:
                if not call.retry_after_send:
                    raise sent.error from None
                last = sent.error
                continue
            self._nodes.answered(node)
            if call.retry_after_send and answer[0] == 503:
                last = error_of(answer, node)
                if failover_worthy(last):
                    continue
            return node, answer
        assert last is not None
        raise last

    def _exchange(self, node: str, call: Call, wait: float):
        conns = self._local.__dict__.setdefault("conns", {})
        for attempt in (1, 2):
            conn = conns.get(node)
            reused = conn is not None and conn.sock is not None
            if conn is None:
                host, port = parse_node(node)
                conn = conns[node] = (
                    http.client.HTTPConnection(host, port, timeout=wait) if self._tls is None
                    else http.client.HTTPSConnection(host, port, timeout=wait,
                                                     context=self._tls))
            conn.timeout = wait
            if conn.sock is not None:
                conn.sock.settimeout(wait)
            try:
                if conn.sock is None:
                    conn.connect()
            except OSError as exc:
                conn.close()
                raise unsent(node, exc) from None
            try:
                conn.request(call.method, call.path, body=call.body or None,
                             headers=call.headers)
                response = conn.getresponse()
                body = response.read()
                headers = {k: v for k, v in response.getheaders()}
                if response.will_close:
                    conn.close()
                return response.status, Headers(headers), body
            except (http.client.RemoteDisconnected, BrokenPipeError,
                    ConnectionResetError) as exc:
                conn.close()  # a kept-alive connection the node closed meanwhile: once more
                if not (reused and attempt == 1):
                    raise lost(node, call, exc) from None
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                raise lost(node, call, exc) from None
        raise AssertionError("unreachable")


class AsyncClient:
    """The asyncio client: the same methods as `Client`, as coroutines."""

    def __init__(self, nodes: Sequence[str] | str | None = None, *,
                 timeout: float = DEFAULT_TIMEOUT, resolver: Resolver | None = None,
                 token: str | None = None,
                 tls_ca: str | None = None, tls_cert: str | None = None,
                 tls_key: str | None = None) -> None:
        self._nodes = Nodes(nodes)
        self._auth = auth_headers(token)  # Authorization: Bearer (docs/auth.md)
        self._scheme, self._tls = _tls_setup(nodes, tls_ca, tls_cert, tls_key)
        self.timeout = timeout
        self.resolver = resolver
        self._session: aiohttp.ClientSession | None = None

    async def get(self, key: bytes, *, r: int | None = None,
                  timeout: float | None = None) -> GetResponse:
        node, (status, headers, body) = await self._send(get_call(key, r=r, timeout=timeout),
                                                         timeout)
        return read_get(status, headers, body, node, self.resolver)

    async def put(self, key: bytes, value: bytes, context: bytes | str | None = None, *,
                  w: int | None = None, sequencer: str | None = None,
                  timeout: float | None = None) -> bytes:
        call = write_call("PUT", key, value, context=context, w=w, sequencer=sequencer,
                          timeout=timeout)
        node, (status, headers, body) = await self._send(call, timeout)
        return read_write(status, headers, body, node)

    async def delete(self, key: bytes, context: bytes | str | None = None, *,
                     w: int | None = None, sequencer: str | None = None,
                     timeout: float | None = None) -> bytes:
        call = write_call("DELETE", key, b"", context=context, w=w, sequencer=sequencer,
                          timeout=timeout)
        node, (status, headers, body) = await self._send(call, timeout)
        return read_write(status, headers, body, node)

    async def health(self) -> dict:
        return await self._info("/health")

    async def ring(self) -> dict:
        return await self._info("/ring")

    async def status(self) -> dict:
        return await self._info("/status")

    async def _info(self, path: str) -> dict:
        node, (status, _h, body) = await self._send(Call("GET", path, {}, b"", True), None)
        return read_json(status, body, node)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _send(self, call: Call, timeout: float | None):
        wait = self.timeout if timeout is None else timeout + GRACE
        call = with_headers(call, self._auth)
        if self._session is None:
            import aiohttp  # here, so that the blocking client (and `kv get`) starts fast

            self._session = aiohttp.ClientSession(
                auto_decompress=False, connector=aiohttp.TCPConnector(ssl=self._tls or True))
        last: RinglockError | None = None
        for node in self._nodes.order():
            try:
                answer = await self._exchange(node, call, wait)
            except NodeUnavailable as exc:
                last = exc
                continue
            except Sent as sent:
                if not call.retry_after_send:
                    raise sent.error from None
                last = sent.error
                continue
            self._nodes.answered(node)
            if call.retry_after_send and answer[0] == 503:
                last = error_of(answer, node)
                if failover_worthy(last):
                    continue
            return node, answer
        assert last is not None
        raise last

    async def _exchange(self, node: str, call: Call, wait: float):
        import aiohttp
        import yarl

        assert self._session is not None
        url = yarl.URL(f"{self._scheme}://{node}{call.path}", encoded=True)
        try:
            async with self._session.request(
                call.method, url, data=call.body or None, headers=call.headers,
                timeout=aiohttp.ClientTimeout(total=wait),
            ) as response:
                body = await response.read()
                return response.status, Headers(dict(response.headers)), body
        except aiohttp.ClientConnectorError as exc:
            raise unsent(node, exc) from None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise lost(node, call, exc) from None


def _tls_setup(nodes, ca, cert, key):
    """kvstore.tls.client_setup, its errors as InvalidRequest (a clear one-line message)."""
    try:
        return client_setup(nodes, ca, cert, key)
    except TLSError as exc:
        raise InvalidRequest(str(exc)) from None
