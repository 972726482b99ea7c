"""Authentication and access control: the auth file's model and the decision (no I/O).

Theory of operation (docs/auth.md has the file format and examples)

- Principals authenticate with bearer tokens. The auth file stores only each user's
  `token_sha256` (hex SHA-256 of the token), never the token: a stolen file does not let
  anyone in. A presented token is hashed and compared with every user's hash with
  `hmac.compare_digest` (all of them, no early exit), so the time taken says nothing about
  which hash nearly matched.
- The cluster's peer token (`[peer] token`) is stored in clear: every node must send it on
  its peer calls. It names the `peer` principal, which may do everything (it is the
  cluster's root credential; keep the file like a private key, mode 0600).
- A role is a list of rules; a rule names a resource kind (`kv` keys, `lock` names,
  lock-service `entry` names, `admin` paths, or `*` for every kind), a name `prefix`
  (UTF-8; "" is every name) and permissions `read`, `write`, `admin` (admin implies read
  and write). A user has roles; it may do what any rule of any of its roles allows.
  Nothing is allowed unless a rule allows it (default deny, as in etcd's roles).
- Sessions of the lock service are not named resources: opening, keeping alive and
  closing one (`Kind.SESSION`) is allowed to a principal that may write some lock or
  entry prefix (a session exists to hold locks and ephemeral entries).
- `decide(principal, kind, name, perm)` answers `Allowed` or `Denied(reason)`; it is a
  pure function of its arguments.
- `parse(text)` validates the whole file and raises AuthFileError naming the key (and the
  line, where it can be found) of the first problem; nothing half-read is ever used.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

DEFAULT_PUBLIC_PATHS = ("/health",)
MIN_PEER_TOKEN = 16  # characters; a shorter shared secret is refused
MAX_TOKEN = 4096  # characters; longer bearer tokens are refused before hashing
_HEX64 = re.compile(r"[0-9a-f]{64}")
_NAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}")


class AuthFileError(ValueError):
    """The auth file is malformed; the message names the key (and line) that is wrong."""


class Perm(enum.StrEnum):
    READ = "read"
    WRITE = "write"
    ADMIN = "admin"  # implies read and write


class Kind(enum.StrEnum):
    KV = "kv"          # store keys (bytes), /kv/{key}
    LOCK = "lock"      # lock names, /lock/v1/locks/{name}
    ENTRY = "entry"    # lock-service entries, /lock/v1/entries/{name}
    ADMIN = "admin"    # operator paths: /admin/..., /ring, /status, /metrics
    SESSION = "session"  # lock-service sessions (requests only; not a rule kind)


RULE_KINDS = (Kind.KV, Kind.LOCK, Kind.ENTRY, Kind.ADMIN)


@dataclass(frozen=True)
class Rule:
    """`perms` on every name of `kind` (None: every kind) that starts with `prefix`."""

    kind: Kind | None
    prefix: bytes
    perms: frozenset[Perm]

    def allows(self, kind: Kind, name: bytes, perm: Perm) -> bool:
        return ((self.kind is None or self.kind == kind) and name.startswith(self.prefix)
                and (perm in self.perms or Perm.ADMIN in self.perms))


@dataclass(frozen=True)
class Principal:
    """Who a request is: a user with its roles' rules flattened, or the peer."""

    name: str
    roles: tuple[str, ...] = ()
    rules: tuple[Rule, ...] = ()
    peer: bool = False


PEER = Principal("peer", peer=True)


@dataclass(frozen=True)
class Allowed:
    principal: str


@dataclass(frozen=True)
class Denied:
    reason: str  # one sentence for the 403 answer


def _show(name: bytes) -> str:
    text = name.decode("utf-8", "backslashreplace")
    return repr(text if len(text) <= 80 else text[:80] + "...")


def decide(principal: Principal, kind: Kind, name: bytes | str, perm: Perm) -> Allowed | Denied:
    """May `principal` have `perm` on the resource `name` of `kind`? (Pure.)"""
    raw = name.encode("utf-8", "surrogateescape") if isinstance(name, str) else bytes(name)
    if principal.peer:
        return Allowed(principal.name)
    if kind == Kind.SESSION:
        if any(r.allows(k, r.prefix, Perm.WRITE) for r in principal.rules
               for k in (Kind.LOCK, Kind.ENTRY)):
            return Allowed(principal.name)
        return Denied(f"{principal.name!r} may not use lock-service sessions (it needs write "
                      "on some lock or entry prefix)")
    if any(rule.allows(kind, raw, perm) for rule in principal.rules):
        return Allowed(principal.name)
    roles = ", ".join(principal.roles) or "none"
    return Denied(f"{principal.name!r} (roles: {roles}) may not {perm} {kind} {_show(raw)}")


