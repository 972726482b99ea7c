"""kvstore/auth_http.py: which resource each route names (pure), the bearer header, and the
middleware on a real aiohttp server on 127.0.0.1 whose handlers record every call, so a
denied request is seen never to reach a handler (nothing changed), and a body the
middleware read for its decision reaches the handler whole.
"""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from aiohttp import web

from kvstore.auth import Kind, Perm, hash_token, parse
from kvstore.auth_http import PEER_ONLY, PUBLIC, USER, Guard, bearer, classify
from lockservice.sequencer import LockMode, Sequencer

PUB = frozenset({"/health"})


def need(method, path, route=None, match=None, raw=None):
    return classify(method, raw or path, path, route, match or {}, PUB)


def test_store_keys_read_and_write():
    assert need("GET", "/kv/app/x").checks == ((Kind.KV, b"app/x", Perm.READ),)
    assert need("HEAD", "/kv/a").checks == ((Kind.KV, b"a", Perm.READ),)
    assert need("PUT", "/kv/a%2Fb", raw="/kv/a%2Fb").checks == ((Kind.KV, b"a/b", Perm.WRITE),)
    assert need("DELETE", "/kv/%00%FF", raw="/kv/%00%FF").checks == (
        (Kind.KV, b"\x00\xff", Perm.WRITE),)
    assert need("POST", "/kv/a").checks == ((Kind.KV, b"a", Perm.WRITE),)
    assert need("GET", "/kv/%zz", raw="/kv/%zz") == USER  # the handler answers 400


def test_lock_routes_name_their_lock_or_entry():
    locks = "/lock/v1/locks/{name}"
    assert need("POST", "/lock/v1/locks/jobs/a/acquire", locks + "/acquire",
                {"name": "jobs/a"}).checks == ((Kind.LOCK, "jobs/a", Perm.WRITE),)
    assert need("POST", "/lock/v1/locks/x/release", locks + "/release",
                {"name": "x"}).checks == ((Kind.LOCK, "x", Perm.WRITE),)
    assert need("GET", "/lock/v1/locks/x", locks, {"name": "x"}).checks == (
        (Kind.LOCK, "x", Perm.READ),)
    entries = "/lock/v1/entries/{name}"
    assert need("PUT", "/lock/v1/entries/e", entries, {"name": "e"}).checks == (
        (Kind.ENTRY, "e", Perm.WRITE),)
    assert need("GET", "/lock/v1/entries/e", entries, {"name": "e"}).checks == (
        (Kind.ENTRY, "e", Perm.READ),)
    for route in ("/lock/v1/sessions", "/lock/v1/sessions/{id}/keepalive",
                  "/lock/v1/sessions/{id}"):
        assert need("POST", "/lock/v1/sessions/1", route, {"id": "1"}).checks == (
            (Kind.SESSION, "", Perm.WRITE),)
    assert need("GET", "/lock/v1/status", "/lock/v1/status").checks == (
        (Kind.ADMIN, "/lock/v1/status", Perm.READ),)
    assert need("GET", "/lock/v1/leader", "/lock/v1/leader") == USER


def test_body_decides_watches_and_sequencer_checks():
    watch = need("POST", "/lock/v1/sessions/1/watches", "/lock/v1/sessions/{id}/watches")
    assert watch.body_checks({"prefix": "jobs/"}) == (
        (Kind.LOCK, "jobs/", Perm.READ), (Kind.ENTRY, "jobs/", Perm.READ))
    assert watch.body_checks({"prefix": 3}) is None and watch.body_checks(None) is None
    check = need("POST", "/lock/v1/sequencers/check", "/lock/v1/sequencers/check")
    token = Sequencer("jobs/a", LockMode.EXCLUSIVE, 3, 9).to_token()
    assert check.body_checks({"sequencer": token}) == ((Kind.LOCK, "jobs/a", Perm.READ),)
    assert check.body_checks({"sequencer": "garbage"}) is None


