"""Tokens and ACLs on real node processes (kv serve --auth-file): Chubby §2.4's ACLs and
etcd's roles at the HTTP edge. One 3-node cluster with 3 lock voters and auth on proves
that denied requests get 401/403 and change nothing, that prefix rules hold for keys and
lock names, that peers need the peer token, and that the cluster still replicates and
runs the lock service (Raft and lock forwarding carry the peer token).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from kvstore.auth import hash_token
from tests.cluster import Cluster, NodeProcess, free_ports, wait_for

PEER = "peer-token-for-tests-0123456789"
TOKENS = {"rita": "reader-token", "alice": "app-token", "lou": "lock-token",
          "root": "admin-token", "lea": "second-lock-token"}
AUTH = f"""
[peer]
token = "{PEER}"

[roles.reader]
rules = [{{ kind = "kv", prefix = "", perms = ["read"] }}]
[roles.app-writer]
rules = [{{ kind = "kv", prefix = "app/", perms = ["read", "write"] }}]
[roles.lock-user]
rules = [{{ kind = "lock", prefix = "jobs/", perms = ["read", "write"] }}]
[roles.admin]
rules = [{{ kind = "*", perms = ["admin"] }}]
""" + "".join(f'[users.{name}]\ntoken_sha256 = "{hash_token(token)}"\nroles = ["{role}"]\n'
              for (name, token), role in zip(TOKENS.items(),
                                             ("reader", "app-writer", "lock-user", "admin",
                                              "lock-user"),
                                             strict=True))


def bearer(who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[who]}"}


class AuthCluster(Cluster):
    """The test cluster's own requests (waiting, internal reads) carry the peer token
    unless a test gives an Authorization header of its own (or {"Authorization": ""}:
    none at all)."""

    def http(self, node, method, path, body=None, headers=None, *args, **kwargs):
        headers = dict(headers or {})
        headers.setdefault("Authorization", f"Bearer {PEER}")
        if not headers["Authorization"]:
            del headers["Authorization"]
        return super().http(node, method, path, body, headers, *args, **kwargs)


NONE = {"Authorization": ""}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("auth")
    (root / "auth.toml").write_text(AUTH)
    with AuthCluster(root / "c", size=3, extra_args=["--auth-file", str(root / "auth.toml")],
                     lock_voters=3) as c:
        yield c


def error(answer) -> tuple[int, str]:
    status, _headers, body = answer
    return status, json.loads(body)["error"]


def test_reader_reads_but_its_write_is_403_and_changes_nothing(cluster):
    node = cluster.names[0]
    assert cluster.http(node, "PUT", "/kv/app/r", b"before", bearer("alice"))[0] == 204
    assert cluster.http(node, "GET", "/kv/app/r", None, bearer("rita"))[::2] == (200, b"before")
    answer = cluster.http(node, "PUT", "/kv/app/r", b"after", bearer("rita"))
    assert error(answer) == (403, "forbidden")
    assert "rita" in json.loads(answer[2])["message"]
    assert error(cluster.http(node, "DELETE", "/kv/app/r", None, bearer("rita"))) == (
        403, "forbidden")
    for name in cluster.names:
        assert cluster.http(name, "GET", "/kv/app/r", None, bearer("root"))[::2] == (
            200, b"before")


def test_prefix_writer_writes_inside_its_prefix_only(cluster):
    node = cluster.names[1]
    assert cluster.http(node, "PUT", "/kv/app/x", b"1", bearer("alice"))[0] == 204
    assert error(cluster.http(node, "PUT", "/kv/other/x", b"1", bearer("alice"))) == (
        403, "forbidden")
    assert error(cluster.http(node, "GET", "/kv/other/x", None, bearer("alice"))) == (
        403, "forbidden")
    assert cluster.http(node, "GET", "/kv/other/x", None, bearer("root"))[0] == 404


@pytest.mark.parametrize(("headers", "why"), [
    (NONE, "no token"),
    ({"Authorization": "Bearer not-a-known-token"}, "unknown token"),
    ({"Authorization": "Basic cml0YTpyZWFkZXItdG9rZW4="}, "not Bearer"),
    ({"Authorization": "Bearer " + "x" * 6000}, "a huge token"),
    ({"Authorization": "Bearer reader-token extra"}, "two words"),
])
def test_missing_unknown_or_malformed_tokens_get_401(cluster, headers, why):
    node = cluster.names[0]
    for method, body in (("PUT", b"v"), ("GET", None)):
        answer = cluster.http(node, method, "/kv/app/unauth", body, headers)
        assert error(answer) == (401, "unauthenticated"), why
        assert answer[1].get("WWW-Authenticate") == 'Bearer realm="ringlock"'
    assert cluster.http(node, "GET", "/kv/app/unauth", None, bearer("root"))[0] == 404


def test_a_header_too_large_for_the_server_is_refused_and_the_node_lives(cluster):
    node = cluster.names[2]
    answer = cluster.http(node, "PUT", "/kv/app/big", b"v",
                          {"Authorization": "Bearer " + "y" * 100_000})
    assert 400 <= answer[0] < 500 and answer[0] != 404
    assert cluster.http(node, "GET", "/kv/app/big", None, bearer("root"))[0] == 404
    assert cluster.http(node, "GET", "/health", None, NONE)[0] == 200  # public by default


def test_admin_routes_need_admin(cluster):
    node = cluster.names[0]
    for path in ("/ring", "/admin/v1/members", "/metrics"):
        assert error(cluster.http(node, "GET", path, None, bearer("alice"))) == (
            403, "forbidden"), path
        assert cluster.http(node, "GET", path, None, bearer("root"))[0] == 200, path
    answer = cluster.http(node, "POST", "/admin/v1/leave", b"{}", bearer("rita"))
    assert error(answer) == (403, "forbidden")
    assert len(cluster.json(node, "GET", "/ring")[1]["members"]) == 3  # nobody left


def test_peer_routes_need_the_peer_token(cluster):
    node = cluster.names[0]
    status_op = "/internal/v1/status"
    assert error(cluster.http(node, "POST", status_op, b"\x80", NONE)) == (
        401, "unauthenticated")
    assert error(cluster.http(node, "POST", status_op, b"\x80", bearer("root"))) == (
        403, "forbidden")
    assert error(cluster.http(node, "POST", "/raft/messages", b"", bearer("root"))) == (
        403, "forbidden")
    assert cluster.internal(node, "status")[0] == 200  # the peer token


def test_lock_names_follow_the_lock_prefix(cluster):
    node = cluster.names[1]
    lou = {**bearer("lou"), "Content-Type": "application/json"}
    status, _h, body = cluster.http(node, "POST", "/lock/v1/sessions",
                                    json.dumps({"ttl_ms": 10_000}).encode(), lou)
    assert status == 201, body
    session = json.loads(body)["session"]
    grant = json.dumps({"session": session}).encode()
    assert cluster.http(node, "POST", "/lock/v1/locks/jobs/a/acquire", grant, lou)[0] == 200
    assert error(cluster.http(node, "POST", "/lock/v1/locks/other/a/acquire", grant, lou)) \
        == (403, "forbidden")
    status, _h, body = cluster.http(node, "GET", "/lock/v1/locks/other/a", None,
                                    bearer("root"))
    assert status == 200 and json.loads(body)["holders"] == []  # still free
    status, _h, body = cluster.http(node, "GET", "/lock/v1/locks/jobs/a", None, lou)
    assert status == 200 and [h["session"] for h in json.loads(body)["holders"]] == [session]
    # a reader of the store has no lock-service rights at all
    assert error(cluster.http(node, "POST", "/lock/v1/sessions", b'{"ttl_ms": 10000}',
                              {**bearer("rita"), "Content-Type": "application/json"})) == (
        403, "forbidden")


def test_a_session_is_used_only_by_the_principal_that_opened_it(cluster):
    """Chubby §2.4 with sessions: session ids are small numbers, so knowing one must not let
    another principal (even one with the same lock rights) keep it alive, close it, or hold
    and release locks through it. Through every member (relayed ones are checked on the
    leader by the client id the relaying member names)."""
    lou = {**bearer("lou"), "Content-Type": "application/json"}
    lea = {**bearer("lea"), "Content-Type": "application/json"}
    first = cluster.names[0]
    status, _h, body = cluster.http(first, "POST", "/lock/v1/sessions",
                                    json.dumps({"ttl_ms": 10_000}).encode(), lou)
    assert status == 201, body
    session = json.loads(body)["session"]
    grant = json.dumps({"session": session}).encode()
    assert cluster.http(first, "POST", "/lock/v1/locks/jobs/owned/acquire", grant, lou)[0] == 200
    for node in cluster.names:
        for method, path, payload in [
                ("POST", f"/lock/v1/sessions/{session}/keepalive", b"{}"),
                ("DELETE", f"/lock/v1/sessions/{session}", b""),
                ("POST", "/lock/v1/locks/jobs/owned/release", grant),
                ("POST", "/lock/v1/locks/jobs/other/acquire", grant),
                ("PUT", "/lock/v1/entries/jobs/e", json.dumps(
                    {"value": "", "ephemeral_session": session}).encode()),
                ("POST", f"/lock/v1/sessions/{session}/watches",
                 json.dumps({"prefix": "jobs/"}).encode())]:
            answer = cluster.http(node, method, path, payload or None, lea)
            assert error(answer) == (403, "forbidden"), (node, method, path, answer)
    status, _h, body = cluster.http(first, "GET", "/lock/v1/locks/jobs/owned", None, lou)
    assert status == 200 and [h["session"] for h in json.loads(body)["holders"]] == [session]
    assert cluster.http(first, "GET", "/lock/v1/locks/jobs/other", None, lou)[0] == 200
    status, _h, body = cluster.http(first, "GET", "/lock/v1/entries/jobs/e", None,
                                    {**bearer("root")})
    assert status == 404, body
    # its owner still uses it, through every member
    for node in cluster.names:
        assert cluster.http(node, "POST", "/lock/v1/locks/jobs/mine/acquire", grant,
                            lou)[0] == 200, node
        assert cluster.http(node, "POST", "/lock/v1/locks/jobs/mine/release", grant,
                            lou)[0] == 204, node
    assert cluster.http(first, "DELETE", f"/lock/v1/sessions/{session}", None, lou)[0] == 204


def test_the_cluster_replicates_and_forwards_lock_requests_with_auth_on(cluster):
    first = cluster.names[0]
    assert cluster.http(first, "PUT", "/kv/app/replicated", b"r", bearer("alice"))[0] == 204
    for owner in cluster.preference_list(b"app/replicated"):
        wait_for(lambda o=owner: cluster.copy_on(o, b"app/replicated").values == [b"r"],
                 what=f"the write on {owner}")

    def leader() -> int | None:
        status, body = cluster.json(first, "GET", "/lock/v1/leader", None, bearer("lou"))
        return body.get("leader") if status == 200 else None

    wait_for(lambda: leader() is not None, what="a lock-service leader")
    leader_id = leader()
    followers = [name for i, name in cluster.lock_peers.items() if i != leader_id]
    lou = {**bearer("lou"), "Content-Type": "application/json"}
    for follower in followers:  # each write is forwarded to the leader, peer token attached
        status, _h, body = cluster.http(follower, "POST", "/lock/v1/sessions",
                                        b'{"ttl_ms": 10000}', lou)
        assert status == 201, body


def test_denials_are_counted_in_metrics(cluster):
    node = cluster.names[2]
    cluster.http(node, "PUT", "/kv/other/m", b"v", bearer("alice"))
    cluster.http(node, "GET", "/kv/other/m", None, NONE)
    text = cluster.http(node, "GET", "/metrics", None, bearer("root"))[2].decode()
    counts = {line.split("{")[1].split("}")[0]: float(line.rsplit(" ", 1)[1])
              for line in text.splitlines() if line.startswith("ringlock_auth_denied_total")}
    assert counts['reason="forbidden"'] >= 1 and counts['reason="missing_token"'] >= 1


def test_sighup_reloads_the_file_and_keeps_old_rules_when_bad(cluster):
    node = cluster.nodes[0]
    path = cluster.root.parent / "auth.toml"
    path.write_text(AUTH + f'[users.newbie]\ntoken_sha256 = "{hash_token("new-token")}"\n'
                    'roles = ["reader"]\n')
    node.proc.send_signal(signal.SIGHUP)
    new = {"Authorization": "Bearer new-token"}
    wait_for(lambda: cluster.http(node.name, "GET", "/kv/app/x", None, new)[0] == 200,
             what="the reloaded file")
    path.write_text("[users.broken\n")
    node.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "auth file not reloaded" in node.output(), what="the refused reload")
    assert cluster.http(node.name, "GET", "/kv/app/x", None, new)[0] == 200
    path.write_text(AUTH)


@pytest.mark.parametrize(("text", "expected"), [  # every kind of damage: test_auth.py
    ("[users.x]\ntoken = 'plain'\n", "users.x.token (line 2)"),
    (None, "cannot read auth file"),
])
def test_a_bad_auth_file_stops_the_node_with_a_clear_message(tmp_path, text, expected):
    path = tmp_path / "auth.toml"
    if text is not None:
        path.write_text(text)
    node = NodeProcess(f"127.0.0.1:{free_ports(1)[0]}", tmp_path, ["--auth-file", str(path)])
    node.start()
    try:
        assert node.proc.wait(60) != 0
    except subprocess.TimeoutExpired:
        node.kill()
        raise
    output = node.output()
    assert expected in output and "Traceback" not in output, output
    assert "ready" not in output


def test_clients_send_their_token_and_raise_typed_errors(cluster):
    from kvstore.client import Client
    from kvstore.errors import Forbidden, Unauthenticated

    with Client(cluster.names, token=TOKENS["alice"]) as alice:
        alice.put(b"app/client", b"v")
        assert alice.get(b"app/client").value == b"v"
        with pytest.raises(Forbidden, match="alice"):
            alice.put(b"other/client", b"v")
    with Client(cluster.names) as anonymous, pytest.raises(Unauthenticated):
        anonymous.get(b"app/client")
    with Client(cluster.names, token=TOKENS["rita"]) as rita:
        with pytest.raises(Forbidden):
            rita.delete(b"app/client")
        assert rita.get(b"app/client").value == b"v"
    assert cluster.http(cluster.names[0], "GET", "/kv/other/client", None,
                        bearer("root"))[0] == 404


def test_lock_client_sends_its_token(cluster):
    from lockservice.client import LockClient
    from lockservice.client_errors import AccessDenied

    members = list(cluster.lock_peers.values())
    with LockClient(members, token=TOKENS["lou"]) as lou:
        held = lou.try_acquire("jobs/client")
        assert held is not None
        with pytest.raises(AccessDenied) as denied:
            lou.try_acquire("other/client")
        assert denied.value.status == 403
        assert lou.lock_status("jobs/client")["holders"]
        lou.release(held)
    with pytest.raises(AccessDenied) as denied:
        LockClient(members)  # no token: the session is not opened
    assert denied.value.status == 401
    status, _h, body = cluster.http(cluster.names[0], "GET", "/lock/v1/locks/other/client",
                                    None, bearer("root"))
    assert status == 200 and json.loads(body)["holders"] == []


def kv(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kvstore.cli", *args], capture_output=True,
                          text=True, timeout=60,
                          env={**{k: v for k, v in os.environ.items()
                                  if k != "RINGLOCK_TOKEN"}, **(env or {})})


def test_kv_cli_takes_a_token_and_reports_refusals(cluster):
    node = cluster.names[0]
    done = kv("--token", TOKENS["alice"], "put", "--node", node, "app/cli", "hello")
    assert done.returncode == 0, done.stderr
    done = kv("get", "--node", node, "app/cli", env={"RINGLOCK_TOKEN": TOKENS["rita"]})
    assert (done.returncode, done.stdout.strip()) == (0, "hello"), done.stderr
    done = kv("--token", TOKENS["rita"], "put", "--node", node, "app/cli", "changed")
    assert done.returncode == 1 and "forbidden" in done.stderr and "rita" in done.stderr
    done = kv("get", "--node", node, "app/cli")
    assert done.returncode == 1 and "not authenticated" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert cluster.http(node, "GET", "/kv/app/cli", None, bearer("root"))[2] == b"hello"


class RootCluster(AuthCluster):
    """Its own requests carry the admin user's token (the file has no peer token)."""

    def http(self, node, method, path, body=None, headers=None, *args, **kwargs):
        headers = {"Authorization": f"Bearer {TOKENS['root']}", **(headers or {})}
        return super().http(node, method, path, body, headers, *args, **kwargs)


