"""The internal replica API's bodies: typed requests and replies, msgpack on the wire.

Theory of operation

- Every internal call is `POST /internal/v1/<op>` with an `application/x-msgpack` body
  that is one msgpack map with string keys. Each op has a fixed set of fields (required
  and optional) with fixed types; a body with a missing, unknown or mistyped field, more
  than `MAX_BODY_BYTES`, trailing bytes, or a sibling set that does not decode is refused
  with `WireError` (the server answers 400) before anything is touched.
- Sibling sets travel as `vclock.encode` bytes and are decoded with `vclock.decode`, which
  checks every invariant; keys are 1..`MAX_KEY_BYTES` raw bytes.
- Replies are msgpack maps too: `{"state": <encoded SiblingSet>}` for get and coordinate;
  `{}` (an ack: the state is durable there) for merge, merge_many and hint, whose callers
  need nothing back; a free-form map for status. A refusal is
  `{"error": code, "message": text, ...fields}` with an HTTP status from `ERRORS`, and
  `decode_error` turns it back into the same typed exception on the calling node, so a
  forwarded write fails at the client exactly as a local one would.
- `NotApplied` (a `NodeUnavailable`) means the peer surely did not apply the request (the
  connection was refused, or the peer said it is not a replica of the key): the caller may
  try another node without risking a double write. Any other `NodeUnavailable` means the
  request may have been applied.

Ops and fields (types: bin = bytes, str, int, state = encoded SiblingSet):
    get         {key: bin}
    merge       {key: bin, state: state}
    merge_many  {items: [[key: bin, state: state], ...]}   (at most MAX_ITEMS)
    hint        {owner: str, key: bin, state: state}
    coordinate  {op: "put"|"delete", key: bin, value: bin, context?: bin|nil, w?: int|nil,
                 timeout_ms?: int|nil, sequencer?: str|nil}
    status      {}

Refusals (HTTP status, `error` code): 400 wire | invalid_context | invalid_request,
409 sibling_limit | sequencer, 413 (body over MAX_BODY_BYTES, from kvstore/replica_api.py),
421 not_applied, 503 quorum (with op, needed, got, indeterminate), 500 storage | internal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

from kvstore import vclock
from kvstore.errors import (
    InvalidContext,
    InvalidRequest,
    InvalidSiblingSet,
    NodeUnavailable,
    QuorumFailed,
    RinglockError,
    SequencerRejected,
    SiblingLimitExceeded,
    WireError,
)
from kvstore.vclock import SiblingSet

CONTENT_TYPE = "application/x-msgpack"
MAX_KEY_BYTES = 1024  # the public API's key limit
MAX_BODY_BYTES = vclock.MAX_ENCODED_BYTES + (1 << 20)  # one largest state plus the envelope
MAX_ITEMS = 10_000  # entries in one merge_many
MAX_STR_BYTES = 4096  # owner names, op names, sequencer tokens, error messages
MAX_TIMEOUT_MS = 10 * 60 * 1000
WRITE_OPS = ("put", "delete")


class NotApplied(NodeUnavailable):
    """The peer surely did not apply the request; another node may be tried."""


@dataclass(frozen=True, slots=True)
class GetRequest:
    key: bytes


@dataclass(frozen=True, slots=True)
class MergeRequest:
    key: bytes
    state: SiblingSet


@dataclass(frozen=True, slots=True)
class MergeManyRequest:
    items: tuple[tuple[bytes, SiblingSet], ...]


@dataclass(frozen=True, slots=True)
class HintRequest:
    owner: str
    key: bytes
    state: SiblingSet


@dataclass(frozen=True, slots=True)
class CoordinateRequest:
    op: str
    key: bytes
    value: bytes = b""
    context: bytes | None = None
    w: int | None = None
    timeout_ms: int | None = None
    sequencer: str | None = None


@dataclass(frozen=True, slots=True)
class StatusRequest:
    pass


Request = (GetRequest | MergeRequest | MergeManyRequest | HintRequest | CoordinateRequest
           | StatusRequest)
OPS: dict[str, type] = {"get": GetRequest, "merge": MergeRequest, "merge_many": MergeManyRequest,
                        "hint": HintRequest, "coordinate": CoordinateRequest,
                        "status": StatusRequest}
_REQUIRED = {"get": {"key"}, "merge": {"key", "state"}, "merge_many": {"items"},
             "hint": {"owner", "key", "state"}, "coordinate": {"op", "key", "value"},
             "status": set()}
_OPTIONAL = {"coordinate": {"context", "w", "timeout_ms", "sequencer"}}


# -- msgpack edge -----------------------------------------------------------------------------

def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def unpack_map(data: bytes) -> dict[str, Any]:
    """One msgpack map with str keys, within the size limits; WireError otherwise."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"body must be bytes, not {type(data).__name__}")
    if len(data) > MAX_BODY_BYTES:
        raise WireError(f"body of {len(data)} bytes is over the {MAX_BODY_BYTES} limit")
    try:
        obj = msgpack.unpackb(bytes(data), raw=False, strict_map_key=True, use_list=True,
                              max_bin_len=MAX_BODY_BYTES, max_str_len=MAX_STR_BYTES,
                              max_array_len=MAX_ITEMS, max_map_len=64, max_ext_len=0)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise WireError(f"body is not one msgpack value: {exc}") from None
    if not isinstance(obj, dict):
        raise WireError(f"body must be a msgpack map, not {type(obj).__name__}")
    return obj


