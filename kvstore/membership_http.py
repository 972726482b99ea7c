"""HTTP endpoints of kvstore.membership: gossip, change requests, operator commands.

The endpoints and their bodies are listed in kvstore/membership.py's docstring. Every
body is size-bounded and validated; a bad one gets 400 with a message and changes nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

import msgpack
from aiohttp import web

from kvstore import gossip
from kvstore.errors import MembershipError, NodeUnavailable, WireError
from kvstore.ring import MAX_NODE_NAME_BYTES

if TYPE_CHECKING:
    from kvstore.membership import Membership

log = logging.getLogger(__name__)

MAX_ADMIN_BODY = 4096
OPS = ("join", "leave", "remove")


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status)


async def _body(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise WireError(f"body of {request.content_length} bytes is over the {limit} limit")
    data = await request.content.read(limit + 1)
    if len(data) > limit:
        raise WireError(f"body is over the {limit} byte limit")
    return data


async def _json(request: web.Request) -> dict[str, Any]:
    data = await _body(request, MAX_ADMIN_BODY)
    if not data.strip():
        return {}
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise WireError(f"body is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise WireError("body must be a JSON object")
    return obj


def _node_field(obj: dict[str, Any], field: str) -> str:
    value = obj.get(field)
    if not isinstance(value, str) or not 1 <= len(value.encode("utf-8", "replace")) <= (
            MAX_NODE_NAME_BYTES) or ":" not in value:
        raise WireError(f"{field!r} must be a node name \"host:port\"")
    return value


def routes(m: Membership) -> list[web.RouteDef]:
    async def handle_gossip(request: web.Request) -> web.Response:
        try:
            msg = gossip.decode_message(await _body(request, gossip.MAX_MESSAGE_BYTES))
            peer = msg.states.get(msg.sender)
            peer_id = (peer.ring_version, peer.ring_digest) if peer else (-1, -1)
            await m._absorb(msg)
        except WireError as exc:
            return _error(400, "bad_request", str(exc))
        ring = m.ring.to_bytes() if gossip.ring_wins(m.ring_id(), peer_id) else None
        states = dict(m._view)
        states[m.name] = m._me
        answer = gossip.GossipMessage(m.name, gossip.delta(states, msg.states), ring)
        return web.Response(body=answer.encode(), content_type="application/x-msgpack")

    async def handle_change(request: web.Request) -> web.Response:
        try:
            data = await _body(request, MAX_ADMIN_BODY)
            try:
                obj = msgpack.unpackb(data, raw=False, max_ext_len=0, max_bin_len=0)
            except (ValueError, msgpack.UnpackException) as exc:
                raise WireError(f"change body is not msgpack: {exc}") from None
            if not isinstance(obj, dict) or set(obj) != {"op", "node", "hops"}:
                raise WireError("change body must be a map with exactly op, node, hops")
            if obj["op"] not in OPS or type(obj["hops"]) is not int or obj["hops"] < 0:
                raise WireError(f"op must be one of {OPS} and hops a non-negative int")
            node = _node_field(obj, "node")
            ring = await m.change(obj["op"], node, hops=obj["hops"])
        except WireError as exc:
            return _error(400, "bad_request", str(exc))
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
        await m.join(_node_field(obj, "seed"))
        return web.json_response(m.status())

    async def do_remove(obj: dict[str, Any]) -> web.Response:
        await m.remove(_node_field(obj, "node"))
        return web.json_response(m.status())

    async def do_leave(obj: dict[str, Any]) -> web.Response:
        if obj:
            raise WireError("leave takes no fields")
        if m._leave_task is None or m._leave_task.done():
            if m.name not in m.ring.members:
                raise MembershipError(f"{m.name} is not a ring member")
            await m.change("leave", m.name)  # refusals answer 409 here, not in a task
            m._leave_task = asyncio.create_task(m.leave(), name=f"leave {m.name}")
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
