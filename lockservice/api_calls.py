"""The client's side of the lock API's conventions: paths, answers to errors, fields.

Errors come back as JSON `{"error": code, "message": ...}` (docs/lock-api.md); `check`
turns each into the client error a caller can act on (lockservice/client_errors.py).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar
from urllib.parse import quote

from lockservice.client_errors import (
    AccessDenied,
    ClientError,
    EntryNotFound,
    LockBusy,
    RequestRejected,
    SessionLost,
    VersionMismatch,
)
from lockservice.members import Reply

T = TypeVar("T")

BUSY = {"busy", "lock_busy", "lock_delay"}
SESSION_OVER = {"unknown_session", "session_expired", "lease_ended"}


def path(kind: str, name: str, action: str = "") -> str:
    """`/lock/v1/{kind}/{name}[/{action}]` with the name percent-encoded (any byte but NUL)."""
    if not isinstance(name, str) or not name:
        raise ValueError("a lock or entry name is a non-empty string")
    tail = f"/{action}" if action else ""
    return f"/lock/v1/{kind}/{quote(name, safe='')}{tail}"


def check(reply: Reply) -> dict[str, Any]:
    """The body of a 2xx answer; raises the matching client error for anything else."""
    if 200 <= reply.status < 300:
        return reply.body
    code = str(reply.body.get("error", "")) or f"http_{reply.status}"
    message = str(reply.body.get("message", ""))
    if reply.status in (401, 403):
        raise AccessDenied(reply.status, code, message)
    if code in SESSION_OVER:
        raise SessionLost(f"{code}: {message}")
    if reply.status == 409 and code in BUSY:
        raise LockBusy(reply.status, code, message)
    if code == "version_mismatch":
        raise VersionMismatch(reply.status, code, message)
    if reply.status == 404 and code == "not_found":
        raise EntryNotFound(reply.status, code, message)
    if 400 <= reply.status < 500:
        raise RequestRejected(reply.status, code, message)
    raise ClientError(f"lock service member {reply.member} answered {reply.status}: "
                      f"{code} {message}".rstrip())


async def ok(pending: Awaitable[Reply]) -> dict[str, Any]:
    return check(await pending)


def field(body: dict[str, Any], name: str, kind: type[T]) -> T:
    """`body[name]`, which must be of `kind` (bool is not an int here)."""
    value = body.get(name)
    if type(value) is not kind:
        raise ClientError(f"lock service answer lacks {name!r} of type {kind.__name__}: "
                          f"{body!r:.200}")
    return value


__all__ = ["LockBusy", "Reply", "check", "field", "ok", "path"]