def test_admin_peer_public_and_other_paths():
    assert need("GET", "/health") == PUBLIC
    assert need("GET", "/metrics").checks == ((Kind.ADMIN, "/metrics", Perm.READ),)
    assert need("POST", "/admin/v1/join").checks == ((Kind.ADMIN, "/admin/v1/join",
                                                      Perm.WRITE),)
    assert need("GET", "/ring").checks == ((Kind.ADMIN, "/ring", Perm.READ),)
    assert need("GET", "/status/v1").checks == ((Kind.ADMIN, "/status/v1", Perm.READ),)
    for peer in ("/internal/v1/put", "/internal/v1/aae/tree", "/raft/messages",
                 "/raft/stream"):
        assert need("POST", peer) == PEER_ONLY
    assert need("GET", "/nowhere") == USER
    pages = frozenset({"/status", "/status/static/*"})
    assert classify("GET", "/status/static/app.js", "/status/static/app.js", None, {},
                    pages) == PUBLIC
    assert classify("GET", "/status", "/status", None, {}, pages) == PUBLIC
    assert classify("GET", "/status/v1", "/status/v1", None, {}, pages).checks == (
        (Kind.ADMIN, "/status/v1", Perm.READ),)


@pytest.mark.parametrize(("values", "expected"), [
    ([], (None, "missing_token")),
    (["Bearer abc"], ("abc", "")),
    (["bearer   abc  "], ("abc", "")),
    (["Basic dXNlcjpwYXNz"], (None, "bad_scheme")),
    (["Bearer"], (None, "bad_scheme")),
    (["Bearer a b"], (None, "bad_scheme")),
    (["Bearer a", "Bearer b"], (None, "bad_scheme")),
    (["Bearer " + "x" * 100_000], (None, "bad_scheme")),
    (["Bearer \x01\x02"], (None, "bad_scheme")),
])
def test_bearer_header(values, expected):
    assert bearer(values) == expected


# -- the middleware on a real server -------------------------------------------------------

PEER_TOKEN = "peer-token-0123456789abcdef"
FILE = f"""
[peer]
token = "{PEER_TOKEN}"
[roles.app]
rules = [{{ kind = "kv", prefix = "app/", perms = ["read", "write"] }},
         {{ kind = "lock", prefix = "jobs/", perms = ["read", "write"] }},
         {{ kind = "entry", prefix = "jobs/", perms = ["read"] }}]
[users.alice]
token_sha256 = "{hash_token('alice-token')}"
roles = ["app"]
"""


def run_app(requests: list[tuple[str, str, dict, bytes | None]]):
    """Serve a recording app behind the guard; answer (status, json, bodies seen, denials)."""
    seen: list[tuple[str, bytes]] = []
    denials: list[str] = []
    principals: list[str | None] = []

    async def record(request: web.Request) -> web.Response:
        seen.append((request.path, await request.read()))
        principals.append(getattr(request.get("principal"), "name", None))
        return web.json_response({"ok": True})

    async def main():
        guard = Guard(parse(FILE), on_denied=denials.append)
        app = web.Application(middlewares=[guard.middleware])
        app.add_routes([web.route("*", "/kv/{key:.+}", record),
                        web.post("/lock/v1/sessions/{id}/watches", record),
                        web.post("/internal/v1/{op}", record),
                        web.get("/health", record)])
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        answers = []
        try:
            async with aiohttp.ClientSession() as http:
                for method, path, headers, body in requests:
                    async with http.request(method, f"http://127.0.0.1:{port}{path}",
                                            headers=headers, data=body) as resp:
                        answers.append((resp.status, await resp.json(),
                                        resp.headers.get("WWW-Authenticate")))
        finally:
            await runner.cleanup()
        return answers

    return asyncio.run(main()), seen, denials, principals


ALICE = {"Authorization": "Bearer alice-token"}


