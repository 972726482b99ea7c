"""The public HTTP API's edge codec, shared by the server (http_api.py) and the clients.

Pure functions, no I/O: key quoting and strict parsing, query parameters, the
`multipart/mixed` body of a 300 Multiple Choices answer, and the JSON error bodies with
their mapping to and from the typed errors of kvstore/errors.py. The wire itself is
described in docs/openapi.yaml.

Keys travel as the path after `/kv/`, percent-encoded bytes. The client encodes every byte
outside `A-Z a-z 0-9 - _ ~` (dots too, so that no key looks like a `.`/`..` path segment
that an HTTP stack might normalise away). The server accepts any RFC 3986 path characters,
`/` included (`/kv/users/1` is the key `users/1`), and refuses a `%` that is not followed by
two hex digits: `unquote_to_bytes` would silently keep such bytes, and two spellings of one
key must never name two keys.

Multipart (Riak's 300 body): `--B\\r\\nContent-Type: application/octet-stream\\r\\n\\r\\n
<value>\\r\\n` per sibling, then `--B--\\r\\n`; the boundary B is chosen so that no value
contains it.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote_from_bytes, unquote_to_bytes

from kvstore.errors import (
    InvalidContext,
    InvalidRequest,
    MembershipError,
    NodeUnavailable,
    QuorumFailed,
    RinglockError,
    SequencerRejected,
    SiblingLimitExceeded,
)

MAX_KEY_BYTES = 1024
DEFAULT_MAX_VALUE_BYTES = 1 << 20  # 1 MiB, `kv serve --max-value`
MAX_TIMEOUT_MS = 600_000  # a request that may wait longer than ten minutes is a mistake
MAX_QUORUM = 64  # r and w beyond any sane N
CONTEXT_HEADER = "X-Ringlock-Context"
SEQUENCER_HEADER = "X-Ringlock-Sequencer"
MAX_SEQUENCER_CHARS = 4096
OCTET_STREAM = "application/octet-stream"

_SAFE = b"-_~"  # with ALPHA / DIGIT: the bytes the client leaves unencoded
_RAW_KEY = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/]|%[0-9A-Fa-f]{2})+")
_DIGITS = re.compile(r"[0-9]{1,9}")


# -- keys ---------------------------------------------------------------------------------

def quote_key(key: bytes) -> str:
    """The path segment for `key` (after `/kv/`). Requires: 1..MAX_KEY_BYTES bytes."""
    check_key(key)
    return quote_from_bytes(bytes(key), safe=_SAFE).replace(".", "%2E")


def check_key(key: object) -> bytes:
    if not isinstance(key, bytes | bytearray | memoryview):
        raise TypeError(f"key must be bytes, not {type(key).__name__}")
    key = bytes(key)
    if not 1 <= len(key) <= MAX_KEY_BYTES:
        raise InvalidRequest(f"a key must be 1..{MAX_KEY_BYTES} bytes, not {len(key)}")
    return key


def parse_key(raw: str) -> bytes:
    """The key bytes of a raw (still percent-encoded) path segment; InvalidRequest if bad."""
    if not raw:
        raise InvalidRequest("the key is empty: use /kv/{key} with a 1..1024 byte key")
    if len(raw) > 3 * MAX_KEY_BYTES:
        raise InvalidRequest(f"the key is longer than {MAX_KEY_BYTES} bytes")
    if not _RAW_KEY.fullmatch(raw):
        raise InvalidRequest("the key is not well-formed percent-encoding (a '%' must be "
                             "followed by two hex digits; other bytes must be encoded)")
    return check_key(unquote_to_bytes(raw))


# -- parameters and headers ---------------------------------------------------------------

def parse_params(query: Mapping[str, str] | Any, allowed: tuple[str, ...]) -> dict[str, int]:
    """Validate the query string: only `allowed` names, each once, as positive integers.

    `r`/`w` must be 1..MAX_QUORUM (the coordinator checks them against N); `timeout_ms`
    1..MAX_TIMEOUT_MS. Returns {name: int}; InvalidRequest names the offending parameter.
    """
    out: dict[str, int] = {}
    for name, text in query.items():
        if name not in allowed:
            raise InvalidRequest(f"unknown query parameter {name[:40]!r} (allowed: "
                                 f"{', '.join(allowed)})")
        if name in out:
            raise InvalidRequest(f"query parameter {name!r} given more than once")
        hi = MAX_TIMEOUT_MS if name == "timeout_ms" else MAX_QUORUM
        if not _DIGITS.fullmatch(text) or not 1 <= int(text) <= hi:
            raise InvalidRequest(f"query parameter {name} must be an integer in 1..{hi}, "
                                 f"not {text[:40]!r}")
        out[name] = int(text)
    return out


def parse_sequencer(value: str | None) -> str | None:
    if value is None:
        return None
    if not value or len(value) > MAX_SEQUENCER_CHARS or not value.isascii():
        raise InvalidRequest(f"{SEQUENCER_HEADER} must be a non-empty ASCII token of at "
                             f"most {MAX_SEQUENCER_CHARS} characters")
    return value


# -- 300 Multiple Choices body --------------------------------------------------------------

def encode_multipart(values: list[bytes]) -> tuple[str, bytes]:
    """(Content-Type, body) holding one part per value, in order."""
    while True:
        boundary = secrets.token_hex(16)
        marker = b"--" + boundary.encode()
        if not any(marker in v for v in values):
            break
    head = b"Content-Type: " + OCTET_STREAM.encode() + b"\r\n\r\n"
    parts = [marker + b"\r\n" + head + v + b"\r\n" for v in values]
    return f"multipart/mixed; boundary={boundary}", b"".join(parts) + marker + b"--\r\n"


_BOUNDARY = re.compile(r';\s*boundary="?([^";]+)"?', re.IGNORECASE)


def decode_multipart(content_type: str, body: bytes) -> list[bytes]:
    """The part bodies of `encode_multipart`'s output; ValueError if it is not that shape."""
    match = _BOUNDARY.search(content_type)
    if not content_type.lower().startswith("multipart/mixed") or not match:
        raise ValueError(f"not a multipart/mixed content type: {content_type!r}")
    marker = b"--" + match.group(1).encode()
    if not body.startswith(marker + b"\r\n") or not body.endswith(marker + b"--\r\n"):
        raise ValueError("multipart body does not start and end with its boundary")
    inner = body[len(marker) + 2: -(len(marker) + 4)]
    values = []
    for part in inner.split(b"\r\n" + marker + b"\r\n") if inner else []:
        _head, sep, rest = part.partition(b"\r\n\r\n")
        if not sep:
            raise ValueError("a multipart part has no header/body separator")
        values.append(rest)
    if values:
        if not values[-1].endswith(b"\r\n"):
            raise ValueError("the last multipart part is not terminated")
        values[-1] = values[-1][:-2]
    return values


