"""Tokens and ACLs at the node's HTTP edge: an aiohttp middleware over kvstore/auth.py.

Theory of operation (docs/auth.md)

- `Guard.load(path)` reads the auth file (`--auth-file`); a bad file raises AuthFileError
  and the node does not start. `Guard.reload()` (SIGHUP) reads it again and keeps the old
  rules when the new file is bad. A changed `[peer] token` takes effect for outgoing calls
  only at restart (peer sessions hold their headers from the start).
- Every request is classified before its handler runs (`classify`, pure): a public path
  (the file's `[public] paths`, default /health; an entry ending in `*` is a prefix)
  passes; a peer route (/internal/, the Raft routes) needs the peer token (with TLS on, a
  connection that presented a node certificate passes peer routes and forwarded lock
  requests without a token, as kvstore/tls.py's peer_guard admits them); any other
  request needs `Authorization: Bearer <token>` of a known user (or the peer) and, for a
  named resource, `auth.decide` to allow it. A missing, malformed or unknown token
  answers 401, a refusal 403, both JSON
  `{"error": "unauthenticated"|"forbidden", "message": ...}`; the handler never runs, so a
  denied request changes nothing. Each denial counts in `ringlock_auth_denied_total{reason}`
  (reasons: missing_token, bad_scheme, unknown_token, peer_only, forbidden).
- Resources: `/kv/{key}` -> kv key (GET/HEAD read, other methods write). `/lock/v1/`:
  locks/{name}[/acquire|/release] -> lock name, entries/{name} -> entry name (GET read,
  else write); sessions (open, keepalive, close) -> Kind.SESSION; a watch -> read of its
  body's `prefix` as both lock and entry names; sequencers/check -> read of the lock the
  body's sequencer names; /lock/v1/status -> admin. `/admin/...`, `/ring`, `/status...`,
  `/metrics` -> admin path (GET/HEAD read, else write). Anything else (lock leader,
  unknown paths) needs only a known token; its handler answers (often 404).
- An allowed request carries its `auth.Principal` in `request["principal"]` (`.name`,
  `.peer`; the lock service counts sessions per client by it).
- Bodies read for a decision (watch, sequencer check; at most lockservice's MAX_BODY) are
  handed on to the handler unchanged. A body or name the middleware cannot read leaves the
  refusal to the handler (a 4xx that changes nothing), for an authenticated principal only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import warnings
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from aiohttp import streams, web

from kvstore import tls
from kvstore.auth import MAX_TOKEN, AuthConfig, AuthFileError, Denied, Kind, Perm, decide, parse
from kvstore.errors import InvalidRequest
from kvstore.http_codec import parse_key
from raft.transport import RAFT_PATH, STREAM_PATH

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Check = tuple[Kind, bytes | str, Perm]
MAX_PEEK = 64 * 1024  # lockservice.http_api.MAX_BODY: larger bodies are refused there
LOCK = "/lock/v1/"
ADMIN_PATHS = ("/admin/", "/status", "/metrics")
READS = ("GET", "HEAD")


@dataclass(frozen=True)
class Need:
    """What a request needs: `public`, `peer`, `user` (a known token) plus `checks`, or
    `body`: the checks depend on the JSON body (`body_checks` of it)."""

    what: str
    checks: tuple[Check, ...] = ()
    body_checks: Callable[[object], tuple[Check, ...] | None] | None = None


PUBLIC, PEER_ONLY, USER = Need("public"), Need("peer"), Need("user")


def classify(method: str, raw_path: str, path: str, route: str | None,
             match: Mapping[str, str], public: frozenset[str]) -> Need:
    """The Need of a request: its method, raw (still percent-encoded) and decoded path,
    the canonical pattern of the route it matched (None: no route) and the match."""
    perm = Perm.READ if method in READS else Perm.WRITE
    if path in public or any(p.endswith("*") and path.startswith(p[:-1]) for p in public):
        return PUBLIC
    if path.startswith("/internal/") or path in (RAFT_PATH, STREAM_PATH):
        return PEER_ONLY
    if raw_path.startswith("/kv/"):
        try:
            return Need("user", ((Kind.KV, parse_key(raw_path[4:]), perm),))
        except InvalidRequest:
            return USER  # the handler answers 400
    if path.startswith(LOCK):
        return _lock_need(method, perm, route, match)
    if path == "/ring" or path.startswith(ADMIN_PATHS):
        return Need("user", ((Kind.ADMIN, path, perm),))
    return USER


def _lock_need(method: str, perm: Perm, route: str | None, match: Mapping[str, str]) -> Need:
    tail = (route or "").removeprefix(LOCK)
    name = match.get("name")
    if tail.startswith("locks/") and name:
        return Need("user", ((Kind.LOCK, name, perm),))
    if tail.startswith("entries/") and name:
        return Need("user", ((Kind.ENTRY, name, perm),))
    if tail.startswith("sessions/") and tail.endswith("/watches"):
        return Need("body", body_checks=_watch_checks)
    if tail.startswith("sessions"):
        return Need("user", ((Kind.SESSION, "", Perm.WRITE),))
    if tail == "sequencers/check":
        return Need("body", body_checks=_sequencer_checks)
    if tail == "status":
        return Need("user", ((Kind.ADMIN, LOCK + "status", Perm.READ),))
    return USER


def _watch_checks(body: object) -> tuple[Check, ...] | None:
    prefix = body.get("prefix") if isinstance(body, dict) else None
    if not isinstance(prefix, str):
        return None
    return ((Kind.LOCK, prefix, Perm.READ), (Kind.ENTRY, prefix, Perm.READ))


def _sequencer_checks(body: object) -> tuple[Check, ...] | None:
    from lockservice.sequencer import Sequencer

    token = body.get("sequencer") if isinstance(body, dict) else None
    try:
        name = Sequencer.from_token(token).name  # type: ignore[arg-type]
    except ValueError:
        return None
    return ((Kind.LOCK, name, Perm.READ),)


def bearer(values: list[str]) -> tuple[str | None, str]:
    """(token, "") from the Authorization header values, or (None, the denial reason)."""
    if not values:
        return None, "missing_token"
    if len(values) > 1 or len(values[0]) > MAX_TOKEN + 16:
        return None, "bad_scheme"
    scheme, _, token = values[0].strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or not token.isprintable() or " " in token:
        return None, "bad_scheme"
    return token, ""


_MESSAGES = {
    "missing_token": "this node requires `Authorization: Bearer <token>`",
    "bad_scheme": "the Authorization header must be `Bearer <token>` (one header, one token)",
    "unknown_token": "the token is not known to this node",
    "peer_only": "this is a peer route: only the cluster's peer token may call it",
}


def _refuse(status: int, reason: str, message: str) -> web.Response:
    code = "unauthenticated" if status == 401 else "forbidden"
    headers = {"WWW-Authenticate": 'Bearer realm="ringlock"'} if status == 401 else None
    return web.json_response({"error": code, "message": message + "; nothing was changed"},
                             status=status, headers=headers)


class Guard:
    """The node's auth configuration and its middleware."""

    def __init__(self, config: AuthConfig, path: Path | None = None,
                 on_denied: Callable[[str], None] | None = None) -> None:
        self.config = config
        self.path = path
        self.on_denied = on_denied or (lambda reason: None)

    @classmethod
    def load(cls, path: Path | str) -> Guard:
        """Read and validate the auth file; AuthFileError (also for an unreadable file)."""
        return cls(read(Path(path)), Path(path))

    def reload(self) -> bool:
        """Read the file again (SIGHUP); keep the old rules when it is bad."""
        if self.path is None:
            return False
        try:
            self.config = read(self.path)
        except AuthFileError as exc:
            logger.error("auth file not reloaded, the old rules stay: %s", exc)
            return False
        logger.info("auth file %s reloaded (%d users)", self.path, len(self.config.users))
        return True

    def peer_headers(self) -> dict[str, str]:
        token = self.config.peer_token
        return {"Authorization": f"Bearer {token}"} if token else {}

    def _deny(self, request: web.Request, status: int, reason: str,
              message: str) -> web.Response:
        self.on_denied(reason)
        logger.info("auth: %s %s refused (%s)", request.method, request.path[:200], reason)
        return _refuse(status, reason, message)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        config = self.config
        info = request.match_info
        route = info.route.resource.canonical if info.route.resource is not None else None
        need = classify(request.method, request.rel_url.raw_path, request.path, route,
                        info, config.public_paths)
        if need.what == "public" or (tls.is_peer_request(request.path, request.headers)
                                     and _node_certificate(request)):
            return await handler(request)
        token, reason = bearer(request.headers.getall("Authorization", []))
        principal = config.authenticate(token) if token is not None else None
        if token is not None and principal is None:
            reason = "unknown_token"
        if principal is None:
            return self._deny(request, 401, reason, _MESSAGES[reason])
        if need.what == "peer" and not principal.peer:
            return self._deny(request, 403, "peer_only", _MESSAGES["peer_only"])
        checks = need.checks
        if need.body_checks is not None:
            raw = b""
            if request.content_length is None or request.content_length <= MAX_PEEK:
                raw = await request.content.read(MAX_PEEK + 1)
                _hand_on(request, raw)  # over MAX_PEEK: the handler answers 413
            try:
                body = json.loads(raw) if raw.strip() else None
            except (ValueError, RecursionError):
                body = None
            checks = need.body_checks(body) or ()
        for kind, name, perm in checks:
            verdict = decide(principal, kind, name, perm)
            if isinstance(verdict, Denied):
                return self._deny(request, 403, "forbidden", verdict.reason)
        with warnings.catch_warnings():  # a str key: lockservice reads it without kvstore
            warnings.simplefilter("ignore", web.NotAppKeyWarning)
            request["principal"] = principal  # who asked (lock sessions per client)
        return await handler(request)


def _node_certificate(request: web.Request) -> bool:
    """The connection presented a CA-verified node certificate (TLS on, kvstore/tls.py):
    on a peer route that authenticates the caller as well as the peer token does."""
    transport = request.transport
    peercert = transport.get_extra_info("peercert") if transport is not None else None
    return bool(peercert) and tls.peer_refusal(peercert) is None


def _hand_on(request: web.Request, raw: bytes) -> None:
    """Give the handler a body stream holding `raw` (the middleware read the original).
    aiohttp has no public way to put back what was read; `_payload` is the stream behind
    `request.content` (aiohttp 3.x; tests/kvstore/test_auth_cluster.py proves it works)."""
    reader = streams.StreamReader(request.protocol, 1 << 16, loop=asyncio.get_running_loop())
    reader.feed_data(raw)
    reader.feed_eof()
    request._payload = reader  # type: ignore[attr-defined]


def read(path: Path) -> AuthConfig:
    """The auth file at `path`, validated; AuthFileError when unreadable or malformed."""
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise AuthFileError(f"cannot read auth file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise AuthFileError(f"auth file {path} is not UTF-8 text") from None
    return parse(text, source=f"auth file {path}")
