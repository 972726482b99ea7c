"""What the sync and async clients share, with no I/O: requests built, answers read.

A request is a `Call` (method, path, headers, body, and whether it may be retried on
another node after it was sent: reads only). `read_get` and `read_write` turn an HTTP
answer (status, headers, body) into a value or a typed error of kvstore/errors.py, using
the mapping of kvstore/http_codec.py. kvstore/client.py does the sending.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

from kvstore.errors import (
    Forbidden,
    InvalidRequest,
    NodeUnavailable,
    RinglockError,
    Unauthenticated,
)
from kvstore.http_codec import (
    CONTEXT_HEADER,
    SEQUENCER_HEADER,
    check_key,
    decode_multipart,
    error_from,
    quote_key,
    unb64,
)

DEFAULT_NODE = "127.0.0.1:7001"
Resolver = Callable[[list[bytes]], bytes]


@dataclass(frozen=True)
class GetResponse:
    """A read: every live sibling (one when there is no conflict), the context to write
    back with, and whether the key is deleted (a tombstone, not merely absent)."""

    values: list[bytes]
    context: bytes
    deleted: bool = False
    resolved_from: int = field(default=0)  # siblings a resolver merged (0: none ran)

    @property
    def found(self) -> bool:
        return bool(self.values)

    @property
    def value(self) -> bytes | None:
        """The value, None when absent; ValueError when there are siblings (see .values)."""
        if len(self.values) > 1:
            raise ValueError(f"the key has {len(self.values)} siblings: read .values, or "
                             "give the client a resolver")
        return self.values[0] if self.values else None


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes = b""
    retry_after_send: bool = False  # reads: safe to ask another node after a lost answer


def parse_node(node: str) -> tuple[str, int]:
    """`host:port` (or `http://host:port`, `https://host:port`) as (host, port);
    InvalidRequest if malformed. (The scheme is the client's: kvstore.tls.client_setup.)"""
    if not isinstance(node, str):
        raise TypeError(f"a node address must be str, not {type(node).__name__}")
    text = node if "://" in node else f"http://{node}"
    try:
        parts = urlsplit(text)
        host, port = parts.hostname, parts.port
    except ValueError:
        host = port = None
    if not host or not port or parts.scheme not in ("http", "https") or parts.path not in ("", "/"):
        raise InvalidRequest(f"a node address must be host:port, not {node!r}")
    return host, port


def node_list(nodes: Sequence[str] | str | None) -> list[str]:
    if nodes is None:
        nodes = [DEFAULT_NODE]
    if isinstance(nodes, str):
        nodes = [n for n in nodes.split(",") if n.strip()]
    out = []
    for n in nodes:
        host, port = parse_node(n.strip())
        out.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    if not out:
        raise InvalidRequest("the client needs at least one node address")
    return out


def _query(**params: int | float | None) -> str:
    pairs = []
    for name, value in params.items():
        if value is None:
            continue
        if name == "timeout_ms":
            value = max(1, round(value))
        elif type(value) is not int or value < 1:
            raise InvalidRequest(f"{name} must be a positive int, not {value!r}")
        pairs.append(f"{name}={int(value)}")
    return "?" + "&".join(pairs) if pairs else ""


def _ms(timeout: float | None) -> float | None:
    return None if timeout is None else timeout * 1000


def get_call(key: bytes, *, r: int | None, timeout: float | None) -> Call:
    path = "/kv/" + quote_key(check_key(key)) + _query(r=r, timeout_ms=_ms(timeout))
    return Call("GET", path, {"Accept": "application/json"}, retry_after_send=True)


def write_call(method: str, key: bytes, value: bytes, *, context: bytes | str | None,
               w: int | None, sequencer: str | None, timeout: float | None) -> Call:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise TypeError(f"value must be bytes, not {type(value).__name__}")
    headers = {"Content-Type": "application/octet-stream"}
    if context:
        headers[CONTEXT_HEADER] = context.decode("ascii", "replace") \
            if isinstance(context, bytes | bytearray) else str(context)
    if sequencer is not None:
        headers[SEQUENCER_HEADER] = str(sequencer)
    path = "/kv/" + quote_key(check_key(key)) + _query(w=w, timeout_ms=_ms(timeout))
    return Call(method, path, headers, bytes(value))


def auth_headers(token: str | None) -> dict[str, str]:
    """The Authorization header of a client's token (docs/auth.md); {} without one."""
    if token is None:
        return {}
    if not isinstance(token, str) or not token or not token.isprintable() or " " in token:
        raise InvalidRequest("a token is a non-empty string of printable characters "
                             "without spaces")
    return {"Authorization": f"Bearer {token}"}


def with_headers(call: Call, headers: dict[str, str]) -> Call:
    return replace(call, headers={**call.headers, **headers}) if headers else call


def _error_from(status: int, doc: object, node: str) -> RinglockError:
    """error_from, with the auth middleware's 401/403 as Unauthenticated/Forbidden."""
    if status in (401, 403):
        message = doc.get("message") if isinstance(doc, dict) else None
        detail = f"{message or f'HTTP {status}'} (node {node})"
        return Unauthenticated(detail) if status == 401 else Forbidden(detail)
    return error_from(status, doc, node)


def _json(body: bytes) -> object:
    try:
        return json.loads(body)
    except ValueError:
        return None


def read_get(status: int, headers: Mapping[str, str], body: bytes, node: str,
             resolver: Resolver | None) -> GetResponse:
    """The GetResponse of a GET answer (JSON or raw/multipart); raises typed errors."""
    context = headers.get(CONTEXT_HEADER, "").encode("ascii", "replace")
    if status in (200, 404) and "json" in headers.get("Content-Type", ""):
        doc = _json(body)
        if isinstance(doc, dict) and "values" in doc:
            try:
                values = [unb64(v) for v in doc["values"]]
            except ValueError as exc:
                raise NodeUnavailable(node, f"malformed answer: {exc}") from None
            response = GetResponse(values, str(doc.get("context", "")).encode("ascii",
                                   "replace"), bool(doc.get("deleted")))
            return _resolve(response, resolver)
        if status == 404 and isinstance(doc, dict) and doc.get("error") == "not_found":
            return GetResponse([], context, bool(doc.get("deleted")))
    elif status == 200:
        return GetResponse([body], context)
    elif status == 300:
        try:
            values = decode_multipart(headers.get("Content-Type", ""), body)
        except ValueError as exc:
            raise NodeUnavailable(node, f"malformed 300 answer: {exc}") from None
        return _resolve(GetResponse(values, context), resolver)
    raise _error_from(status, _json(body), node)


def _resolve(response: GetResponse, resolver: Resolver | None) -> GetResponse:
    if resolver is None or len(response.values) < 2:
        return response
    chosen = resolver(list(response.values))
    if not isinstance(chosen, bytes | bytearray):
        raise TypeError(f"the resolver must return bytes, not {type(chosen).__name__}")
    return GetResponse([bytes(chosen)], response.context, False, len(response.values))


def read_write(status: int, headers: Mapping[str, str], body: bytes, node: str) -> bytes:
    """The new context of a PUT/DELETE answer; raises typed errors."""
    if status == 204:
        return headers.get(CONTEXT_HEADER, "").encode("ascii", "replace")
    raise _error_from(status, _json(body), node)


def read_json(status: int, body: bytes, node: str) -> dict:
    doc = _json(body)
    if status in (200, 202) and isinstance(doc, dict):
        return doc
    raise _error_from(status, doc, node)


def failover_worthy(exc: RinglockError) -> bool:
    """A read answered with this error may succeed on another coordinator."""
    return isinstance(exc, NodeUnavailable) or getattr(exc, "op", None) == "get"


class Nodes:
    """The node list and which one to try first (the last that answered)."""

    def __init__(self, nodes: Sequence[str] | str | None) -> None:
        self.nodes = node_list(nodes)
        self.first = 0

    def order(self) -> list[str]:
        return self.nodes[self.first:] + self.nodes[:self.first]

    def answered(self, node: str) -> None:
        self.first = self.nodes.index(node)


class Sent(Exception):
    """The transport failed after the request was sent (the node may have acted on it)."""

    def __init__(self, error: NodeUnavailable) -> None:
        self.error = error


def unsent(node: str, exc: BaseException) -> NodeUnavailable:
    return NodeUnavailable(node, f"cannot connect: {exc or type(exc).__name__}")


def lost(node: str, call: Call, exc: BaseException) -> Sent:
    maybe = "" if call.retry_after_send else "; the write may still have been applied"
    return Sent(NodeUnavailable(node, f"no answer ({exc or type(exc).__name__}){maybe}"))


class Headers(dict):
    """Case-insensitive lookups over an answer's headers."""

    def __init__(self, items: dict[str, str]) -> None:
        super().__init__({k.lower(): v for k, v in items.items()})

    def get(self, key: str, default=None):  # type: ignore[override]
        return super().get(key.lower(), default)


def error_of(answer, node: str) -> RinglockError:
    status, _headers, body = answer
    try:
        read_json(status, body, node)
    except RinglockError as exc:
        return exc
    return NodeUnavailable(node, f"HTTP {status}")