def test_denied_requests_never_reach_the_handler():
    answers, seen, denials, _ = run_app([
        ("PUT", "/kv/other/x", ALICE, b"v"),
        ("PUT", "/kv/app/x", {}, b"v"),
        ("PUT", "/kv/app/x", {"Authorization": "Bearer wrong"}, b"v"),
        ("PUT", "/kv/app/x", {"Authorization": "Basic YWxpY2U6dG9rZW4="}, b"v"),
        ("POST", "/internal/v1/put", ALICE, b"x"),
        ("POST", "/internal/v1/put", {}, b"x"),
    ])
    assert [(a[0], a[1]["error"]) for a in answers] == [
        (403, "forbidden"), (401, "unauthenticated"), (401, "unauthenticated"),
        (401, "unauthenticated"), (403, "forbidden"), (401, "unauthenticated")]
    assert "alice" in answers[0][1]["message"] and "other/x" in answers[0][1]["message"]
    assert answers[1][2] == 'Bearer realm="ringlock"'
    assert seen == []
    assert denials == ["forbidden", "missing_token", "unknown_token", "bad_scheme",
                       "peer_only", "missing_token"]


def test_allowed_requests_reach_the_handler_with_their_body():
    watch = json.dumps({"prefix": "jobs/"}).encode()
    answers, seen, denials, principals = run_app([
        ("PUT", "/kv/app/x", ALICE, b"value"),
        ("GET", "/health", {}, None),
        ("POST", "/internal/v1/put", {"Authorization": f"Bearer {PEER_TOKEN}"}, b"m"),
        ("POST", "/lock/v1/sessions/7/watches", ALICE, watch),
        ("POST", "/lock/v1/sessions/7/watches", ALICE, b'{"prefix": "other/"}'),
    ])
    assert [a[0] for a in answers] == [200, 200, 200, 200, 403]
    assert seen == [("/kv/app/x", b"value"), ("/health", b""), ("/internal/v1/put", b"m"),
                    ("/lock/v1/sessions/7/watches", watch)]
    assert denials == ["forbidden"]
    assert principals == ["alice", None, "peer", "alice"]  # /health is public: no one


def test_dot_segments_cannot_reach_another_route_than_the_one_checked():
    """The router and the classifier see the same path: `/kv/../admin/...` is the key
    `../admin/...` (checked as one), never the admin route (raw bytes on a socket, since
    HTTP clients would normalise the dots away)."""
    text = FILE + (f'[roles.all-keys]\nrules = [{{ kind = "kv", perms = ["write"] }}]\n'
                   f'[users.kim]\ntoken_sha256 = "{hash_token("kim-token")}"\n'
                   'roles = ["all-keys"]\n')
    seen: list[str] = []

    async def record(request: web.Request) -> web.Response:
        seen.append(request.match_info.route.resource.canonical)
        return web.json_response({})

    async def main() -> list[bytes]:
        app = web.Application(middlewares=[Guard(parse(text)).middleware])
        app.add_routes([web.route("*", r"/kv/{key:[\s\S]+}", record),
                        web.post("/admin/v1/leave", record)])
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port = runner.addresses[0][1]
        heads = []
        try:
            for path in ("/kv/../admin/v1/leave", "/kv/%2E%2E/admin/v1/leave",
                         "/admin/v1/../../kv/x", "/admin/v1/leave"):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n"
                             "Authorization: Bearer kim-token\r\nConnection: close\r\n\r\n"
                             .encode())
                heads.append((await reader.read()).split(b"\r\n", 1)[0])
                writer.close()
        finally:
            await runner.cleanup()
        return heads

    heads = asyncio.run(main())
    assert heads[:2] == [b"HTTP/1.1 200 OK"] * 2  # kim may write any key, dots included
    assert b"403" in heads[2] and b"403" in heads[3]  # admin paths are admin's
    assert seen == ["/kv/{key}", "/kv/{key}"]


def test_openapi_documents_the_bearer_scheme_and_the_refusals():
    from pathlib import Path

    import yaml

    doc = yaml.safe_load((Path(__file__).parents[2] / "docs" / "openapi.yaml").read_text())
    scheme = doc["components"]["securitySchemes"]["bearerAuth"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    assert {} in doc["security"] and {"bearerAuth": []} in doc["security"]
    codes = doc["components"]["schemas"]["Error"]["properties"]["error"]["enum"]
    assert {"unauthenticated", "forbidden"} <= set(codes)
    operations = 0
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method in ("get", "put", "post", "delete") and path != "/health":
                operations += 1
                assert {"401", "403"} <= set(op["responses"]), (method, path)
    assert operations > 20
