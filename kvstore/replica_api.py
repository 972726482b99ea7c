"""The internal replica API: `POST /internal/v1/<op>` handlers on every node.

Theory of operation

- Each handler reads the body (at most `wire.MAX_BODY_BYTES`; more is 413 before it is
  read), decodes it with `wire.decode_request` (400 with a msgpack error body on anything
  malformed, before any store is touched), runs the op and answers a msgpack reply. Typed
  refusals (QuorumFailed, SequencerRejected, SiblingLimitExceeded, NotApplied) answer
  with the status and body of `wire.encode_error`, so the calling node raises them again.
- get: this node's copy of the key (replica state synced with hints held for it). merge:
  `ReplicaStore.merge` (answers an empty ack once durable). merge_many: one batch
  (transfer and hinted handoff). hint: a durable hint for `owner` in the HintStore (a
  hint naming this node itself is merged into the replica store instead). coordinate: a
  forwarded client write, run by the Coordinator. status: counters for operators and
  tests (ring, hints, replica, peers, coordinator), as a msgpack map.
- Ops are POST only; other methods get aiohttp's 405.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiohttp import web

from kvstore import wire
from kvstore.coordinator import Coordinator
from kvstore.errors import WireError

logger = logging.getLogger(__name__)

PREFIX = "/internal/v1/"


class ReplicaApi:
    """The internal routes of one node. `status` returns extra fields for the status op."""

    def __init__(self, *, replica, hints, coordinator: Coordinator,
                 status: Callable[[], dict] | None = None) -> None:
        self.replica, self.hints, self.coordinator = replica, hints, coordinator
        self._status = status or dict
        self.name = coordinator.name

    def routes(self) -> list[web.RouteDef]:
        return [web.post(PREFIX + op, self._handler(op)) for op in wire.OPS]

    def _handler(self, op: str):
        async def handle(request: web.Request) -> web.Response:
            try:
                req = wire.decode_request(op, await _read_body(request))
                reply = await self._dispatch(req)
            except Exception as exc:
                status, data = wire.encode_error(exc)
                status = 413 if isinstance(exc, _TooLarge) else status
                level = logging.WARNING if status >= 500 else logging.DEBUG
                logger.log(level, "internal %s from %s refused (%d): %s", op, request.remote,
                           status, exc, exc_info=status >= 500)
                return web.Response(status=status, body=data, content_type=wire.CONTENT_TYPE)
            return web.Response(body=reply, content_type=wire.CONTENT_TYPE)

        handle.__name__ = f"internal_{op}"
        return handle

    async def _dispatch(self, req: wire.Request) -> bytes:
        if isinstance(req, wire.GetRequest):
            return wire.encode_state_reply(await self.coordinator.local_get(req.key))
        if isinstance(req, wire.MergeRequest):
            await self.replica.merge(req.key, req.state)
            return wire.ACK
        if isinstance(req, wire.MergeManyRequest):
            await self.replica.merge_many(list(req.items))
            return wire.ACK
        if isinstance(req, wire.HintRequest):
            await self._hint(req)
            return wire.ACK
        if isinstance(req, wire.CoordinateRequest):
            return wire.encode_state_reply(await self.coordinator.coordinate(req))
        return wire.pack(_plain(self.status()))

    async def _hint(self, req: wire.HintRequest):
        if req.owner == self.name:
            return await self.replica.merge(req.key, req.state)
        new_owner = req.owner not in self.hints.owners()
        state = await self.hints.add(req.owner, req.key, req.state)
        if new_owner:
            logger.info("%s holds hints for %s (%d hints in all)", self.name, req.owner,
                        self.hints.count())
        return state

    def status(self) -> dict:
        return {"node": self.name, "hints": self.hints.count(),
                "hint_owners": sorted(self.hints.owners()),
                "replica": self.replica.stats(), "peers": self.coordinator.peers.stats(),
                "coordinator": self.coordinator.stats(), **self._status()}


async def _read_body(request: web.Request) -> bytes:
    if (request.content_length or 0) > wire.MAX_BODY_BYTES:
        raise _TooLarge(f"body of {request.content_length} bytes is over the "
                        f"{wire.MAX_BODY_BYTES} limit")
    chunks, size = [], 0
    try:
        while chunk := await request.content.read(1 << 16):
            size += len(chunk)
            if size > wire.MAX_BODY_BYTES:
                raise _TooLarge(f"body is over the {wire.MAX_BODY_BYTES} limit")
            chunks.append(chunk)
    except ConnectionResetError:  # the caller went away: not this node's error (400, DEBUG)
        raise WireError("the request body ended before it was complete") from None
    return b"".join(chunks)


class _TooLarge(WireError):
    """A body over the limit (answered 413 rather than 400)."""


def _plain(obj):
    """`obj` with sets and tuples as lists and non-str keys as str (msgpack-safe)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [_plain(v) for v in (sorted(obj, key=str) if isinstance(obj, set | frozenset)
                                    else obj)]
    if obj is None or isinstance(obj, bool | int | float | str | bytes):
        return obj
    return str(obj)
