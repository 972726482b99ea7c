"""The node's logging: plain or JSON lines, with a request id across coordinator and replicas.

Theory of operation

- `setup(level, fmt, node)` gives the root logger one stderr handler. `plain` lines read
  `TIME LEVEL LOGGER: MESSAGE [rid=ID]`; `json` lines are one JSON object each, with
  `time` (UTC, ISO 8601, milliseconds), `level`, `logger`, `message`, `node` and, when
  there is one, `request_id` (and `exc` with the traceback when one is logged).
- Request ids: the `request_ids` middleware (mounted on every route of the node) takes the
  id from the `X-Request-Id` header when it is valid (1..64 characters of
  `A-Z a-z 0-9 . _ : - + = /`), and otherwise makes a new one (16 hex digits); an invalid
  header is replaced, never logged. The id is held in a contextvar for the request's
  task (and the tasks it starts) and sent back in the answer's `X-Request-Id`.
  `outgoing_headers()` is what the peers client adds to every internal call, so a
  replica's lines for that call carry the coordinator's id.
- Each request is logged at DEBUG on `kvstore.access` (method, path up to 200 characters,
  status, milliseconds) with its id, so one request's lines can be found on every node.
- A request aiohttp's parser refuses (a control character in a header, a malformed
  request line) is answered 400 by aiohttp, which logs it at ERROR with a traceback;
  `QuietBadRequests` makes that one WARNING line without the traceback (the parser's
  message shows the offending bytes escaped, cut at 300 characters), so a hostile client
  cannot fill the log with tracebacks.
- The ready line (`ringlock node NAME ready`) is not a log line: node.py writes it to
  stderr itself, in both formats.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import secrets
import sys
import time
from datetime import UTC, datetime

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

HEADER = "X-Request-Id"
FORMATS = ("plain", "json")
MAX_ID = 64
_VALID = re.compile(rf"[A-Za-z0-9._:+=/-]{{1,{MAX_ID}}}")
PLAIN = "%(asctime)s %(levelname)s %(name)s: %(message)s%(rid)s"

_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id",
                                                                         default=None)
access = logging.getLogger("kvstore.access")


def current() -> str | None:
    """The request id of the request being served in this context, if any."""
    return _request_id.get()


def valid(text: str) -> bool:
    return _VALID.fullmatch(text) is not None


def new_id() -> str:
    return secrets.token_hex(8)


def outgoing_headers() -> dict[str, str]:
    """Headers an internal call made on behalf of the current request carries."""
    rid = _request_id.get()
    return {HEADER: rid} if rid else {}


@web.middleware
async def request_ids(request: web.Request, handler) -> web.StreamResponse:
    """Bind a request id (see the module docstring) for the handler, answer it back."""
    given = request.headers.get(HEADER)
    rid = given if given is not None and valid(given) else new_id()
    token = _request_id.set(rid)
    start = time.perf_counter()
    status = 500
    try:
        if given is not None and given != rid:
            access.info("replaced an invalid %s header (%d characters)", HEADER, len(given))
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            status = exc.status
            exc.headers[HEADER] = rid
            raise
        status = response.status
        if not response.prepared:
            response.headers[HEADER] = rid
        return response
    finally:
        if access.isEnabledFor(logging.DEBUG):
            access.debug("%s %s %d %.1f ms", request.method, request.rel_url.raw_path[:200],
                         status, (time.perf_counter() - start) * 1000)
        _request_id.reset(token)


class ContextFilter(logging.Filter):
    """Adds `node`, `request_id` and the plain format's `rid` suffix to every record."""

    def __init__(self, node: str) -> None:
        super().__init__()
        self.node = node

    def filter(self, record: logging.LogRecord) -> bool:
        rid = _request_id.get()
        record.node = self.node
        record.request_id = rid
        record.rid = f" [rid={rid}]" if rid else ""
        return True


class QuietBadRequests(logging.Filter):
    """aiohttp's "Error handling request" for a request its parser refused: one WARNING."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if record.name == "aiohttp.server" and isinstance(exc, HttpProcessingError):
            detail = " ".join(str(exc).split())[:300]
            record.msg, record.args = "%s (answered 400): %s", (record.getMessage(), detail)
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info = record.exc_text = None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record (the fields the module docstring lists)."""

    def format(self, record: logging.LogRecord) -> str:
        out = {"time": datetime.fromtimestamp(record.created, UTC)
               .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
               "level": record.levelname, "logger": record.name,
               "message": record.getMessage(), "node": getattr(record, "node", None)}
        rid = getattr(record, "request_id", None)
        if rid:
            out["request_id"] = rid
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def setup(level: str, fmt: str, node: str) -> logging.Handler:
    """Replace the root logger's handlers with one stderr handler in `fmt`; return it."""
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(QuietBadRequests())
    handler.addFilter(ContextFilter(node))
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(PLAIN))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level)
    return handler


__all__ = ["FORMATS", "HEADER", "ContextFilter", "JsonFormatter", "QuietBadRequests",
           "current", "new_id", "outgoing_headers", "request_ids", "setup", "valid"]
