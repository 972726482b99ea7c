"""The status page every node serves: `GET /status` for people, `GET /status/v1` for it.

Theory of operation

- `GET /status` with an `Accept` header that ranks `text/html` above `application/json`
  (every browser's navigation does) answers the page, kvstore/static/status.html with its
  status.css and status.js from `GET /status/static/{name}`. Any other `GET /status`
  (no Accept, `*/*`, `application/json`: programs, `kv status`, the client library) goes on
  to the JSON counters of kvstore/http_api.py as before; both carry `Vary: Accept`. The
  choice is made by `page_middleware`, because aiohttp routes by path and method only.
- The page asks `GET /status/v1` every 2 s and redraws: the ring as an SVG circle (one arc
  per partition, coloured by owner), a legend of the nodes with their health, the lock
  service, the sessions and locks, and the recent events. When a fetch fails it keeps the
  last picture and says it is stale, since when and why (docs/status.md).
- `GET /status/v1` takes no parameters: any query string is refused (400), other methods
  get 405 (aiohttp's, in the JSON shape of http_api.json_errors); nothing is changed by
  either. The document (`document()`, version 1, pure):

      {"version": 1, "node", "time" (unix s),
       "ring": {"version", "ring_size", "members", "owners": [owner of partition 0, ...]},
       "members": [{"name", "self", "member", "health", "status", "phi", "partitions",
                    "lock_voter"}],
       "lock": {"configured", "member", "member_id", "voters": [{"id", "address",
                "health", "leader"}], "leader": {"id", "address", "term"} | null,
                "note", and on a member: "raft": {...}, "sessions": [...],
                "sessions_total", "locks": [...], "locks_total"},
       "events": {"items": [{"seq", "time", "kind", "level", "text"}] newest first,
                  "dropped", "capacity"}}

- Health, as this node sees a ring member: `down` when its failure detector convicted it
  (membership.is_alive false); `suspect` when it is still believed up but a call to it
  failed in transport within the last second (peers.suspect) or its phi passed half the
  conviction threshold; `alive` otherwise (this node itself always). Nodes that gossip
  carried but that are not ring members (a leaver, a joiner) have health `unknown`.
- Lock service: on a voter (`--lock-id`), the leader, term and Raft progress come from its
  own driver and the sessions and locks from its applied table (a local, possibly stale
  read: at most `MAX_ROWS` of each, with the totals). A node that only knows the voters
  (`--lock-peers`) says it is not a lock member and names the voters whose pages show them.
- Events: kvstore/events.py's buffer, attached to the loggers when the app starts and
  detached when it is cleaned up.
- Untrusted text (lock names, log messages, node names) reaches the page only as JSON and
  is put in the DOM with textContent; the page is served with a Content-Security-Policy
  that allows nothing but this origin's files (no CDN, no inline script).

Mounting (kvstore/node.py `_serve`, before http_api.install): `install(app, node=node)`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from importlib import resources
from typing import Any

from aiohttp import web

from kvstore.events import EventLog
from kvstore.ring import Ring

logger = logging.getLogger(__name__)

DOC_VERSION = 1
PAGE_PATH = "/status"
API_PATH = "/status/v1"
ASSETS = {"status.css": "text/css", "status.js": "text/javascript"}
PAGE_FILE = "status.html"
MAX_ROWS = 50  # sessions and locks listed (the totals are always given)
MAX_EVENTS = 50  # events sent per refresh (the buffer keeps more)
SUSPECT_PHI = 0.5  # suspect past this fraction of the conviction threshold
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
       "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
_EVENT_LOG = web.AppKey("status_page_events", EventLog)


# -- content negotiation ---------------------------------------------------------------------

def _quality(ranges: list[tuple[str, str, float]], mime: str) -> float:
    """The q of the most specific range matching `mime` (exact, type/*, */*); 0 if none."""
    kind, sub = mime.split("/")
    best, rank = 0.0, -1
    for rk, rs, q in ranges:
        if (rk, rs) == (kind, sub):
            r = 2
        elif rk == kind and rs == "*":
            r = 1
        elif (rk, rs) == ("*", "*"):
            r = 0
        else:
            continue
        if r > rank:
            best, rank = q, r
    return best


def _media_ranges(accept: str) -> list[tuple[str, str, float]]:
    out = []
    for part in accept[:4096].split(","):
        fields = [f.strip() for f in part.split(";")]
        kind, _, sub = fields[0].lower().partition("/")
        if not kind or not sub:
            continue
        q = 1.0
        for param in fields[1:]:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = -1.0
        if 0.0 <= q <= 1.0:  # a malformed quality drops its range (RFC 9110 §12.4.2)
            out.append((kind, sub, q))
    return out


def prefers_html(accept: str | None) -> bool:
    """True when `accept` ranks text/html strictly above application/json (pure).

    Ties, `*/*` and a missing header answer False: JSON stays the default of /status."""
    if not accept:
        return False
    ranges = _media_ranges(accept)
    return _quality(ranges, "text/html") > _quality(ranges, "application/json")


# -- the document (pure) ------------------------------------------------------------------------

def health(*, me: bool, member: bool, alive: bool, suspect: bool, phi: float,
           threshold: float) -> str:
    """alive / suspect / down for a ring member as this node sees it; unknown otherwise."""
    if me:
        return "alive"
    if not member:
        return "unknown"
    if not alive:
        return "down"
    if suspect or phi > threshold * SUSPECT_PHI:
        return "suspect"
    return "alive"


def ring_view(ring: Ring) -> dict[str, Any]:
    return {"version": ring.version, "ring_size": ring.ring_size,
            "members": list(ring.members), "owners": list(ring.owners)}


def members_view(me: str, ring: Ring, membership: Mapping[str, Any],
                 suspect: Callable[[str], bool], threshold: float,
                 voters: Iterable[str] = ()) -> list[dict[str, Any]]:
    """One row per node membership knows (`membership` is Membership.status()'s members),
    ring members first, each in name order."""
    voters = set(voters)
    names = set(ring.members) | set(membership)
    rows = []
    for name in sorted(names, key=lambda n: (n not in ring.members, n)):
        m = membership.get(name, {})
        member = name in ring.members
        phi = float(m.get("phi") or 0.0)
        alive = bool(m.get("alive", name == me))
        rows.append({
            "name": name, "self": name == me, "member": member,
            "health": health(me=name == me, member=member, alive=alive,
                             suspect=name != me and member and suspect(name), phi=phi,
                             threshold=threshold),
            "status": m.get("status", "unknown"), "phi": phi,
            "partitions": len(ring.owned_by(name)) if member else 0,
            "lock_voter": name in voters,
        })
    return rows


def lock_tables(fsm: Any, limit: int = MAX_ROWS) -> dict[str, Any]:
    """Sessions and locks of a lock table (lockservice.fsm.LockStateMachine), the first
    `limit` of each by id / name, with the totals. Times are relative to the table clock."""
    clock = fsm.clock
    sessions = [
        {"id": s.id, "ttl_ms": s.ttl_ms, "expires_in_ms": s.expires_at - clock,
         "held": sorted(s.held), "waiting": sorted(s.waiting)}
        for s in (fsm.sessions[i] for i in sorted(fsm.sessions)[:limit])]
    locks = []
    for name in sorted(fsm.locks)[:limit]:
        lock = fsm.locks[name]
        mode = lock.mode()
        locks.append({
            "name": name, "mode": mode.name.lower() if mode is not None else None,
            "holders": [{"session": h.sequencer.session, "generation": h.sequencer.generation}
                        for h in lock.holders.values()],
            "waiters": len(lock.waiters), "delay_ms": max(0, lock.delay_until - clock)})
    return {"clock": clock, "sessions": sessions, "sessions_total": len(fsm.sessions),
            "locks": locks, "locks_total": len(fsm.locks)}


def lock_view(voters: Mapping[int, str], member_id: int | None, *,
              health_of: Mapping[str, str], leader: Mapping[str, Any] | None = None,
              raft: Mapping[str, Any] | None = None,
              tables: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The lock-service part of the document. `leader`, `raft` and `tables` are given on a
    voter (LockServer.leader(), its driver's status(), lock_tables(fsm))."""
    if not voters:
        return {"configured": False, "member": False, "member_id": None, "voters": [],
                "leader": None,
                "note": "no lock service is configured on this node (--lock-peers)"}
    lead = None
    if leader is not None and leader.get("leader"):
        lead = {"id": leader["leader"], "address": leader.get("address"),
                "term": leader.get("term")}
    out: dict[str, Any] = {
        "configured": True, "member": member_id is not None, "member_id": member_id,
        "voters": [{"id": i, "address": a, "health": health_of.get(a, "unknown"),
                    "leader": lead is not None and lead["id"] == i}
                   for i, a in sorted(voters.items())],
        "leader": lead,
    }
    if member_id is None:
        out["note"] = ("not a lock member: this node only knows the voters; the status "
                       "page of a voter shows the leader, sessions and locks")
        return out
    out["note"] = "sessions and locks as applied on this member (a local read)"
    if lead is None:
        out["note"] = "no leader known to this member yet; " + out["note"]
    if raft is not None:
        out["raft"] = {k: raft.get(k) for k in ("role", "term", "commit", "applied",
                                                "last_index")}
    out.update(tables or {})
    return out


def document(node: str, ring: Ring, members: list[dict[str, Any]], lock: dict[str, Any],
             events: EventLog, now: float) -> dict[str, Any]:
    recent = events.recent(MAX_EVENTS)
    return {"version": DOC_VERSION, "node": node, "time": now, "ring": ring_view(ring),
            "members": members, "lock": lock,
            "events": {"items": [e.to_json() for e in recent], "dropped": events.dropped,
                       "capacity": events.capacity}}


# -- reading a live node ---------------------------------------------------------------------

def snapshot(node: Any, events: EventLog) -> dict[str, Any]:
    """The document for a running kvstore.node.Node (reads its parts' in-memory state)."""
    membership = node.membership
    ring = membership.ring
    voters = dict(node.config.lock_peers)
    members = members_view(node.name, ring, membership.status()["members"],
                           node.peers.suspect, membership.config.phi_threshold,
                           voters.values())
    health_of = {m["name"]: m["health"] for m in members}
    server = node.lock
    if server is None:
        lock = lock_view(voters, None, health_of=health_of)
    else:
        lock = lock_view(voters, server.id, health_of=health_of, leader=server.leader(),
                         raft=server.driver.status(), tables=lock_tables(server.fsm))
    return document(node.name, ring, members, lock, events, time.time())


# -- HTTP --------------------------------------------------------------------------------------

def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status)


