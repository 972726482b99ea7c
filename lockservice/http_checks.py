"""Checks of HTTP input for lockservice/http_api.py: JSON fields, path ids, names, flags.

Each check raises `BadRequest` with a sentence naming the field; nothing is proposed before
every check passed. Field kinds: "u64" (an integer in 0..2**63-1, not a boolean), "str".
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from lockservice.limits import Limits

MAX_U64 = 2**63 - 1


class BadRequest(Exception):
    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _kind_ok(kind: str, value: Any) -> bool:
    if kind == "u64":
        return type(value) is int and 0 <= value <= MAX_U64
    if kind == "str":
        return type(value) is str
    raise AssertionError(kind)


_KIND_NAMES = {"u64": "an integer in 0..2**63-1", "str": "a string"}


def fields(body: dict[str, Any], *, required: dict[str, str] | None = None,
           optional: dict[str, str] | None = None) -> dict[str, Any]:
    """The body's fields, checked: every required one present, none unknown, kinds right.

    An optional field given as null counts as absent."""
    required, optional = required or {}, optional or {}
    unknown = sorted(set(body) - set(required) - set(optional))
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(map(repr, unknown))}")
    out: dict[str, Any] = {}
    for name, kind in {**required, **optional}.items():
        if name not in body or (name in optional and body[name] is None):
            if name in required:
                raise BadRequest(f"field {name!r} is required")
            continue
        if not _kind_ok(kind, body[name]):
            raise BadRequest(f"field {name!r} must be {_KIND_NAMES[kind]}")
        out[name] = body[name]
    return out


def path_id(request: web.Request) -> int:
    text = request.match_info["id"]
    if not (text.isascii() and text.isdigit()) or len(text) > 19 or not 0 < int(text) <= MAX_U64:
        raise BadRequest(f"session id must be a positive integer, not {text[:40]!r}")
    return int(text)


def check_name(name: str, limits: Limits, what: str = "a name") -> str:
    """`name` if the state machine would take it (1..max bytes of UTF-8, no NUL)."""
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise BadRequest(f"{what} must be valid UTF-8") from None
    if not 0 < size <= limits.max_name_bytes or "\x00" in name:
        raise BadRequest(f"{what} is 1..{limits.max_name_bytes} bytes of UTF-8 without NUL")
    return name


def lock_name(request: web.Request, limits: Limits) -> str:
    """The {name} of the path, checked with `check_name`."""
    return check_name(request.match_info["name"], limits)


def stale_flag(request: web.Request) -> bool:
    unknown = sorted(set(request.query) - {"stale"})
    if unknown:
        raise BadRequest(f"unknown query parameter(s): {', '.join(map(repr, unknown))}")
    value = request.query.get("stale", "0")
    if value not in ("0", "1", "true", "false"):
        raise BadRequest("stale must be 0 or 1")
    return value in ("1", "true")