def test_with_tls_node_certificates_authenticate_peers_without_a_peer_token(tmp_path):
    no_peer = AUTH.replace(f'[peer]\ntoken = "{PEER}"\n', "")
    assert "[peer]" not in no_peer
    (tmp_path / "auth.toml").write_text(no_peer)
    with RootCluster(tmp_path / "c", size=2, tls=True,
                     extra_args=["--auth-file", str(tmp_path / "auth.toml")]) as c:
        # it formed: the join and gossip went over TLS with node certificates only
        first, second = c.names
        assert c.http(first, "PUT", "/kv/app/tls", b"t", bearer("alice"))[0] == 204
        assert c.http(second, "GET", "/kv/app/tls", None, bearer("rita"))[::2] == (200, b"t")
        assert error(c.http(second, "PUT", "/kv/app/tls", b"u", NONE)) == (
            401, "unauthenticated")
        assert c.internal(first, "status")[0] == 200  # the harness shows a node certificate


def test_kv_lock_takes_the_token_too(cluster):
    members = ",".join(cluster.lock_peers.values())
    done = kv("--token", TOKENS["lou"], "lock", "run", "--members", members, "jobs/cli",
              "--", sys.executable, "-c", "print('held')")
    assert done.returncode == 0 and "held" in done.stdout, done.stderr
    done = kv("lock", "run", "--members", members, "other/cli", "--", sys.executable, "-c",
              "print('held')", env={"RINGLOCK_TOKEN": TOKENS["lou"]})
    assert done.returncode != 0 and "held" not in done.stdout
    assert "forbidden" in done.stderr and "Traceback" not in done.stderr, done.stderr
