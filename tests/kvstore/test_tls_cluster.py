"""TLS for client and peer traffic on three real node processes (docs/tls.md, issue 9
"Security"): every node is a lock-service voter, so Raft, leader forwarding, replication,
gossip and joins all cross TLS. Clients (the store's sync and async clients, the lock
client, the `kv` command) work over HTTPS; a plain-HTTP request fails cleanly; peer routes
refuse a connection without a node certificate (401), with a client certificate (403) or
with a certificate of another CA (handshake refused), and a refused request changes
nothing.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest

from kvstore import certs, tls, vclock
from kvstore.cli import main as kv_main
from kvstore.client import AsyncClient, Client
from kvstore.config import NodeConfig
from kvstore.errors import NodeUnavailable
from kvstore.node import Node
from lockservice.client import LockClient
from tests.cluster import Cluster, wait_for

TIMEOUT = 30.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with Cluster(tmp_path_factory.mktemp("tls"), size=3, lock_voters=3, tls=True) as c:
        yield c


def files(cluster: Cluster, stem: str) -> dict[str, str]:
    d = cluster.tls_dir
    return {"tls_ca": str(d / "ca.crt"), "tls_cert": str(d / f"{stem}.crt"),
            "tls_key": str(d / f"{stem}.key")}


def request(node: str, context: ssl.SSLContext, method: str, path: str, body: bytes = b"",
            headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    host, port = node.rsplit(":", 1)
    conn = http.client.HTTPSConnection(host, int(port), timeout=TIMEOUT, context=context)
    try:
        conn.request(method, path, body=body or None, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def merge_body(key: bytes, value: bytes) -> bytes:
    state = vclock.update(vclock.SiblingSet(), vclock.VersionVector(), "127.0.0.1:1", value,
                          timestamp=1)
    return msgpack.packb({"key": key, "state": vclock.encode(state)})


def test_puts_and_gets_cross_the_tls_cluster(cluster) -> None:
    a, b, c = cluster.names
    with Client([a], **files(cluster, "client-test")) as one:
        one.put(b"greeting", b"hello over tls", w=3)  # replicated to all three over TLS
    with Client([f"https://{c}"], tls_ca=str(cluster.tls_dir / "ca.crt")) as other:
        assert other.get(b"greeting", r=3).value == b"hello over tls"

    async def through_async() -> bytes | None:
        async with AsyncClient([b], **files(cluster, "client-test")) as kv:
            await kv.put(b"async", b"also", w=3)
            return (await kv.get(b"async", r=3)).value
    assert asyncio.run(through_async()) == b"also"


def test_a_lock_is_acquired_over_tls_through_every_member(cluster) -> None:
    members = [f"https://{n}" for n in cluster.names]
    with LockClient(members, tls_ca=str(cluster.tls_dir / "ca.crt")) as locks:
        leader = locks.leader()["address"]
        follower = next(n for n in cluster.names if n != leader)
        with locks.lock("tls-lock") as held:
            assert held.generation >= 1
            assert locks.lock_status("tls-lock")["holders"]
    # a follower forwards to the leader over TLS (with its node certificate)
    with LockClient([f"https://{follower}"], **files(cluster, "client-test")) as locks:
        held = locks.acquire("tls-lock-2")
        assert locks.check_sequencer(held.token)
        locks.release(held)


def test_the_kv_command_talks_https_with_its_global_options(cluster, monkeypatch,
                                                           capfd) -> None:
    d, node = cluster.tls_dir, cluster.names[1]
    monkeypatch.setenv("KV_NODES", node)
    monkeypatch.setenv("RINGLOCK_CACERT", str(d / "ca.crt"))  # read when kv parses
    assert kv_main(["put", "cli-key", "cli-value"]) == 0
    monkeypatch.delenv("RINGLOCK_CACERT")
    capfd.readouterr()
    assert kv_main(["--cacert", str(d / "ca.crt"), "--cert", str(d / "client-test.crt"),
                    "--key", str(d / "client-test.key"), "get", "--node", cluster.names[2],
                    "cli-key"]) == 0
    assert capfd.readouterr().out.strip() == "cli-value"
    # the options' values are not taken for the command (kv finds `lock` after them)
    assert kv_main(["--cacert", str(d / "ca.crt"), "lock", "run", "cli-lock", "--members",
                    ",".join(cluster.names), "--", "echo", "held"]) == 0
    assert capfd.readouterr().out.strip() == "held"
    assert kv_main(["--cacert", str(d / "ca.crt"), "aae", "status", "--json"]) == 0
    assert json.loads(capfd.readouterr().out)["node"] == node
    # https:// without the cluster's CA: the system's CAs do not know it; one clear line
    assert kv_main(["get", "--node", f"https://{node}", "cli-key"]) == 1
    err = capfd.readouterr().err
    assert "CERTIFICATE_VERIFY_FAILED" in err and err.count("\n") == 1, err


def test_a_plain_http_request_to_a_tls_node_fails_cleanly(cluster) -> None:
    node = cluster.names[0]
    host, port = node.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=TIMEOUT)
    with pytest.raises((http.client.HTTPException, ConnectionError)):
        conn.request("GET", "/health")
        conn.getresponse().read()
    conn.close()
    with pytest.raises(NodeUnavailable):
        Client([node], timeout=5).get(b"greeting")  # a plain client: no answer, no hang
    status, _ = cluster.json(node, "GET", "/health")  # the node serves on
    assert status == 200


def test_garbage_and_stalled_handshakes_do_not_stop_a_tls_node(cluster) -> None:
    node = cluster.names[0]
    host, port = node.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=TIMEOUT) as junk:
        junk.sendall(b"\x16\x03\x01\x00\x05" + os.urandom(512))  # a broken ClientHello
        try:
            answer = junk.recv(4096)
        except ConnectionResetError:
            answer = b""
        assert answer == b"" or answer[0] == 0x15  # EOF or a TLS alert record, not a hang
    stalled = [socket.create_connection((host, int(port)), timeout=TIMEOUT) for _ in range(4)]
    try:  # connections that never finish their handshake hold up nobody
        assert cluster.json(node, "GET", "/health")[0] == 200
        with Client([node], **files(cluster, "client-test")) as kv:
            kv.put(b"during-stall", b"fine")
            assert kv.get(b"during-stall").value == b"fine"
    finally:
        for s in stalled:
            s.close()


def test_peer_routes_refuse_a_connection_without_a_node_certificate(cluster) -> None:
    node = cluster.names[0]
    ca = cluster.tls_dir / "ca.crt"
    body = merge_body(b"planted", b"by an outsider")
    anonymous = tls.client_context(ca)
    client_cert = tls.client_context(ca, *(cluster.tls_dir / f"client-test.{s}"
                                           for s in ("crt", "key")))
    for context, want in ((anonymous, 401), (client_cert, 403)):
        status, answer = request(node, context, "POST", "/internal/v1/merge", body,
                                 {"Content-Type": "application/x-msgpack"})
        assert status == want, answer
        assert b"node certificate" in answer
        status, _ = request(node, context, "POST", "/raft/messages", b"\x90",
                            {"Content-Type": "application/x-msgpack"})
        assert status == want
        status, _ = request(node, context, "POST", "/lock/v1/sessions", b"{}",
                            {"Content-Type": "application/json",
                             tls.FORWARDED_HEADER: "2"})
        assert status == want
        # the public API still answers these connections
        assert request(node, context, "GET", "/health")[0] == 200
    for n in cluster.names:  # nothing was planted anywhere
        assert not cluster.copy_on(n, b"planted").siblings
    # the same body from a node certificate is applied: the refusal was the guard's
    status, answer = cluster.internal(node, "merge", raw=body)
    assert status == 200, answer
    assert cluster.copy_on(node, b"planted").siblings


def test_a_certificate_of_another_ca_is_refused_at_the_handshake(cluster, tmp_path) -> None:
    node = cluster.names[0]
    rogue = certs.init(tmp_path / "rogue", [node])  # a node certificate, of the wrong CA
    crt, key = (p for p in rogue if p.name.startswith("node-"))
    context = tls.client_context(cluster.tls_dir / "ca.crt", crt, key)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        request(node, context, "POST", "/internal/v1/merge", merge_body(b"rogue", b"x"),
                {"Content-Type": "application/x-msgpack"})
    assert not cluster.copy_on(node, b"rogue").siblings
    # and a node that trusts only the rogue CA cannot verify the cluster's nodes
    with pytest.raises(NodeUnavailable, match=r"CERTIFICATE_VERIFY_FAILED"):
        Client([node], tls_ca=str(tmp_path / "rogue" / "ca.crt"), timeout=5).health()


def test_the_cluster_stays_converged_over_tls(cluster) -> None:
    """Gossip over TLS: every node sees every other alive (the guard let peers through)."""
    cluster.wait_converged()
    for node in cluster.names:
        status, info = cluster.json(node, "GET", "/admin/v1/members")
        assert status == 200 and set(info["members"]) == set(cluster.names)
    wait_for(lambda: all(m["alive"] for m in cluster.members_view(cluster.names[2])
                         ["members"].values()), what="every member alive")


def test_a_node_with_partial_tls_settings_is_a_usage_error(tmp_path, capsys) -> None:
    assert kv_main(["serve", "--name", "127.0.0.1:1", "--data", str(tmp_path / "d"),
                    "--tls-cert", "x.crt", "--tls-ca", "ca.crt"]) == 2
    assert "tls-cert, tls-key and tls-ca go together" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_a_node_with_a_missing_tls_file_exits_1_naming_it(tmp_path) -> None:
    run = subprocess.run([sys.executable, "-m", "kvstore.cli", "serve", "--name",
                          "127.0.0.1:1", "--data", str(tmp_path / "d"), "--tls-cert",
                          "missing.crt", "--tls-key", "missing.key", "--tls-ca", "missing.ca"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT)
    assert run.returncode == 1
    assert "certificate file missing.crt does not exist" in run.stderr, run.stderr
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "d").exists()  # stopped before opening anything


def test_a_node_refuses_a_key_that_is_not_its_certificates(tmp_path: Path) -> None:
    d = tmp_path / "c"
    certs.init(d, ["127.0.0.1:7001", "127.0.0.1:7002"])
    config = NodeConfig(name="127.0.0.1:7001", data=str(tmp_path / "d"),
                        tls_cert=d / "node-127.0.0.1-7001.crt",
                        tls_key=d / "node-127.0.0.1-7002.key", tls_ca=d / "ca.crt")
    with pytest.raises(tls.TLSError, match="cannot be used together"):
        Node(config)
    (d / "ca.crt").write_text("not a certificate")
    with pytest.raises(tls.TLSError, match=r"CA file .* is not PEM"):
        Node(NodeConfig(name="127.0.0.1:7001", data=str(tmp_path / "d"),
                        tls_cert=d / "node-127.0.0.1-7001.crt",
                        tls_key=d / "node-127.0.0.1-7001.key", tls_ca=d / "ca.crt"))


def test_a_node_certificate_is_rotated_by_restarting_that_node(cluster) -> None:
    """docs/tls.md "Rotating certificates": a new certificate from the same CA, one restart."""
    node = cluster[2]
    crt = cluster.tls_dir / f"{certs.node_stem(node.name)}.crt"
    before = crt.read_bytes()
    assert node.stop() == 0
    certs.issue_node(cluster.tls_dir, node.name, force=True)
    assert crt.read_bytes() != before
    node.start()
    node.wait_ready()
    cluster.wait_converged()
    with Client([node.name], **files(cluster, "client-test")) as kv:
        kv.put(b"after-rotation", b"still one cluster", w=3)
    with Client([cluster.names[0]], **files(cluster, "client-test")) as kv:
        assert kv.get(b"after-rotation", r=3).value == b"still one cluster"
