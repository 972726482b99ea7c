"""HTTP routes of anti-entropy: the exchange's internal calls and the operator's view.

Internal (msgpack bodies, antientropy/codec.py; a bad body answers 400 with
`{"error": "invalid", "message": ...}` in msgpack and changes nothing; over
codec.MAX_BODY_BYTES answers 413):

    POST /internal/v1/aae/nodes | keys | merge

Operator (JSON; errors are `{"error": code, "message": sentence}` with 400 `invalid`,
413 `too_large` for a body over MAX_ADMIN_BODY (cut off as it streams in), or 502
`peer_failed` when the peer failed):

    GET  /admin/v1/aae            status: settings, totals (exchanges, keys repaired,
                                  bytes, durations, failures), trees, and per partition
                                  {tree_age_s, last_exchange, last_peer, keys_repaired}
    POST /admin/v1/aae/exchange   {"peer"?: "h:p", "partitions"?: [int], "mode"?: "tree" |
                                  "full", "limited"?: bool} -> {"exchanges": [result...]}:
                                  exchange now with `peer` (default: every live replica);
                                  `limited` false skips the rate limit (default true)
    POST /admin/v1/aae/schedule   {"enabled"?, "interval_s"?, "keys_per_s"?, "bytes_per_s"?}
                                  -> the settings now
    POST /admin/v1/aae/rebuild    {"partitions"?: [int]} -> 202: queue tree rebuilds
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from aiohttp import web

from antientropy import codec
from antientropy.errors import InvalidMessage, PeerFailed

if TYPE_CHECKING:
    from antientropy.service import AntiEntropy

logger = logging.getLogger(__name__)

MAX_ADMIN_BODY = 1 << 16
_EXCHANGE = {"peer", "partitions", "mode", "limited"}
_SCHEDULE = {"enabled", "interval_s", "keys_per_s", "bytes_per_s"}
# A positive rate below these would make an exchange wait for tokens for ever.
_MIN_RATE = {"keys_per_s": 1, "bytes_per_s": 1024}


def routes(aae: AntiEntropy) -> list[web.RouteDef]:
    async def status(_request: web.Request) -> web.Response:
        return _json(200, aae.status())

    return [*(web.post(f"/internal/v1/aae/{op}", _internal(aae, op))
              for op in ("nodes", "keys", "merge")),
            web.get("/admin/v1/aae", status),
            web.post("/admin/v1/aae/exchange", _admin(aae, _exchange)),
            web.post("/admin/v1/aae/schedule", _admin(aae, _schedule)),
            web.post("/admin/v1/aae/rebuild", _admin(aae, _rebuild))]


def _internal(aae: AntiEntropy, op: str):
    async def handle(request: web.Request) -> web.Response:
        if (request.content_length or 0) > codec.MAX_BODY_BYTES:
            return _packed(413, {"error": "too_large", "message": "body over the limit"})
        try:
            body = await request.content.read(codec.MAX_BODY_BYTES + 1)
            while len(body) <= codec.MAX_BODY_BYTES and (more := await request.content.read(
                    codec.MAX_BODY_BYTES + 1 - len(body))):
                body += more
            if len(body) > codec.MAX_BODY_BYTES:
                return _packed(413, {"error": "too_large", "message": "body over the limit"})
            reply = await aae.responder.handle(op, body)
        except ConnectionResetError:  # the peer went away inside the body: not our error
            logger.debug("aae %s from %s: the body ended early", op, request.remote)
            return _packed(400, {"error": "invalid", "message": "the body ended early"})
        except InvalidMessage as exc:
            logger.debug("aae %s from %s refused: %s", op, request.remote, exc)
            return _packed(400, {"error": "invalid", "message": str(exc)[:2000]})
        return web.Response(body=reply, content_type=codec.CONTENT_TYPE)

    handle.__name__ = f"aae_{op}"
    return handle


def _packed(status: int, obj: dict) -> web.Response:
    return web.Response(status=status, body=codec.pack(obj), content_type=codec.CONTENT_TYPE)


def _json(status: int, obj: Any) -> web.Response:
    return web.Response(status=status, text=json.dumps(obj), content_type="application/json")


async def _admin_body(request: web.Request) -> bytes | None:
    """The whole body, or None as soon as it is known to be over MAX_ADMIN_BODY (a declared
    length over it is refused before a byte is read; a stream is cut off at the limit)."""
    if (request.content_length or 0) > MAX_ADMIN_BODY:
        return None
    chunks, size = [], 0
    try:
        while chunk := await request.content.read(1 << 16):  # b"" at the end of the body
            size += len(chunk)
            if size > MAX_ADMIN_BODY:
                return None
            chunks.append(chunk)
    except ConnectionResetError:  # the client went away inside the body: not our error
        raise InvalidMessage("the body ended before it was complete") from None
    return b"".join(chunks)


def _admin(aae: AntiEntropy, action):
    async def handle(request: web.Request) -> web.Response:
        try:
            data = await _admin_body(request)
            if data is None:
                return _json(413, {"error": "too_large",
                                   "message": f"the body is over {MAX_ADMIN_BODY} bytes"})
            try:
                body = json.loads(data) if data else {}  # no body: {}; blanks are not JSON
            except (ValueError, RecursionError) as exc:  # RecursionError: "[[[[..." deep
                raise InvalidMessage(f"body is not JSON: {exc}") from None
            if not isinstance(body, dict):
                raise InvalidMessage("body must be a JSON object")
            return await action(aae, body)
        except (InvalidMessage, ValueError, RecursionError) as exc:  # deep "[[[..." too
            return _json(400, {"error": "invalid", "message": str(exc)[:2000]})
        except PeerFailed as exc:
            return _json(502, {"error": "peer_failed", "message": str(exc)})
    return handle


def _fields(body: dict, allowed: set[str]) -> None:
    if body.keys() - allowed:
        raise InvalidMessage(f"unknown fields {sorted(body.keys() - allowed)}; allowed: "
                             f"{sorted(allowed)}")


async def _exchange(aae: AntiEntropy, body: dict) -> web.Response:
    _fields(body, _EXCHANGE)
    sched = aae.scheduler
    shared = sched.shared()
    peer, partitions = body.get("peer"), body.get("partitions")
    mode, limited = body.get("mode", "tree"), body.get("limited", True)
    if peer is not None and (not isinstance(peer, str) or peer not in shared):
        # (a list or an object here was a TypeError in `peer not in shared`: 500)
        raise InvalidMessage(f"peer {peer!r:.80} shares no partition with this node")
    if mode not in ("tree", "full") or not isinstance(limited, bool):
        raise InvalidMessage('mode must be "tree" or "full", limited a boolean')
    if partitions is not None and (not isinstance(partitions, list) or not all(
            type(p) is int and 0 <= p < aae.trees.ring_size for p in partitions)):
        raise InvalidMessage(f"partitions must be a list of ints in 0..{aae.trees.ring_size - 1}")
    results = []
    for other in [peer] if peer is not None else sorted(shared):
        if peer is None and not sched.is_alive(other):
            continue
        chosen = [p for p in shared[other] if partitions is None or p in partitions]
        r = await sched.exchange(other, chosen, full=mode == "full", limited=limited)
        results.append(r.as_dict())
    return _json(200, {"exchanges": results})


async def _schedule(aae: AntiEntropy, body: dict) -> web.Response:
    _fields(body, _SCHEDULE)
    if "enabled" in body and not isinstance(body["enabled"], bool):
        raise InvalidMessage("enabled must be a boolean")
    for name in _SCHEDULE - {"enabled"}:
        value = body.get(name)
        if value is not None and (type(value) not in (int, float) or not 0 <= value <= 1e12
                                  or (name == "interval_s" and value < 0.05)
                                  or 0 < value < _MIN_RATE.get(name, 0)):
            raise InvalidMessage(f"{name} must be a number >= 0 (interval_s >= 0.05; a rate "
                                 "is 0 for unlimited, else keys_per_s >= 1 and bytes_per_s "
                                 ">= 1024)")
    aae.scheduler.configure(**body)
    return _json(200, aae.scheduler.settings())


async def _rebuild(aae: AntiEntropy, body: dict) -> web.Response:
    _fields(body, {"partitions"})
    partitions = body.get("partitions")
    if partitions is not None and (not isinstance(partitions, list) or not all(
            type(p) is int and 0 <= p < aae.trees.ring_size for p in partitions)):
        raise InvalidMessage("partitions must be a list of partition numbers")
    aae.trees.rebuild(partitions)
    return _json(202, {"queued": aae.trees.pending()})


__all__ = ["routes"]
