"""The lock service's HTTP API under /lock/v1/ (docs/openapi.yaml, tag lock; docs/locks.md).

Every request is checked completely before anything is proposed: the body is a JSON object
of at most MAX_BODY bytes with exactly the documented fields and types (booleans are not
integers, unknown fields are refused), names and ids are in range. A bad request answers
400 `{"error": "bad_request", "message": ...}` and changes nothing. Errors are JSON
`{"error": code, "message": sentence, ...}`; the codes and statuses are in `_STATUS`.

A member that is not the leader forwards writes (and KeepAlive, which is one) to the leader
and relays its answer; a forwarded request carries FORWARDED so it is never forwarded
twice. When nothing reaches the leader (connection refused: it is down), the member waits
up to `leader_wait_s` for the next leader and relays to it, or serves the request if it now
leads itself: a fail-over costs the client a slower answer, not a 503 and a retry loop.
Linearizable reads are served here after a ReadIndex; `?stale=1` reads the local table.
With no leader known: 503 `{"error": "no_leader", "leader": null}`.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import aiohttp
from aiohttp import web

from lockservice.errors import BadSequencerToken, NoLeader, RequestRefused, Unavailable
from lockservice.http_checks import (
    BadRequest,
    check_name,
    fields,
    lock_name,
    path_id,
    stale_flag,
)
from lockservice.results import Reason
from lockservice.sequencer import LockMode
from raft.server import BodyTooLarge, read_body

if TYPE_CHECKING:
    from lockservice.server import LockServer

log = logging.getLogger(__name__)

PREFIX = "/lock/v1"
MAX_BODY = 64 * 1024  # a 16 KiB value in base64 plus the other fields
FORWARDED = "X-Ringlock-Forwarded"
CLIENT = "X-Ringlock-Client"  # a relayed request's client id, set by the relaying member
MAX_WAIT_MS = 300_000  # a waiting acquire is answered within 5 minutes; clients loop

# Reason -> (HTTP status, error code)
_STATUS: dict[Reason, tuple[int, str]] = {
    Reason.UNKNOWN_SESSION: (404, "unknown_session"),
    Reason.LEASE_ENDED: (410, "session_expired"),
    Reason.LOCK_BUSY: (409, "busy"),
    Reason.LOCK_DELAY: (409, "lock_delay"),
    Reason.ALREADY_HOLDER: (409, "already_holder"),
    Reason.ALREADY_WAITING: (409, "already_waiting"),
    Reason.NOT_HOLDER: (409, "not_holder"),
    Reason.NOT_WAITING: (409, "not_waiting"),
    Reason.NOT_WATCHING: (409, "not_watching"),
    Reason.NOT_FOUND: (404, "not_found"),
    Reason.VERSION_MISMATCH: (409, "version_mismatch"),
    Reason.SESSION_EXISTS: (409, "session_exists"),
    Reason.BAD_COMMAND: (400, "bad_request"),
    Reason.BAD_NAME: (400, "bad_name"),
    Reason.BAD_VALUE: (400, "bad_value"),
    Reason.BAD_TTL: (400, "bad_ttl"),
    Reason.BAD_LOCK_DELAY: (400, "bad_lock_delay"),
    Reason.TOO_MANY_SESSIONS: (429, "too_many_sessions"),
    Reason.TOO_MANY_CLIENT_SESSIONS: (429, "too_many_sessions"),
    Reason.TOO_MANY_WAITERS: (429, "too_many_waiters"),
    Reason.TOO_MANY_LOCKS: (429, "too_many_locks"),
    Reason.TOO_MANY_WATCHES: (429, "too_many_watches"),
    Reason.TOO_MANY_ENTRIES: (429, "too_many_entries"),
}


def error(status: int, code: str, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": code, "message": message, **extra}, status=status)


Handler = Callable[[web.Request, dict[str, Any]], Awaitable[web.StreamResponse]]


def lock_routes(server: LockServer) -> list[web.RouteDef]:
    """The /lock/v1/ routes of `server` (the Raft routes come from `server.routes()`)."""

    async def forward(request: web.Request, raw: bytes,
                      leader: int) -> web.StreamResponse | None:
        """Relay `request` to `leader` and its answer back; None when nothing reached it."""
        address = server.driver.addresses.get(leader)
        assert server.http is not None
        if address is None:
            return error(503, "no_leader", "the leader's address is unknown", leader=None)
        try:
            async with server.http.request(
                request.method, f"{'https' if server.peer_tls else 'http'}://{address}"
                f"{request.raw_path}", data=raw,
                headers={"Content-Type": "application/json", FORWARDED: str(server.id),
                         CLIENT: client_of(request, server)},
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=2,
                                              sock_read=max(server.max_hold_s,
                                                            MAX_WAIT_MS / 1000) + 30),
            ) as resp:
                body = await resp.read()
                return web.Response(status=resp.status, body=body,
                                    content_type=resp.content_type)
        except aiohttp.ClientConnectorError as exc:  # nothing reached the leader
            log.info("forwarding %s to member %d failed: %s", request.path, leader, exc)
            return None
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.info("forwarding %s to member %d failed: %s", request.path, leader, exc)
            return error(503, "unavailable", f"the leader (member {leader}) did not answer: "
                         f"{type(exc).__name__}", leader=None, may_have_applied=True)

    def endpoint(handler: Handler, *, writes: bool) -> Callable[[web.Request],
                                                                Awaitable[web.StreamResponse]]:
        async def run(request: web.Request) -> web.StreamResponse:
            try:
                raw = await read_body(request, MAX_BODY)
            except BodyTooLarge as exc:
                return error(413, "too_large", str(exc))
            except ConnectionResetError:  # the client went away inside the body
                log.debug("%s %s: the body ended early", request.method, request.path[:200])
                return error(400, "bad_request", "the body ended before it was complete")
            deadline = None
            while True:
                answer = await attempt(request, raw, handler, writes)
                if not isinstance(answer, _Unreachable):
                    return answer
                # Nothing reached the leader (it is down): wait for the next one and go
                # again, so that a fail-over costs the client one slow answer, not a 503.
                if deadline is None:
                    deadline = time.monotonic() + server.leader_wait_s
                if not await server.next_leader(answer.leader, answer.term, deadline):
                    return error(503, "no_leader", f"the leader (member {answer.leader}) is "
                                 "not reachable and no other was elected in time",
                                 leader=None, may_have_applied=False)

        return run

    async def attempt(request: web.Request, raw: bytes, handler: Handler,
                      writes: bool) -> web.StreamResponse | _Unreachable:
        term = server.term
        try:
            body = {} if request.method == "GET" else _body_of(raw)
            return await handler(request, body)
        except NotOwner as exc:
            return error(403, "forbidden", str(exc))
        except BadRequest as exc:
            return error(exc.status, "bad_request", str(exc))
        except BadSequencerToken as exc:
            return error(400, "bad_sequencer", str(exc))
        except RequestRefused as exc:
            status, code = _STATUS[exc.refused.reason]
            return error(status, code, exc.refused.detail, **exc.extra)
        except NoLeader as exc:
            if (exc.leader and exc.leader != server.id and writes
                    and FORWARDED not in request.headers):
                answer = await forward(request, raw, exc.leader)
                return _Unreachable(exc.leader, term) if answer is None else answer
            return error(503, "no_leader", str(exc), leader=exc.leader)
        except Unavailable as exc:
            return error(503, "unavailable", str(exc),
                         may_have_applied=exc.may_have_applied)

    async def open_session(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        f = fields(body, required={"ttl_ms": "u64"})
        lim = server.fsm.limits
        if not lim.min_ttl_ms <= f["ttl_ms"] <= lim.max_ttl_ms:
            raise BadRequest(f"ttl_ms must be in {lim.min_ttl_ms}..{lim.max_ttl_ms}")
        return web.json_response(
            await server.open_session(f["ttl_ms"], client_of(request, server)), status=201)

    def own(request: web.Request, session: int) -> int:
        """`session`, if the request may use it: a session opened by an authenticated
        principal is used by that principal only (ids are small numbers, easy to guess).
        Checked on the member that has the session (a relayed request again on the leader,
        by the client id the relaying member names); sessions counted by address are not
        bound (one client's address may change between members)."""
        record = server.fsm.sessions.get(session)
        if record is not None and record.client.startswith("principal:") \
                and client_of(request, server) != record.client:
            raise NotOwner(f"session {session} belongs to another principal; nothing changed")
        return session

    async def keepalive(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        f = fields(body, optional={"ack": "u64"})
        transport = request.transport

        def gone() -> bool:
            return transport is None or transport.is_closing()

        answer = await server.keepalive(own(request, path_id(request)), f.get("ack", 0), gone)
        if answer is None:
            return error(499, "client_gone", "the client closed the connection")
        return web.json_response(answer)

    async def close_session(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        fields(body)
        await server.close_session(own(request, path_id(request)))
        return web.Response(status=204)

    async def acquire(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        f = fields(body, required={"session": "u64"},
                   optional={"mode": "str", "wait_ms": "u64", "lock_delay_ms": "u64"})
        mode_name = f.get("mode", "exclusive")
        if mode_name not in ("exclusive", "shared"):
            raise BadRequest("mode must be \"exclusive\" or \"shared\"")
        wait_ms = f.get("wait_ms", 0)
        if wait_ms > MAX_WAIT_MS:
            raise BadRequest(f"wait_ms must be at most {MAX_WAIT_MS}")
        delay = f.get("lock_delay_ms")
        if delay is not None and delay > server.fsm.limits.max_lock_delay_ms:
            raise BadRequest(f"lock_delay_ms must be at most {server.fsm.limits.max_lock_delay_ms}")
        name = lock_name(request, server.fsm.limits)
        answer = await server.acquire(own(request, f["session"]), name,
                                      LockMode[mode_name.upper()],
                                      wait_ms, delay)
        return web.json_response(answer)

    async def release(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        f = fields(body, required={"session": "u64"})
        await server.release(own(request, f["session"]), lock_name(request, server.fsm.limits))
        return web.Response(status=204)

    async def get_lock(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        name = lock_name(request, server.fsm.limits)
        return web.json_response(await server.lock_info(name, stale=stale_flag(request)))

    async def check(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        f = fields(body, required={"sequencer": "str"})
        return web.json_response({"current": await server.check_sequencer(f["sequencer"])})

    async def put_entry(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        f = fields(body, required={"value": "str"},
                   optional={"expected_version": "u64", "ephemeral_session": "u64"})
        try:
            value = base64.b64decode(f["value"].encode("ascii"), validate=True)
        except (UnicodeError, binascii.Error):
            raise BadRequest("value must be standard base64") from None
        if len(value) > server.fsm.limits.max_value_bytes:
            raise BadRequest(f"a value is at most {server.fsm.limits.max_value_bytes} bytes",
                             status=413)
        name = lock_name(request, server.fsm.limits)
        ephemeral = f.get("ephemeral_session")
        if ephemeral is not None:
            own(request, ephemeral)
        answer = await server.put_entry(name, value, f.get("expected_version"), ephemeral)
        return web.json_response(answer)

    async def get_entry(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        name = lock_name(request, server.fsm.limits)
        found = await server.get_entry(name, stale=stale_flag(request))
        if found is None:
            return error(404, "not_found", f"no entry {name!r}")
        value, version = found
        return web.json_response({"value": base64.b64encode(value).decode(), "version": version})

    async def delete_entry(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        fields(body)
        expected = request.query.get("expected_version")
        if expected is not None and not (expected.isdigit() and len(expected) <= 18):
            raise BadRequest("expected_version must be a non-negative integer")
        name = lock_name(request, server.fsm.limits)
        await server.delete_entry(name, None if expected is None else int(expected))
        return web.Response(status=204)

    async def watch(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        f = fields(body, required={"prefix": "str"})
        prefix = f["prefix"]
        if prefix:
            check_name(prefix, server.fsm.limits, "prefix")
        await server.watch(own(request, path_id(request)), prefix)
        return web.Response(status=204)

    async def leader(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        return web.json_response(server.leader())

    async def status(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        return web.json_response(server.status())

    async def no_route(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        return error(404, "no_such_endpoint",
                     f"no endpoint {request.method} {request.path[:200]!r} in the lock API")

    w, r = {"writes": True}, {"writes": False}
    name = r"{name:[\s\S]+}"  # any name, "\n" too (".+" left such names unreachable)
    return [
        web.post(f"{PREFIX}/sessions", endpoint(open_session, **w)),
        web.post(f"{PREFIX}/sessions/{{id}}/keepalive", endpoint(keepalive, **w)),
        web.delete(f"{PREFIX}/sessions/{{id}}", endpoint(close_session, **w)),
        web.post(f"{PREFIX}/sessions/{{id}}/watches", endpoint(watch, **w)),
        web.post(f"{PREFIX}/locks/{name}/acquire", endpoint(acquire, **w)),
        web.post(f"{PREFIX}/locks/{name}/release", endpoint(release, **w)),
        web.get(f"{PREFIX}/locks/{name}", endpoint(get_lock, **r)),
        web.post(f"{PREFIX}/sequencers/check", endpoint(check, **r)),
        web.put(f"{PREFIX}/entries/{name}", endpoint(put_entry, **w)),
        web.get(f"{PREFIX}/entries/{name}", endpoint(get_entry, **r)),
        web.delete(f"{PREFIX}/entries/{name}", endpoint(delete_entry, **w)),
        web.get(f"{PREFIX}/leader", endpoint(leader, **r)),
        web.get(f"{PREFIX}/status", endpoint(status, **r)),
        web.route("*", rf"{PREFIX}/{{tail:[\s\S]*}}", endpoint(no_route, **r)),  # JSON 404, last
    ]


class _Unreachable:
    """A relay that reached nobody: the leader it was meant for, and the term then."""

    __slots__ = ("leader", "term")

    def __init__(self, leader: int, term: int) -> None:
        self.leader, self.term = leader, term


class NotOwner(Exception):
    """A request named a session another principal opened (403 forbidden)."""


def client_of(request: web.Request, server: LockServer) -> str:
    """Who `request` counts against for Limits.max_sessions_per_client.

    The authenticated principal when the node checks tokens and its middleware leaves the
    principal in `request["principal"]` ("principal:NAME"), else the remote address
    ("address:IP"). A request relayed by another member names its client in CLIENT; that is
    believed only from a member: an authenticated peer, or (without authentication) a
    connection from a member's host. Without authentication and with every member on one
    host, a local program can claim any client id: the limit stops runaway clients, and
    with tokens it holds per principal. The id is ASCII (names are percent-quoted).
    """
    principal = request.get("principal")
    relayed = request.headers.get(CLIENT)
    if (relayed is not None and FORWARDED in request.headers and relayed.isascii()
            and 0 < len(relayed) <= server.fsm.limits.max_client_bytes
            and _from_member(request, principal, server)):
        return relayed
    name = getattr(principal, "name", None)
    if isinstance(name, str) and name:
        return "principal:" + quote(name, safe="")[:server.fsm.limits.max_client_bytes - 10]
    return f"address:{request.remote or 'unknown'}"


def _from_member(request: web.Request, principal: Any, server: LockServer) -> bool:
    if principal is not None:
        return bool(getattr(principal, "peer", False))
    hosts = {a.rpartition(":")[0].strip("[]") for a in server.driver.addresses.values()}
    return request.remote in hosts


def _body_of(raw: bytes) -> dict[str, Any]:
    if not raw:  # no body is {}; a blank one is not JSON
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    return body