@dataclass(frozen=True)
class AuthConfig:
    """A validated auth file."""

    users: dict[str, tuple[str, Principal]]  # name -> (token_sha256, principal)
    roles: dict[str, tuple[Rule, ...]]
    peer_token: str | None = None
    public_paths: frozenset[str] = field(default=frozenset(DEFAULT_PUBLIC_PATHS))

    def authenticate(self, token: str) -> Principal | None:
        """The principal of a bearer token, or None when no user (nor the peer) has it."""
        if not token or len(token) > MAX_TOKEN:
            return None
        found: Principal | None = None
        if self.peer_token is not None and hmac.compare_digest(
                token.encode("utf-8", "surrogateescape"),
                self.peer_token.encode("utf-8")):
            found = PEER
        digest = hash_token(token)
        for token_hash, principal in self.users.values():  # no early exit: see docstring
            if hmac.compare_digest(digest, token_hash) and found is None:
                found = principal
        return found

    def is_peer(self, token: str) -> bool:
        return self.authenticate(token) is PEER


def hash_token(token: str) -> str:
    """The `token_sha256` the auth file stores for `token`."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def new_token() -> str:
    """A fresh random token (256 bits, URL-safe base64)."""
    return secrets.token_urlsafe(32)


# -- parsing -------------------------------------------------------------------------------

def parse(text: str, source: str = "auth file") -> AuthConfig:
    """The AuthConfig of an auth file's text; AuthFileError says what is wrong and where."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise AuthFileError(f"{source} is not valid TOML: {exc}") from None
    where = _Where(text, source)
    _only(doc, ("peer", "public", "roles", "users"), "", where)
    roles = {name: _role(name, body, where)
             for name, body in _table(doc, "roles", where).items()}
    users: dict[str, tuple[str, Principal]] = {}
    seen: dict[str, str] = {}
    for name, body in _table(doc, "users", where).items():
        token_hash, principal = _user(name, body, roles, where)
        if token_hash in seen:
            raise where.error(f"users.{name}", "token_sha256",
                              f"the same token as user {seen[token_hash]!r}")
        seen[token_hash] = name
        users[name] = (token_hash, principal)
    peer = _table(doc, "peer", where)
    _only(peer, ("token",), "peer", where)
    peer_token = peer.get("token")
    if peer_token is not None:
        if not isinstance(peer_token, str) or len(peer_token) < MIN_PEER_TOKEN \
                or len(peer_token) > MAX_TOKEN or not peer_token.isprintable() \
                or any(c.isspace() for c in peer_token):
            raise where.error("peer", "token", f"must be a string of {MIN_PEER_TOKEN}.."
                              f"{MAX_TOKEN} printable characters without spaces")
        if hash_token(peer_token) in seen:
            raise where.error("peer", "token", f"is also user {seen[hash_token(peer_token)]!r}"
                              "'s token")
    public = _table(doc, "public", where)
    _only(public, ("paths",), "public", where)
    paths = public.get("paths", list(DEFAULT_PUBLIC_PATHS))
    if not isinstance(paths, list) or not all(isinstance(p, str) and p.startswith("/")
                                               for p in paths):
        raise where.error("public", "paths", 'must be a list of paths like "/health"')
    return AuthConfig(users, roles, peer_token, frozenset(paths))


def _role(name: str, body: Any, where: _Where) -> tuple[Rule, ...]:
    at = f"roles.{name}"
    if not _NAME.fullmatch(name):
        raise where.error("roles", name, "a role name is 1..64 of A-Z a-z 0-9 _ . @ -")
    if not isinstance(body, dict):
        raise where.error("roles", name, "must be a table with `rules`")
    _only(body, ("rules",), at, where)
    rules = body.get("rules")
    if not isinstance(rules, list):
        raise where.error(at, "rules", "must be a list of {kind, prefix, perms} tables")
    return tuple(_rule(f"{at}.rules[{i}]", r, where) for i, r in enumerate(rules))