def _key(obj: object, what: str = "key") -> bytes:
    if not isinstance(obj, bytes) or not 1 <= len(obj) <= MAX_KEY_BYTES:
        raise WireError(f"{what} must be 1..{MAX_KEY_BYTES} bytes (msgpack bin): {obj!r:.60}")
    return obj


def _state(obj: object) -> SiblingSet:
    if not isinstance(obj, bytes):
        raise WireError("state must be encoded sibling-set bytes (msgpack bin)")
    try:
        return vclock.decode(obj)
    except InvalidSiblingSet as exc:
        raise WireError(f"state: {exc.reason}") from None


def _str(obj: object, what: str) -> str:
    if not isinstance(obj, str) or not obj:
        raise WireError(f"{what} must be a non-empty string: {obj!r:.60}")
    return obj


def _opt_int(obj: object, what: str, low: int, high: int) -> int | None:
    if obj is None:
        return None
    if type(obj) is not int or not low <= obj <= high:
        raise WireError(f"{what} must be an int in {low}..{high} or nil: {obj!r:.60}")
    return obj


def _check_fields(op: str, body: dict[str, Any]) -> None:
    required, optional = _REQUIRED[op], _OPTIONAL.get(op, set())
    missing = required - body.keys()
    unknown = body.keys() - required - optional
    if missing or unknown:
        raise WireError(f"{op}: missing fields {sorted(missing)}, unknown fields "
                        f"{sorted(unknown)[:8]}")


# -- requests ---------------------------------------------------------------------------------

def decode_request(op: str, data: bytes) -> Request:
    """The typed request for `op` in `data`; WireError for anything malformed."""
    if op not in OPS:
        raise WireError(f"unknown op {op!r:.60}")
    body = unpack_map(data)
    _check_fields(op, body)
    if op == "get":
        return GetRequest(_key(body["key"]))
    if op == "merge":
        return MergeRequest(_key(body["key"]), _state(body["state"]))
    if op == "hint":
        owner = _str(body["owner"], "owner")
        if len(owner.encode("utf-8", "surrogatepass")) > vclock.MAX_NODE_NAME_BYTES:
            raise WireError(f"owner must be a node name of at most "
                            f"{vclock.MAX_NODE_NAME_BYTES} bytes")
        return HintRequest(owner, _key(body["key"]), _state(body["state"]))
    if op == "merge_many":
        items = body["items"]
        if not isinstance(items, list):
            raise WireError("items must be an array of [key, state]")
        out = []
        for item in items:
            if not isinstance(item, list) or len(item) != 2:
                raise WireError("an item must be [key, state]")
            out.append((_key(item[0]), _state(item[1])))
        return MergeManyRequest(tuple(out))
    if op == "coordinate":
        return _coordinate(body)
    return StatusRequest()


def _coordinate(body: dict[str, Any]) -> CoordinateRequest:
    kind = body["op"]
    if kind not in WRITE_OPS:
        raise WireError(f"coordinate op must be one of {WRITE_OPS}: {kind!r:.60}")
    value, context, sequencer = body["value"], body.get("context"), body.get("sequencer")
    if not isinstance(value, bytes):
        raise WireError("value must be bytes (msgpack bin)")
    if kind == "delete" and value:
        raise WireError("a delete carries no value")
    if context is not None and (not isinstance(context, bytes) or not context):
        raise WireError("context must be non-empty bytes or nil")
    if sequencer is not None:
        sequencer = _str(sequencer, "sequencer")
    return CoordinateRequest(kind, _key(body["key"]), value, context,
                             _opt_int(body.get("w"), "w", 1, 64),
                             _opt_int(body.get("timeout_ms"), "timeout_ms", 1, MAX_TIMEOUT_MS),
                             sequencer)


