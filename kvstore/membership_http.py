"""HTTP side of kvstore.membership: its endpoints, and the client calls it makes.

Operator endpoints (JSON bodies; errors are `{"error": code, "message": sentence}`; the
CLI's `kv cluster join|leave|remove|members` call these):
    POST /admin/v1/join    {"seed": "host:port"} -> 200 status; 409 refused; 503 seed down
    POST /admin/v1/leave   {}                    -> 202 {"status": "leaving", "node",
                           "ring_version"}; the hand-off goes on in the background and
                           the node's status turns "left" when it is done; 409 refused
    POST /admin/v1/remove  {"node": "host:port"} -> 200 status; 409 refused (the node is
                           alive, not a member, or this node itself)
    GET  /admin/v1/members                       -> 200 status: {"node", "status",
                           "ring_version", "ring_size", "claimant", "converged",
                           "members": {name: {"member", "alive", "phi", "status",
                           "ring_version", "partitions"}}, "transfers": {...} | null}
Internal endpoints (msgpack bodies, `application/x-msgpack`):
    POST /internal/v1/gossip         a gossip message (kvstore/gossip.py) both ways
    POST /internal/v1/gossip/change  {"op": "join"|"leave"|"remove", "node": str,
                                      "hops": int, "ring"?: bytes (the forwarder's
                                      ring, adopted first when it wins)}
                                      -> {"ring": Ring.to_bytes()};
                                      409 JSON when the claimant refuses
Every body is size-bounded and validated; a bad one gets 400 `{"error": "bad_request"}`
with a message and changes nothing.
"""
from __future__ import annotations

import asyncio
import io
import json
import logging
from typing import TYPE_CHECKING, Any

import aiohttp
import msgpack
from aiohttp import web

from kvstore import gossip
from kvstore.claimant import NoClaimant
from kvstore.errors import InvalidRing, MembershipError, NodeUnavailable, WireError
from kvstore.ring import MAX_NODE_NAME_BYTES, MAX_SERIALISED_BYTES, Ring

if TYPE_CHECKING:
    from kvstore.membership import Membership

log = logging.getLogger(__name__)

MAX_ADMIN_BODY = 4096
LARGE_BODY = 1 << 20  # aiohttp wants larger request bodies as a file-like object
OPS = ("join", "leave", "remove")


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status)