class _Files:
    """The page's files from the package (kvstore/static), read once."""

    def __init__(self) -> None:
        self.missing: str | None = None
        self.data: dict[str, bytes] = {}
        try:
            base = resources.files("kvstore").joinpath("static")
            for name in (PAGE_FILE, *ASSETS):
                self.data[name] = base.joinpath(name).read_bytes()
        except OSError as exc:
            self.missing = f"{exc.__class__.__name__}: {exc}"
            logger.error("status page files missing from this installation (kvstore/static):"
                         " %s", self.missing)

    def response(self, name: str, content_type: str, headers: dict[str, str]) -> web.Response:
        if self.missing is not None:
            return _error(503, "unavailable", "the status page's files are missing from this "
                          "installation (kvstore/static); /status/v1 still answers")
        return web.Response(body=self.data[name], content_type=content_type, charset="utf-8",
                            headers=headers)


def install(app: web.Application, *, node: Any) -> None:
    """Mount the page, its files and /status/v1 on `app` for `node` (kvstore.node.Node)."""
    events = EventLog()
    app[_EVENT_LOG] = events
    files = _Files()

    async def attach(_app: web.Application) -> None:
        events.attach()

    async def detach(_app: web.Application) -> None:
        events.detach()

    app.on_startup.append(attach)
    app.on_cleanup.append(detach)

    @web.middleware
    async def page_middleware(request: web.Request, handler: Callable) -> web.StreamResponse:
        if request.rel_url.raw_path != PAGE_PATH:
            return await handler(request)
        if request.method in ("GET", "HEAD") and prefers_html(request.headers.get("Accept")):
            return files.response(PAGE_FILE, "text/html", {
                "Cache-Control": "no-store", "Vary": "Accept", "Content-Security-Policy": CSP,
                "X-Content-Type-Options": "nosniff"})
        response = await handler(request)
        if not response.prepared:
            response.headers["Vary"] = "Accept"
        return response

    async def asset(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in ASSETS:
            return _error(404, "not_found", f"no such file of the status page: {name[:100]}")
        return files.response(name, ASSETS[name], {"Cache-Control": "no-cache",
                                                   "X-Content-Type-Options": "nosniff"})

    async def api(request: web.Request) -> web.Response:
        if request.query_string:
            return _error(400, "invalid_request",
                          f"{API_PATH} takes no query parameters (got "
                          f"{request.query_string[:100]!r})")
        return web.json_response(snapshot(node, events),
                                 headers={"Cache-Control": "no-store"})

    app.middlewares.append(page_middleware)
    app.add_routes([web.get(API_PATH, api), web.get("/status/static/{name}", asset)])


__all__ = ["API_PATH", "ASSETS", "DOC_VERSION", "MAX_EVENTS", "MAX_ROWS", "PAGE_PATH",
           "document", "health", "install", "lock_tables", "lock_view", "members_view",
           "prefers_html", "ring_view", "snapshot"]