# -- JSON bodies ----------------------------------------------------------------------------

def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: object) -> bytes:
    if not isinstance(text, str):
        raise ValueError("expected a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not base64") from None


def error_for(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body) answering a typed error; 500 for anything unexpected."""
    if isinstance(exc, InvalidContext):
        return 400, {"error": "invalid_context", "message": str(exc)}
    if isinstance(exc, InvalidRequest):
        return 400, {"error": "invalid_request", "message": str(exc)}
    if isinstance(exc, SequencerRejected):
        return 409, {"error": "sequencer_rejected", "message": str(exc), "detail": exc.detail}
    if isinstance(exc, SiblingLimitExceeded):
        return 409, {"error": "sibling_limit", "message": str(exc),
                     "siblings": exc.key_siblings, "limit": exc.limit}
    if isinstance(exc, QuorumFailed):
        return 503, {"error": "quorum", "message": str(exc), "op": exc.op,
                     "needed": exc.needed, "got": exc.got,
                     "indeterminate": exc.indeterminate, "detail": exc.detail}
    if isinstance(exc, NodeUnavailable):
        return 503, {"error": "unavailable", "message": str(exc), "node": exc.node,
                     "indeterminate": True}
    return 500, {"error": "internal", "message": f"internal error: {type(exc).__name__}"}


def error_from(status: int, body: Any, node: str) -> RinglockError:
    """The typed error a client raises for an error answer (inverse of `error_for`)."""
    body = body if isinstance(body, dict) else {}
    code, message = body.get("error", ""), str(body.get("message", f"HTTP {status}"))
    try:
        if code == "invalid_context":
            return InvalidContext(message.removeprefix("invalid context: "))
        if code == "sequencer_rejected":
            return SequencerRejected(str(body.get("detail", message)))
        if code == "sibling_limit":
            return SiblingLimitExceeded(int(body["siblings"]), int(body["limit"]))
        if code == "membership":
            return MembershipError(message.removeprefix("membership change refused: "))
        if code == "quorum":
            return QuorumFailed(str(body["op"]), int(body["needed"]), int(body["got"]),
                                indeterminate=bool(body["indeterminate"]),
                                detail=str(body.get("detail", "")))
    except (KeyError, TypeError, ValueError):
        pass
    if 400 <= status < 500:
        return InvalidRequest(message.removeprefix("invalid request: "))
    return NodeUnavailable(node, f"HTTP {status}: {message}")