async def _body(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise WireError(f"body of {request.content_length} bytes is over the {limit} limit")
    chunks, size = [], 0
    try:
        while chunk := await request.content.read(1 << 16):  # b"" at the end of the body
            size += len(chunk)
            if size > limit:
                raise WireError(f"body is over the {limit} byte limit")
            chunks.append(chunk)
    except ConnectionResetError:  # the client went away inside the body: not our error
        raise WireError("the body ended before it was complete") from None
    return b"".join(chunks)


async def _json(request: web.Request) -> dict[str, Any]:
    data = await _body(request, MAX_ADMIN_BODY)
    if not data:  # no body is {}; a blank one is not JSON
        return {}
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError) as exc:  # RecursionError: "[[[[..." nested deep
        raise WireError(f"body is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise WireError("body must be a JSON object")
    return obj


def _node_field(obj: dict[str, Any], field: str) -> str:
    """`obj[field]` as a node name "host:port" (port 1..65535)."""
    value = obj.get(field)
    host, _, port = value.rpartition(":") if isinstance(value, str) else ("", "", "")
    if (not host or not (port.isascii() and port.isdigit() and len(port) <= 5)
            or not 1 <= int(port) <= 65535
            or not len(value.encode("utf-8", "replace")) <= MAX_NODE_NAME_BYTES):
        raise WireError(f"{field!r} must be a node name \"host:port\" with a port in "
                        f"1..65535, at most {MAX_NODE_NAME_BYTES} bytes")
    return value


def _ring_field(obj: dict[str, Any]) -> Ring | None:
    """The forwarder's ring of a change request (None when the field is absent)."""
    if "ring" not in obj:
        return None
    if not isinstance(obj["ring"], bytes):
        raise WireError("'ring' must be the bytes of a serialised ring")
    try:
        return Ring.from_bytes(obj["ring"])
    except InvalidRing as exc:
        raise WireError(f"'ring' is not a valid ring: {exc}") from None


def _only_node_field(obj: dict[str, Any], field: str) -> str:
    """`_node_field`, for a body that must hold nothing else (an admin command)."""
    unknown = sorted(set(obj) - {field})
    if unknown:
        raise WireError(f"unknown field(s) {', '.join(map(repr, unknown))[:200]}; "
                        f"the body is {{{field!r}: \"host:port\"}}")
    return _node_field(obj, field)


def _log_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("leave failed: %s", task.exception())


def status_of(m: Membership) -> dict[str, Any]:
    """What `GET /admin/v1/members` answers (Membership.status)."""
    g = m.gossiper
    members = {}
    for name in sorted(set(m.ring.members) | set(g.view)):
        s = g.me if name == m.name else g.view.get(name)
        members[name] = {
            "member": name in m.ring.members, "alive": m.is_alive(name),
            "phi": round(g.phi(name), 3), "status": s.status if s else "unknown",
            "ring_version": s.ring_version if s else None,
            "partitions": len(m.ring.owned_by(name)),
        }
    return {"node": m.name, "status": g.me.status, "ring_version": m.ring.version,
            "ring_size": m.ring.ring_size, "claimant": m.claimant(),
            "converged": m.converged(), "members": members,
            "transfers": m.transfers.stats() if m.transfers else None}


def routes(m: Membership) -> list[web.RouteDef]:
    async def handle_gossip(request: web.Request) -> web.Response:
        try:
            msg = gossip.decode_message(await _body(request, gossip.MAX_MESSAGE_BYTES))
            peer = msg.states.get(msg.sender)
            await m.gossiper.absorb(msg)
        except WireError as exc:
            return _error(400, "bad_request", str(exc))
        answer = m.gossiper.message((peer.ring_version, peer.ring_digest) if peer else None,
                                    gossip.delta(m.states(), msg.states))
        return web.Response(body=answer.encode(), content_type="application/x-msgpack")

    async def handle_change(request: web.Request) -> web.Response:
        try:
            data = await _body(request, MAX_ADMIN_BODY + MAX_SERIALISED_BYTES)
            try:
                obj = msgpack.unpackb(data, raw=False, max_ext_len=0,
                                      max_bin_len=MAX_SERIALISED_BYTES)
            except (ValueError, msgpack.UnpackException) as exc:
                raise WireError(f"change body is not msgpack: {exc}") from None
            if not isinstance(obj, dict) or set(obj) - {"ring"} != {"op", "node", "hops"}:
                raise WireError("change body must be a map of op, node, hops and "
                                "optionally ring")
            if obj["op"] not in OPS or type(obj["hops"]) is not int or obj["hops"] < 0:
                raise WireError(f"op must be one of {OPS} and hops a non-negative int")
            node = _node_field(obj, "node")
            ring = await m.change(obj["op"], node, hops=obj["hops"], ring=_ring_field(obj))
        except WireError as exc:
            return _error(400, "bad_request", str(exc))
        except NoClaimant as exc:
            return _error(409, "no_claimant", exc.reason)
        except MembershipError as exc:
            return _error(409, "membership", exc.reason)
        except NodeUnavailable as exc:
            return _error(503, "unavailable", str(exc))
        return web.Response(body=msgpack.packb({"ring": ring.to_bytes()}),
                            content_type="application/x-msgpack")

    async def admin(request: web.Request, action) -> web.Response:
        try:
            return await action(await _json(request))
        except WireError as exc:
            return _error(400, "bad_request", str(exc))
        except MembershipError as exc:
            return _error(409, "membership", exc.reason)
        except NodeUnavailable as exc:
            return _error(503, "unavailable", str(exc))

    async def do_join(obj: dict[str, Any]) -> web.Response:
        await m.join(_only_node_field(obj, "seed"))
        return web.json_response(m.status())

    async def do_remove(obj: dict[str, Any]) -> web.Response:
        await m.remove(_only_node_field(obj, "node"))
        return web.json_response(m.status())

    async def do_leave(obj: dict[str, Any]) -> web.Response:
        if obj:
            raise WireError("leave takes no fields")
        if m._leave_task is None or m._leave_task.done():
            if m.name not in m.ring.members:
                raise MembershipError(f"{m.name} is not a ring member")
            await m.change("leave", m.name)  # refusals answer 409 here, not in a task
            m._leave_task = asyncio.create_task(m.leave(), name=f"leave {m.name}")
            m._leave_task.add_done_callback(_log_failure)
        return web.json_response({"status": "leaving", "node": m.name,
                                  "ring_version": m.ring.version}, status=202)

    async def join(request: web.Request) -> web.Response:
        return await admin(request, do_join)

    async def leave(request: web.Request) -> web.Response:
        return await admin(request, do_leave)

    async def remove(request: web.Request) -> web.Response:
        return await admin(request, do_remove)

    async def members(request: web.Request) -> web.Response:
        return web.json_response(m.status())

    return [
        web.post("/internal/v1/gossip", handle_gossip),
        web.post("/internal/v1/gossip/change", handle_change),
        web.post("/admin/v1/join", join),
        web.post("/admin/v1/leave", leave),
        web.post("/admin/v1/remove", remove),
        web.get("/admin/v1/members", members),
    ]


# -- the client side --------------------------------------------------------------------------


async def post(session: aiohttp.ClientSession, target: str, path: str, body: bytes,
               timeout_s: float, *, scheme: str = "http") -> bytes:
    """POST a msgpack body to `target` (over `scheme`: https when TLS is on); the answer's
    bytes. Raises NodeUnavailable on a transport error or an unexpected status,
    MembershipError on 409 (a refused change)."""
    try:
        data_arg = io.BytesIO(body) if len(body) > LARGE_BODY else body
        async with session.post(f"{scheme}://{target}{path}", data=data_arg,
                                timeout=aiohttp.ClientTimeout(total=timeout_s),
                                headers={"Content-Type": "application/x-msgpack"}) as resp:
            data = await resp.read()
            if resp.status == 409:
                code, message = _error_of(data)
                raise (NoClaimant if code == "no_claimant" else MembershipError)(message)
            if resp.status != 200:
                raise NodeUnavailable(target, f"HTTP {resp.status}: {data[:200]!r}")
            return data
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        raise NodeUnavailable(target, f"{type(exc).__name__}: {exc}") from None


async def request_change(session: aiohttp.ClientSession, target: str, op: str, node: str,
                         hops: int, timeout_s: float, *, scheme: str = "http",
                         ring: Ring | None = None) -> Ring:
    """Ask `target` to have the claimant apply `op` to `node`; the resulting ring. A
    forwarded request carries the forwarder's `ring` (see Membership.change)."""
    fields: dict = {"op": op, "node": node, "hops": hops}
    if ring is not None:
        fields["ring"] = ring.to_bytes()
    body = msgpack.packb(fields)
    answer = await post(session, target, "/internal/v1/gossip/change", body, timeout_s,
                        scheme=scheme)
    try:
        return Ring.from_bytes(msgpack.unpackb(answer, raw=False)["ring"])
    except (ValueError, TypeError, KeyError, msgpack.UnpackException, InvalidRing) as exc:
        raise NodeUnavailable(target, f"bad change answer: {exc}") from None


def _error_of(data: bytes) -> tuple[str, str]:
    try:
        doc = json.loads(data)
        return str(doc["error"]), str(doc["message"])
    except (ValueError, KeyError, TypeError):
        return "", data[:200].decode("utf-8", "replace")
