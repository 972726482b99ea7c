"""The public HTTP API of a node: `/kv/{key}` GET/PUT/DELETE, `/health`, `/ring`, `/status`.

A user of Riak's HTTP API should feel at home (docs/openapi.yaml is the reference):

- `GET /kv/{key}[?r=&timeout_ms=]`: 200 with the value (`application/octet-stream`) and the
  `X-Ringlock-Context` header; 300 Multiple Choices with a `multipart/mixed` body (one part
  per live sibling, in dot order) when concurrent writes left several; 404 with a JSON error
  when the key is absent or deleted (the context header is still set when a tombstone
  exists, so a client can write over the delete causally). `Accept: application/json`
  answers `{"values": [base64...], "context": "...", "deleted": bool}` with 200 or 404.
  A tombstone concurrent with live values is not shown: the live values answer (a put with
  the returned context replaces the tombstone too).
- `PUT /kv/{key}[?w=&timeout_ms=]` (body = value, at most `max_value_bytes`) and
  `DELETE /kv/{key}[?w=&timeout_ms=]` (no body): optional `X-Ringlock-Context` (the context
  of the read this write replaces) and `X-Ringlock-Sequencer` (a lock-service sequencer;
  the write is refused with 409 unless it is current); 204 with the new context.
- Every error is JSON `{"error": code, "message": sentence, ...}` (codes in
  kvstore/http_codec.py `error_for`): 400 bad key, parameter or context; 404; 405; 409
  sequencer or sibling limit; 413 value too large; 503 quorum not reached (with
  `indeterminate`: a write may still have been applied). A refused request reaches the
  coordinator only after every check passed, so it changes nothing.

Mounting (kvstore/node.py): `install(app, coordinator, node_info)` adds the routes and the
`json_errors` middleware (which turns aiohttp's plain-text 404/405 answers for paths nobody
serves into the same JSON shape); `public_routes(...)` gives the routes alone.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

from kvstore import vclock
from kvstore.errors import InvalidRequest
from kvstore.http_codec import (
    CONTEXT_HEADER,
    DEFAULT_MAX_VALUE_BYTES,
    OCTET_STREAM,
    SEQUENCER_HEADER,
    b64,
    encode_multipart,
    error_for,
    parse_key,
    parse_params,
    parse_sequencer,
)
from kvstore.ring import Ring
from lockservice.sequencer import Sequencer

logger = logging.getLogger(__name__)

KV_PREFIX = "/kv/"
_CHUNK = 64 << 10
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Coordinator(Protocol):
    """The part of kvstore/coordinator.py this module calls (the contract's interface)."""

    async def get(self, key: bytes, *, r: int | None = None,
                  timeout_s: float | None = None) -> Any: ...
    async def put(self, key: bytes, value: bytes, *, context: bytes | None = None,
                  w: int | None = None, timeout_s: float | None = None,
                  sequencer: str | None = None) -> Any: ...
    async def delete(self, key: bytes, *, context: bytes | None = None, w: int | None = None,
                     timeout_s: float | None = None, sequencer: str | None = None) -> Any: ...


@dataclass(frozen=True)
class NodeInfo:
    """What the node tells the public API about itself (read on every /ring, /status)."""

    name: str
    ring: Callable[[], Ring]                 # the current ring
    is_alive: Callable[[str], bool]          # the failure detector's view of a member
    status: Callable[[], dict] = field(default=dict)  # extra /status fields
    max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES
    joining: Callable[[], bool] = field(default=lambda: False)  # --join still in flight


class ValueTooLarge(Exception):
    """The request body is over the node's value limit (answered 413)."""


def json_error(status: int, code: str, message: str, *,
               headers: dict[str, str] | None = None, **extra: Any) -> web.Response:
    return web.json_response({"error": code, "message": message, **extra}, status=status,
                             headers=headers)


def _raw_key(request: web.Request) -> str:
    return request.rel_url.raw_path[len(KV_PREFIX):]


def _timeout(params: dict[str, int]) -> float | None:
    ms = params.get("timeout_ms")
    return None if ms is None else ms / 1000


def _context(request: web.Request) -> bytes | None:
    text = request.headers.get(CONTEXT_HEADER)
    if text is None:
        return None
    vclock.decode_context(text)  # InvalidContext (400) before the coordinator is asked
    return text.encode("ascii")


async def _read_value(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise ValueTooLarge
    chunks, size = [], 0
    try:
        async for chunk in request.content.iter_chunked(_CHUNK):
            size += len(chunk)
            if size > limit:
                raise ValueTooLarge
            chunks.append(chunk)
    except ConnectionResetError:
        raise BodyCut from None
    return b"".join(chunks)


class BodyCut(InvalidRequest):
    """The connection ended inside the request body: the client went away (400, logged at
    DEBUG: a client hanging up is not the node's error)."""

    def __init__(self) -> None:
        super().__init__("the request body ended before it was complete")


class PublicApi:
    """The handlers; one per node, sharing its coordinator."""

    def __init__(self, coordinator: Coordinator, node_info: NodeInfo) -> None:
        self.coordinator = coordinator
        self.info = node_info

    def routes(self) -> list[web.RouteDef]:
        kv = r"/kv/{key:[\s\S]+}"  # any bytes, newlines and %2F included
        return [
            web.get(kv, self._guard(self.get)),
            web.put(kv, self._guard(self.put)),
            web.delete(kv, self._guard(self.delete)),
            web.route("*", kv, self.not_allowed),
            web.route("*", "/kv/", self.empty_key),
            web.route("*", "/kv", self.empty_key),
            web.get("/health", self.health),
            web.get("/ring", self.ring),
            web.get("/status", self.status),
        ]

    def _guard(self, handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            try:
                return await handler(request)
            except ValueTooLarge:
                limit = self.info.max_value_bytes
                return json_error(413, "too_large", f"the value is larger than the {limit} "
                                  "bytes this node accepts; nothing was written", limit=limit)
            except web.HTTPException:
                raise
            except BodyCut as exc:
                logger.debug("public API %s %s: %s", request.method,
                             request.rel_url.raw_path[:200], exc)
                return json_error(400, "invalid_request", str(exc))
            except Exception as exc:  # typed errors answer 4xx/503; others 500, logged
                status, body = error_for(exc)
                if status == 500:
                    logger.error("public API %s %s failed", request.method,
                                 request.rel_url.raw_path[:200], exc_info=exc)
                return web.json_response(body, status=status)
        return guarded

    async def get(self, request: web.Request) -> web.Response:
        key = parse_key(_raw_key(request))
        params = parse_params(request.query, ("r", "timeout_ms"))
        result = await self.coordinator.get(key, r=params.get("r"), timeout_s=_timeout(params))
        state = result.state
        context = result.context.decode("ascii") if state.siblings else ""  # "": never written
        values, deleted = state.values, not state.values and bool(state.siblings)
        headers = {CONTEXT_HEADER: context} if context else {}
        if "application/json" in request.headers.get("Accept", ""):
            body = {"values": [b64(v) for v in values], "context": context, "deleted": deleted}
            return web.json_response(body, status=200 if values else 404, headers=headers)
        if not values:
            what = "was deleted" if deleted else "does not exist"
            return json_error(404, "not_found", f"the key {what}", headers=headers,
                              deleted=deleted)
        if len(values) == 1:
            return web.Response(body=values[0], content_type=OCTET_STREAM, headers=headers)
        content_type, body = encode_multipart(values)
        headers["Content-Type"] = content_type
        return web.Response(status=300, body=body, headers=headers)

    async def put(self, request: web.Request) -> web.Response:
        key, params, context, sequencer = self._write_args(request)
        value = await _read_value(request, self.info.max_value_bytes)
        result = await self.coordinator.put(key, value, context=context, w=params.get("w"),
                                            timeout_s=_timeout(params), sequencer=sequencer)
        return web.Response(status=204, headers={CONTEXT_HEADER: result.context.decode()})

    async def delete(self, request: web.Request) -> web.Response:
        key, params, context, sequencer = self._write_args(request)
        try:
            if request.content_length or await request.content.read(1):
                raise InvalidRequest("a DELETE carries no body")
        except ConnectionResetError:
            raise BodyCut from None
        result = await self.coordinator.delete(key, context=context, w=params.get("w"),
                                               timeout_s=_timeout(params), sequencer=sequencer)
        return web.Response(status=204, headers={CONTEXT_HEADER: result.context.decode()})

    @staticmethod
    def _write_args(request: web.Request) -> tuple[bytes, dict[str, int], bytes | None,
                                                   str | None]:
        key = parse_key(_raw_key(request))
        params = parse_params(request.query, ("w", "timeout_ms"))
        sequencer = parse_sequencer(request.headers.get(SEQUENCER_HEADER))
        if sequencer is not None:
            try:
                Sequencer.from_token(sequencer)
            except ValueError:  # BadSequencerToken: 400 before any fence is asked
                raise InvalidRequest(f"{SEQUENCER_HEADER} is not a sequencer token "
                                     "(take it from the lock service's acquire)") from None
        return key, params, _context(request), sequencer

    async def not_allowed(self, request: web.Request) -> web.Response:
        return json_error(405, "method_not_allowed",
                          f"{request.method} is not allowed on /kv/{{key}}; use GET, PUT or "
                          "DELETE", headers={"Allow": "GET, HEAD, PUT, DELETE"})

    async def empty_key(self, request: web.Request) -> web.Response:
        return json_error(400, "invalid_request",
                          "the key is empty: use /kv/{key} with a 1..1024 byte key")

    async def health(self, request: web.Request) -> web.Response:
        """200 once the node serves as a cluster member; 503 "joining" while its --join is
        in flight (a readiness probe keeps clients away from a node that has no ring yet)."""
        if self.info.joining():
            return web.json_response({"status": "joining", "node": self.info.name}, status=503)
        return web.json_response({"status": "ok", "node": self.info.name})

    async def ring(self, request: web.Request) -> web.Response:
        ring = self.info.ring()
        owners = ring.owners
        members = [{"name": m, "alive": m == self.info.name or self.info.is_alive(m),
                    "partitions": owners.count(m)} for m in ring.members]
        return web.json_response({"node": self.info.name, "version": ring.version,
                                  "ring_size": ring.ring_size, "members": members,
                                  "owners": list(owners)})

    async def status(self, request: web.Request) -> web.Response:
        ring = self.info.ring()
        body = {"node": self.info.name, "ring_version": ring.version,
                "members": len(ring.members), "max_value_bytes": self.info.max_value_bytes}
        body.update(self.info.status())
        return web.json_response(body, dumps=_dumps)


def _dumps(obj: Any) -> str:
    def default(o: Any) -> Any:  # status dicts may hold sets, tuples or bytes
        if isinstance(o, set | frozenset):
            return sorted(o, key=str)
        if isinstance(o, bytes):
            return b64(o)
        return str(o)
    return json.dumps(obj, default=default)


def public_routes(coordinator: Coordinator, node_info: NodeInfo) -> list[web.RouteDef]:
    return PublicApi(coordinator, node_info).routes()


_CODES = {400: "invalid_request", 404: "not_found", 405: "method_not_allowed",
          413: "too_large"}


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn aiohttp's plain-text error answers (unknown path, wrong method) into JSON."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        path = request.rel_url.raw_path[:200]
        if exc.status == 404:
            message = f"no such endpoint: {request.method} {path}"
        elif exc.status == 405:
            message = f"{request.method} is not allowed on {path}"
        else:
            message = exc.text or exc.reason
        allow = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        return json_error(exc.status, _CODES.get(exc.status, "http_error"), message,
                          headers=allow)


def install(app: web.Application, coordinator: Coordinator, node_info: NodeInfo) -> None:
    """Mount the public API on `app` (before it starts): routes plus `json_errors`."""
    app.middlewares.append(json_errors)
    app.add_routes(public_routes(coordinator, node_info))
