"""The Raft endpoints as aiohttp routes (docs/raft.md, "Endpoints"): `POST /raft/messages`
and the WebSocket stream `GET /raft/stream` that the transport keeps open.

A body (or a stream frame) is checked completely before anything reaches the driver: the
content type (binary frames only on the stream), the size (counted while reading, whatever
Content-Length claims), the encoding (strict, see raft/codec.py), the addressing (every
message must be for this node, from another node) and the core's consistency check
(raft/message_check.py: entries that follow `index`, terms not from the future, ...).
Any failure answers 4xx with a plain-text reason (on the stream: a text frame "4xx reason",
then a close with code 1008, 1003 or 1009) and steps nothing into the core, so malformed
input changes no term, vote or log.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiohttp import WSCloseCode, WSMsgType, web

from raft import codec
from raft.errors import InvalidMessage
from raft.message_check import check_message
from raft.messages import Message
from raft.transport import CONTENT_TYPE, RAFT_PATH, STREAM_PATH

log = logging.getLogger(__name__)


class BodyTooLarge(Exception):
    pass


async def read_body(request: web.Request, limit: int) -> bytes:
    """The request body, refusing more than `limit` bytes without reading them all."""
    if request.content_length is not None and request.content_length > limit:
        raise BodyTooLarge(f"body of {request.content_length} bytes is over {limit}")
    buf = bytearray()
    async for chunk in request.content.iter_chunked(1 << 16):
        buf += chunk
        if len(buf) > limit:
            raise BodyTooLarge(f"body is over {limit} bytes")
    return bytes(buf)


def raft_routes(
    node_id: int,
    deliver: Callable[[list[Message]], None],
    *,
    max_body: int = codec.MAX_BODY_BYTES,
) -> list[web.RouteDef]:
    """Routes to add to a node's application; `deliver` hands messages to the driver."""

    def check(body: bytes) -> list[Message]:
        """The messages of a body, or CodecError saying why not."""
        messages = codec.decode_messages(body, max_bytes=max_body)
        for i, m in enumerate(messages):
            if m.to != node_id:
                raise codec.CodecError(f"messages[{i}] is for node {m.to}, this is node {node_id}")
            if m.sender == node_id:
                raise codec.CodecError(f"messages[{i}] claims to be from this node")
            try:
                check_message(m)  # the core's own consistency check, before any is stepped
            except InvalidMessage as exc:
                raise codec.CodecError(f"messages[{i}]: {exc}") from None
        return messages

    async def stream(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=max_body, autoping=True)
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == WSMsgType.BINARY:
                try:
                    messages = check(msg.data)
                except codec.CodecError as exc:
                    log.info("refused a malformed Raft frame from %s: %s", request.remote, exc)
                    await ws.send_str(f"400 {exc}")
                    await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"malformed")
                    break
                try:
                    deliver(messages)
                except RuntimeError as exc:
                    await ws.send_str(f"503 {exc}")
                    await ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"not running")
                    break
            elif msg.type == WSMsgType.TEXT:
                await ws.send_str("415 frames must be binary msgpack")
                await ws.close(code=WSCloseCode.UNSUPPORTED_DATA, message=b"binary only")
                break
        return ws

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.content_type != CONTENT_TYPE:
            return web.Response(status=415, text=f"content type must be {CONTENT_TYPE}")
        try:
            body = await read_body(request, max_body)
        except BodyTooLarge as exc:
            return web.Response(status=413, text=str(exc))
        try:
            messages = check(body)
        except codec.CodecError as exc:
            log.info("refused a malformed Raft body from %s: %s", request.remote, exc)
            return web.Response(status=400, text=str(exc))
        try:
            deliver(messages)
        except RuntimeError as exc:  # the driver is not running
            return web.Response(status=503, text=str(exc))
        return web.Response(status=204)

    return [web.post(RAFT_PATH, handle), web.get(STREAM_PATH, stream)]
