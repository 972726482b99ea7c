"""Hostile input on every /lock/v1/ endpoint: a clear 4xx JSON error, and nothing changed.

Malformed requests propose nothing: the leader's last log index and the table's counts are
the same before and after the whole batch (no lease ends and no lock-delay runs in this
module, so the leader has no reason of its own to propose). Well-formed requests that the
state machine refuses leave the table as it was.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lockservice.sequencer import LockMode, Sequencer
from lockservice.server import LockServer
from tests.lockservice.cluster import REPO, LockCluster, running_cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LockCluster]:
    root: Path = tmp_path_factory.mktemp("locks")
    with running_cluster(root) as c:
        yield c


@pytest.fixture(scope="module")
def state(cluster: LockCluster) -> dict[str, Any]:
    """A session holding lock `held`, and an entry `e` at a known version."""
    sid = cluster.open_session(600_000)
    code, got = cluster.acquire(sid, "held", lock_delay_ms=0)
    assert code == 200
    _, put = cluster.request("PUT", "/lock/v1/entries/e",
                             {"value": base64.b64encode(b"v").decode()}, ok=(200,))
    return {"session": sid, "sequencer": got["sequencer"], "version": put["version"]}


def _hostile(s: dict[str, Any]) -> list[tuple[str, str, Any, int, str]]:
    sid = s["session"]
    big = b'{"ttl_ms": 1000, "pad": "' + b"x" * 70_000 + b'"}'
    long_name = "n" * 257
    stranger = Sequencer("held", LockMode.EXCLUSIVE, 1, sid).to_token()
    return [
        # (method, path, body (bytes = raw), expected status, expected error code)
        ("POST", "/lock/v1/sessions", b"{not json", 400, "bad_request"),
        ("POST", "/lock/v1/sessions", b"[1, 2]", 400, "bad_request"),
        ("POST", "/lock/v1/sessions", b"\xff\xfe", 400, "bad_request"),
        ("POST", "/lock/v1/sessions", b"[" * 100_000, 413, "too_large"),
        ("POST", "/lock/v1/sessions", b"[" * 5_000 + b"]" * 5_000, 400, "bad_request"),
        ("POST", "/lock/v1/sessions", big, 413, "too_large"),
        ("POST", "/lock/v1/sessions", {}, 400, "bad_request"),
        ("POST", "/lock/v1/sessions", {"ttl_ms": "1000"}, 400, "bad_request"),
        ("POST", "/lock/v1/sessions", {"ttl_ms": True}, 400, "bad_request"),
        ("POST", "/lock/v1/sessions", {"ttl_ms": 1000.5}, 400, "bad_request"),
        ("POST", "/lock/v1/sessions", {"ttl_ms": -1}, 400, "bad_request"),
        ("POST", "/lock/v1/sessions", {"ttl_ms": 0}, 400, "bad_request"),
        ("POST", "/lock/v1/sessions", {"ttl_ms": 2**64}, 400, "bad_request"),
        ("POST", "/lock/v1/sessions", {"ttl_ms": 1000, "x": 1}, 400, "bad_request"),
        ("POST", "/lock/v1/sessions/abc/keepalive", {}, 400, "bad_request"),
        ("POST", "/lock/v1/sessions/0/keepalive", {}, 400, "bad_request"),
        ("POST", "/lock/v1/sessions/-1/keepalive", {}, 400, "bad_request"),
        ("POST", "/lock/v1/sessions/99999999999999999999/keepalive", {}, 400, "bad_request"),
        ("POST", f"/lock/v1/sessions/{sid}/keepalive", {"ack": "1"}, 400, "bad_request"),
        ("POST", f"/lock/v1/sessions/{sid}/keepalive", {"ack": -1}, 400, "bad_request"),
        ("POST", "/lock/v1/sessions/123456/keepalive", {}, 404, "unknown_session"),
        ("DELETE", "/lock/v1/sessions/x1", None, 400, "bad_request"),
        ("DELETE", "/lock/v1/sessions/123456", None, 404, "unknown_session"),
        ("POST", "/lock/v1/locks/a/acquire", {}, 400, "bad_request"),
        ("POST", "/lock/v1/locks/a/acquire", {"session": str(sid)}, 400, "bad_request"),
        ("POST", "/lock/v1/locks/a/acquire", {"session": sid, "mode": "both"}, 400,
         "bad_request"),
        ("POST", "/lock/v1/locks/a/acquire", {"session": sid, "wait_ms": -5}, 400,
         "bad_request"),
        ("POST", "/lock/v1/locks/a/acquire", {"session": sid, "wait_ms": 10**12}, 400,
         "bad_request"),
        ("POST", "/lock/v1/locks/a/acquire", {"session": sid, "lock_delay_ms": 10**9}, 400,
         "bad_request"),
        ("POST", "/lock/v1/locks/a/acquire", {"session": sid, "sessionx": 1}, 400,
         "bad_request"),
        ("POST", f"/lock/v1/locks/{long_name}/acquire", {"session": sid}, 400, "bad_request"),
        ("POST", "/lock/v1/locks/a%00b/acquire", {"session": sid}, 400, "bad_request"),
        ("POST", "/lock/v1/locks/a/acquire", {"session": 123456}, 404, "unknown_session"),
        ("POST", "/lock/v1/locks/a/release", {"session": sid}, 409, "not_holder"),
        ("POST", "/lock/v1/locks/a/release", {"session": None}, 400, "bad_request"),
        ("GET", "/lock/v1/locks/held?stale=maybe", None, 400, "bad_request"),
        ("GET", "/lock/v1/locks/held?consistency=weak", None, 400, "bad_request"),
        ("POST", "/lock/v1/sequencers/check", {"sequencer": "!!"}, 400, "bad_sequencer"),
        ("POST", "/lock/v1/sequencers/check", {"sequencer": "x" * 2000}, 400, "bad_sequencer"),
        ("POST", "/lock/v1/sequencers/check", {"sequencer": stranger + "A"}, 400,
         "bad_sequencer"),
        ("POST", "/lock/v1/sequencers/check", {"sequencer": 5}, 400, "bad_request"),
        ("POST", "/lock/v1/sequencers/check", {}, 400, "bad_request"),
        ("PUT", "/lock/v1/entries/e", {"value": "not base64!"}, 400, "bad_request"),
        ("PUT", "/lock/v1/entries/e", {"value": 5}, 400, "bad_request"),
        ("PUT", "/lock/v1/entries/e", {"value": base64.b64encode(b"x" * 17_000).decode()},
         413, "bad_request"),
        ("PUT", "/lock/v1/entries/e", {"value": "", "expected_version": "1"}, 400,
         "bad_request"),
        ("PUT", "/lock/v1/entries/e", {"value": "", "ephemeral_session": 123456}, 404,
         "unknown_session"),
        ("GET", "/lock/v1/entries/missing", None, 404, "not_found"),
        ("DELETE", "/lock/v1/entries/e?expected_version=abc", None, 400, "bad_request"),
        ("DELETE", "/lock/v1/entries/missing", None, 404, "not_found"),
        ("POST", f"/lock/v1/sessions/{sid}/watches", {"prefix": 7}, 400, "bad_request"),
        ("POST", f"/lock/v1/sessions/{sid}/watches", {"prefix": "a\x00"}, 400, "bad_request"),
        ("POST", f"/lock/v1/sessions/{sid}/watches", {"prefix": "p" * 300}, 400,
         "bad_request"),
        ("POST", "/lock/v1/sessions/123456/watches", {"prefix": "a"}, 404, "unknown_session"),
        ("GET", "/lock/v1/nothing/here", None, 404, "no_such_endpoint"),
        ("PUT", "/lock/v1/sessions", {"ttl_ms": 1000}, 404, "no_such_endpoint"),
        ("POST", "/lock/v1/locks/a%2Facquire", {"session": sid}, 404, "no_such_endpoint"),
    ]


def _refused(s: dict[str, Any]) -> list[tuple[str, str, Any, int, str]]:
    """Well-formed requests the state machine itself refuses (a log entry, no change)."""
    sid = s["session"]
    return [
        ("POST", "/lock/v1/locks/held/acquire", {"session": sid, "mode": "shared"}, 409,
         "already_holder"),
        ("PUT", "/lock/v1/entries/e", {"value": "", "expected_version": s["version"] + 99},
         409, "version_mismatch"),
        ("PUT", "/lock/v1/entries/e", {"value": "", "expected_version": 0}, 409,
         "version_mismatch"),
        ("DELETE", f"/lock/v1/entries/e?expected_version={s['version'] + 1}", None, 409,
         "version_mismatch"),
    ]


def _send(cluster: LockCluster, member: int, method: str, path: str,
          body: Any) -> tuple[int, Any]:
    raw = body if isinstance(body, bytes) else None
    return cluster.try_call(member, method, path, None if raw is not None else body, raw=raw,
                            headers={"Content-Type": "application/json"})


def _fingerprint(cluster: LockCluster) -> tuple[Any, ...]:
    st = cluster.status(cluster.leader())
    assert st is not None
    return st["last_index"], st["sessions"], st["locks"], st["entries"], st["generation"]


def test_every_bad_request_gets_a_clear_error_and_changes_nothing(
        cluster: LockCluster, state: dict[str, Any]) -> None:
    before = _fingerprint(cluster)
    for member in [cluster.leader(), cluster.followers()[0]]:
        for method, path, body, status, code in _hostile(state):
            got, reply = _send(cluster, member, method, path, body)
            assert (got, reply["error"] if reply else None) == (status, code), (method, path)
            assert isinstance(reply["message"], str) and reply["message"]
    assert _fingerprint(cluster) == before
    for method, path, body, status, code in _refused(state):
        got, reply = _send(cluster, cluster.followers()[0], method, path, body)
        assert (got, reply["error"]) == (status, code), (method, path)
    assert _fingerprint(cluster)[1:] == before[1:]
    info = cluster.lock_info("held")
    assert [h["sequencer"] for h in info["holders"]] == [state["sequencer"]]
    _, entry = cluster.request("GET", "/lock/v1/entries/e", ok=(200,))
    assert entry == {"value": base64.b64encode(b"v").decode(), "version": state["version"]}


def test_a_forwarded_request_is_never_forwarded_again(cluster: LockCluster) -> None:
    follower = cluster.followers()[0]
    code, reply = cluster.try_call(follower, "POST", "/lock/v1/sessions", {"ttl_ms": 1000},
                                   headers={"X-Ringlock-Forwarded": "9"})
    assert (code, reply["error"], reply["leader"]) == (503, "no_leader", cluster.leader())


def test_sequencer_check_says_current_for_the_holder(cluster: LockCluster,
                                                     state: dict[str, Any]) -> None:
    for member in cluster.ids:
        code, reply = cluster.try_call(member, "POST", "/lock/v1/sequencers/check",
                                       {"sequencer": state["sequencer"]})
        assert (code, reply) == (200, {"current": True})
    seq = Sequencer.from_token(state["sequencer"])
    older = Sequencer(seq.name, seq.mode, seq.generation + 1, seq.session).to_token()
    _, reply = cluster.request("POST", "/lock/v1/sequencers/check", {"sequencer": older},
                               ok=(200,))
    assert reply == {"current": False}


def test_openapi_document_lists_exactly_the_served_routes(tmp_path: Path) -> None:
    """docs/openapi.yaml names every /lock/v1/ route and method the server has."""
    server = LockServer.open(node_id=1, addresses={1: "127.0.0.1:1"}, data_dir=str(tmp_path))
    try:
        routes = server.routes()
    finally:
        server.driver.storage.close()
    served = {(r.method.lower(), re.sub(r"\{(\w+):[^}]*\}", r"{\1}", r.path))
              for r in routes if r.path.startswith("/lock/v1/") and r.method != "*"}
    documented: set[tuple[str, str]] = set()
    path = None
    for line in (REPO / "docs" / "openapi.yaml").read_text().splitlines():
        if m := re.fullmatch(r"  (/lock/v1/\S+):", line):
            path = m.group(1)
        elif (m := re.fullmatch(r"    (get|post|put|delete):", line)) and path:
            documented.add((m.group(1), path))
        elif re.fullmatch(r"\S.*", line):
            path = None
    assert documented == served