def encode_request(req: Request) -> bytes:
    """The body of `req` (the inverse of decode_request)."""
    enc = vclock.encode
    if isinstance(req, GetRequest):
        return pack({"key": req.key})
    if isinstance(req, MergeRequest):
        return pack({"key": req.key, "state": enc(req.state)})
    if isinstance(req, HintRequest):
        return pack({"owner": req.owner, "key": req.key, "state": enc(req.state)})
    if isinstance(req, MergeManyRequest):
        return pack({"items": [[k, enc(s)] for k, s in req.items]})
    if isinstance(req, CoordinateRequest):
        return pack({"op": req.op, "key": req.key, "value": req.value, "context": req.context,
                     "w": req.w, "timeout_ms": req.timeout_ms, "sequencer": req.sequencer})
    if isinstance(req, StatusRequest):
        return pack({})
    raise TypeError(f"not a request: {type(req).__name__}")


def op_of(req: Request) -> str:
    return next(op for op, cls in OPS.items() if isinstance(req, cls))


# -- replies ----------------------------------------------------------------------------------

ACK = b"\x80"  # msgpack {}: the reply of merge, merge_many and hint


def decode_ack(data: bytes) -> None:
    if unpack_map(data):
        raise WireError("an ack is an empty map")


def encode_state_reply(state: SiblingSet) -> bytes:
    return pack({"state": vclock.encode(state)})


def decode_state_reply(data: bytes) -> SiblingSet:
    body = unpack_map(data)
    if body.keys() != {"state"}:
        raise WireError(f"a state reply has exactly the field 'state': {sorted(body)[:8]}")
    return _state(body["state"])


# -- errors -----------------------------------------------------------------------------------

# code -> (HTTP status, exception class); the order matters: subclasses first.
ERRORS: list[tuple[str, int, type[Exception]]] = [
    ("wire", 400, WireError),
    ("invalid_context", 400, InvalidContext),
    ("invalid_request", 400, InvalidRequest),
    ("sibling_limit", 409, SiblingLimitExceeded),
    ("sequencer", 409, SequencerRejected),
    ("quorum", 503, QuorumFailed),
    ("not_applied", 421, NotApplied),
]


def encode_error(exc: BaseException) -> tuple[int, bytes]:
    """HTTP status and body for `exc`; unknown errors become 500 "internal"."""
    for code, status, cls in ERRORS:
        if isinstance(exc, cls):
            body: dict[str, Any] = {"error": code, "message": str(exc)[:MAX_STR_BYTES // 2]}
            if isinstance(exc, QuorumFailed):
                body.update(op=exc.op, needed=exc.needed, got=exc.got,
                            indeterminate=exc.indeterminate, detail=exc.detail[:1024])
            elif isinstance(exc, SiblingLimitExceeded):
                body.update(key_siblings=exc.key_siblings, limit=exc.limit)
            elif isinstance(exc, SequencerRejected | NotApplied):
                body.update(detail=exc.detail[:1024])
            elif isinstance(exc, WireError | InvalidContext | InvalidRequest):
                body.update(reason=exc.reason[:1024])
            return status, pack(body)
    kind = "storage" if isinstance(exc, RinglockError) else "internal"
    return 500, pack({"error": kind, "message": f"{type(exc).__name__}: {exc}"[:1024]})


def decode_error(node: str, status: int, data: bytes) -> Exception:
    """The typed exception a peer's error reply stands for (NodeUnavailable when unknown)."""
    try:
        body = unpack_map(data)
        code = body.get("error")
        if code == "quorum":
            return QuorumFailed(str(body["op"]), int(body["needed"]), int(body["got"]),
                                indeterminate=bool(body["indeterminate"]),
                                detail=str(body.get("detail", "")))
        if code == "sibling_limit":
            return SiblingLimitExceeded(int(body["key_siblings"]), int(body["limit"]))
        if code == "sequencer":
            return SequencerRejected(str(body["detail"]))
        if code == "not_applied":
            return NotApplied(node, str(body["detail"]))
        for name, _, cls in ERRORS:
            if code == name and name in ("wire", "invalid_context", "invalid_request"):
                return cls(str(body["reason"]))
        return NodeUnavailable(node, f"HTTP {status}: {str(body.get('message'))[:200]}")
    except (WireError, KeyError, TypeError, ValueError):
        return NodeUnavailable(node, f"HTTP {status} with an unreadable body")