def _rule(at: str, body: Any, where: _Where) -> Rule:
    if not isinstance(body, dict):
        raise where.error(at, None, "a rule is a table {kind, prefix, perms}")
    _only(body, ("kind", "prefix", "perms"), at, where)
    kind = body.get("kind")
    kinds = [str(k) for k in RULE_KINDS] + ["*"]
    if kind not in kinds:
        raise where.error(at, "kind", f"must be one of {', '.join(kinds)}, not {kind!r}")
    prefix = body.get("prefix", "")
    if not isinstance(prefix, str) or len(prefix.encode("utf-8", "surrogatepass")) > 1024:
        raise where.error(at, "prefix", "must be a string of at most 1024 bytes")
    perms = body.get("perms")
    if not isinstance(perms, list) or not perms or not all(p in set(Perm) for p in perms):
        raise where.error(at, "perms", 'must be a non-empty list of "read", "write", "admin"')
    try:
        raw = prefix.encode("utf-8")
    except UnicodeEncodeError:
        raise where.error(at, "prefix", "must be valid UTF-8") from None
    return Rule(None if kind == "*" else Kind(kind), raw, frozenset(Perm(p) for p in perms))


def _user(name: str, body: Any, roles: dict[str, tuple[Rule, ...]],
          where: _Where) -> tuple[str, Principal]:
    at = f"users.{name}"
    if not _NAME.fullmatch(name) or name == PEER.name:
        raise where.error("users", name, 'a user name is 1..64 of A-Z a-z 0-9 _ . @ - '
                          'and not "peer"')
    if not isinstance(body, dict):
        raise where.error("users", name, "must be a table with token_sha256 and roles")
    if "token" in body:
        raise where.error(at, "token", "store token_sha256 (`kv auth hash-token`), never "
                          "the token itself")
    _only(body, ("token_sha256", "roles"), at, where)
    token_hash = body.get("token_sha256")
    if not isinstance(token_hash, str) or not _HEX64.fullmatch(token_hash):
        raise where.error(at, "token_sha256", "must be 64 lowercase hex digits (the SHA-256 "
                          "of the token: `kv auth hash-token`)")
    names = body.get("roles", [])
    if not isinstance(names, list) or not all(isinstance(r, str) for r in names):
        raise where.error(at, "roles", "must be a list of role names")
    for role in names:
        if role not in roles:
            raise where.error(at, "roles", f"names an undefined role {role!r}")
    rules = tuple(rule for role in names for rule in roles[role])
    return token_hash, Principal(name, tuple(names), rules)


def _table(doc: dict[str, Any], key: str, where: _Where) -> dict[str, Any]:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise where.error("", key, "must be a table")
    return value


def _only(body: dict[str, Any], allowed: Iterable[str], at: str, where: _Where) -> None:
    for key in body:
        if key not in allowed:
            raise where.error(at, key, f"is not a known setting here (allowed: "
                              f"{', '.join(allowed)})")


class _Where:
    """Finds the line of a key for error messages (best effort: tables and `key =`)."""

    def __init__(self, text: str, source: str) -> None:
        self.lines = text.splitlines()
        self.source = source

    def line_of(self, table: str, key: str | None) -> int | None:
        table = re.sub(r"\[\d+\]", "", table)  # rules[2] -> rules: the array's lines
        header = re.compile(r"\s*\[+\s*" + re.escape(table).replace(r"\.", r"\s*\.\s*")
                            + r"\s*\]+") if table else None
        inside = header is None
        for number, line in enumerate(self.lines, 1):
            stripped = line.strip()
            if header is not None and header.fullmatch(stripped.split("#")[0].strip()):
                inside = True
                if key is None:
                    return number
                continue
            if stripped.startswith("[") and header is not None and inside \
                    and not stripped.startswith("[" + table):
                inside = False
            if inside and key is not None and re.match(
                    r'\[*\s*["\']?' + re.escape(key) + r'["\']?\s*[=.\]]', stripped):
                return number
        return None

    def find(self, table: str, key: str | None) -> int | None:
        """The line of `table.key`, else of the nearest enclosing key that has one."""
        key = re.sub(r"\[\d+\]", "", key) if key else key
        while True:
            line = self.line_of(table, key)
            if line or not table:
                return line
            table, _, key = table.rpartition(".")
            key = re.sub(r"\[\d+\]", "", key)

    def error(self, table: str, key: str | None, problem: str) -> AuthFileError:
        path = ".".join(p for p in (table, key) if p)
        line = self.find(table, key)
        at = f" (line {line})" if line else ""
        return AuthFileError(f"{self.source}: {path or 'the file'}{at} {problem}")
