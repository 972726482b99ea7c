"""The public HTTP API on a real 3-node cluster (kv serve processes), raw HTTP requests.

Dynamo §4.4 / §6: concurrent writes come back as siblings (Riak's 300 Multiple Choices,
one part each); a context-carrying write resolves them. DESIGN "Promises": bad input gets
a clear 4xx JSON error and changes nothing, so every hostile request below is followed by
a read proving the victim key is as it was.
"""

from __future__ import annotations

import json

import pytest

from kvstore.http_codec import decode_multipart, quote_key
from lockservice.sequencer import LockMode, Sequencer
from tests.kvstore.api_cluster import error_of, request, running_cluster

CTX = "x-ringlock-context"
VICTIM, VICTIM_VALUE = "/kv/victim", b"original \x00\xff value"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    with running_cluster(tmp_path_factory.mktemp("http") / "c", nodes=3) as c:
        assert request(c.names[0], "PUT", VICTIM, VICTIM_VALUE)[0] == 204
        yield c


@pytest.fixture
def node(cluster) -> str:
    return cluster.names[0]


def victim_unchanged(cluster) -> None:
    for name in cluster.names:
        status, _h, body = request(name, "GET", VICTIM)
        assert (status, body) == (200, VICTIM_VALUE)


def test_put_then_get_through_another_node(cluster) -> None:
    a, b = cluster.names[0], cluster.names[2]
    status, headers, _ = request(a, "PUT", "/kv/greeting", b"hello")
    assert status == 204 and headers[CTX]
    status, headers, body = request(b, "GET", "/kv/greeting")
    assert (status, body) == (200, b"hello")
    assert headers["content-type"] == "application/octet-stream" and headers[CTX]
    status, headers, body = request(b, "HEAD", "/kv/greeting")
    assert status == 200 and body == b""


def test_every_byte_value_in_keys_and_values_round_trips(cluster, node) -> None:
    every = bytes(range(256))
    for key in (every, b".", b"..", b"a/../b", b"%zz", b"\n", every[::-1]):
        path = "/kv/" + quote_key(key)
        assert request(node, "PUT", path, every + key)[0] == 204
        assert request(cluster.names[1], "GET", path)[2] == every + key
    # A raw '/' is part of the key: /kv/users/1 and /kv/users%2F1 name one key.
    assert request(node, "PUT", "/kv/users/1", b"ada")[0] == 204
    assert request(node, "GET", "/kv/users%2F1")[2] == b"ada"


def test_concurrent_writes_come_back_as_300_with_every_sibling(cluster, node) -> None:
    path = "/kv/colour"
    assert request(node, "PUT", path, b"base")[0] == 204
    seen = request(node, "GET", path)[1][CTX]
    tricky = [b"red", b"--\r\n--boundary\r\n\r\n", bytes(range(256))]
    for i, value in enumerate(tricky):
        status, _h, _b = request(cluster.names[i], "PUT", path, value, {"X-Ringlock-Context": seen})
        assert status == 204
    status, headers, body = request(cluster.names[1], "GET", path)
    assert status == 300 and headers[CTX]
    assert sorted(decode_multipart(headers["content-type"], body)) == sorted(tricky)
    doc = json.loads(request(node, "GET", path, headers={"Accept": "application/json"})[2])
    assert len(doc["values"]) == 3 and doc["deleted"] is False
    # A write carrying the context of that read replaces every sibling it saw.
    status, _h, _b = request(node, "PUT", path, b"resolved", {"X-Ringlock-Context": headers[CTX]})
    assert status == 204
    assert request(cluster.names[2], "GET", path)[:3:2] == (200, b"resolved")


def test_delete_answers_404_with_the_tombstone_context(cluster, node) -> None:
    assert request(node, "PUT", "/kv/doomed", b"x")[0] == 204
    # Without the context of a read, a delete is concurrent with the value: both stay.
    assert request(node, "DELETE", "/kv/doomed")[0] == 204
    assert request(node, "GET", "/kv/doomed")[:3:2] == (200, b"x")
    seen = request(node, "GET", "/kv/doomed")[1][CTX]
    assert request(node, "DELETE", "/kv/doomed", headers={"X-Ringlock-Context": seen})[0] == 204
    answer = request(cluster.names[1], "GET", "/kv/doomed")
    assert answer[0] == 404 and answer[1][CTX]
    assert error_of(answer) == {"error": "not_found", "message": "the key was deleted",
                                "deleted": True}
    status, _h, body = request(node, "GET", "/kv/doomed", headers={"Accept": "application/json"})
    assert status == 404 and json.loads(body)["deleted"] is True
    missing = request(node, "GET", "/kv/never-written")
    assert missing[0] == 404 and CTX not in missing[1] and not error_of(missing)["deleted"]


def test_health_ring_and_status(cluster, node) -> None:
    status, _h, body = request(node, "GET", "/health")
    assert status == 200 and json.loads(body) == {"status": "ok", "node": node}
    ring = json.loads(request(node, "GET", "/ring")[2])
    assert {m["name"] for m in ring["members"]} == set(cluster.names)
    assert all(m["alive"] for m in ring["members"])
    assert len(ring["owners"]) == ring["ring_size"] and set(ring["owners"]) == set(cluster.names)
    assert sum(m["partitions"] for m in ring["members"]) == ring["ring_size"]
    doc = json.loads(request(node, "GET", "/status")[2])
    assert doc["node"] == node and doc["members"] == 3


BIG = 1 << 20


def _chunked(size: int):
    yield b"x" * (size // 2)
    yield b"x" * (size - size // 2)


HOSTILE = [
    # (method, path, body, headers, status, error code)
    ("PUT", "/kv/victim%zz", b"v", {}, 400, "invalid_request"),
    ("PUT", "/kv/victim%2", b"v", {}, 400, "invalid_request"),
    ("PUT", "/kv/", b"v", {}, 400, "invalid_request"),
    ("GET", "/kv", None, {}, 400, "invalid_request"),
    ("PUT", "/kv/" + "k" * 1025, b"v", {}, 400, "invalid_request"),
    ("PUT", VICTIM, b"x" * (BIG + 1), {}, 413, "too_large"),
    ("PUT", VICTIM, b"v", {"X-Ringlock-Context": "garbage!"}, 400, "invalid_context"),
    ("PUT", VICTIM, b"v", {"X-Ringlock-Context": "AZB"}, 400, "invalid_context"),
    ("PUT", VICTIM, b"v", {"X-Ringlock-Context": "AaNzdHI"}, 400, "invalid_context"),
    ("PUT", VICTIM, b"v", {"X-Ringlock-Context": "A" * 7000}, 400, "invalid_context"),
    ("DELETE", VICTIM, None, {"X-Ringlock-Context": "%%%"}, 400, "invalid_context"),
    ("PUT", VICTIM + "?w=0", b"v", {}, 400, "invalid_request"),
    ("PUT", VICTIM + "?w=abc", b"v", {}, 400, "invalid_request"),
    ("PUT", VICTIM + "?w=4", b"v", {}, 400, "invalid_request"),  # more than N=3
    ("PUT", VICTIM + "?w=2&w=2", b"v", {}, 400, "invalid_request"),
    ("PUT", VICTIM + "?timeout_ms=-5", b"v", {}, 400, "invalid_request"),
    ("PUT", VICTIM + "?r=2", b"v", {}, 400, "invalid_request"),
    ("PUT", VICTIM + "?verbose=1", b"v", {}, 400, "invalid_request"),
    ("GET", VICTIM + "?r=0", None, {}, 400, "invalid_request"),
    ("GET", VICTIM + "?r=9", None, {}, 400, "invalid_request"),
    ("GET", VICTIM + "?timeout_ms=1e3", None, {}, 400, "invalid_request"),
    ("DELETE", VICTIM, b"body", {}, 400, "invalid_request"),
    ("PUT", VICTIM, b"v", {"X-Ringlock-Sequencer": "not-a-token"}, 400, "invalid_request"),
    ("DELETE", VICTIM, None, {"X-Ringlock-Sequencer": ""}, 400, "invalid_request"),
    ("POST", VICTIM, b"v", {}, 405, "method_not_allowed"),
    ("PATCH", VICTIM, b"v", {}, 405, "method_not_allowed"),
    ("POST", "/health", b"", {}, 405, "method_not_allowed"),
    ("POST", "/ring", b"{}", {}, 405, "method_not_allowed"),
    ("DELETE", "/status", None, {}, 405, "method_not_allowed"),
    ("PUT", "/kv/" + "%41" * 1025, b"v", {}, 400, "invalid_request"),
    ("GET", "/nope", None, {}, 404, "not_found"),
    ("DELETE", "/kv-victim", None, {}, 404, "not_found"),
]


@pytest.mark.parametrize("method, path, body, headers, status, code", HOSTILE,
                         ids=[f"{h[0]} {h[1][:30]} {h[3]}"[:60] for h in HOSTILE])
def test_hostile_requests_get_a_json_4xx_and_change_nothing(
        cluster, node, method, path, body, headers, status, code) -> None:
    answer = request(node, method, path, body, headers)
    assert answer[0] == status, answer
    assert error_of(answer)["error"] == code
    victim_unchanged(cluster)
    for raw in ("victim%zz", "victim%2"):  # the lenient decoding of a malformed key
        assert request(node, "GET", "/kv/" + quote_key(raw.encode()))[0] == 404


def test_lines_past_the_http_parser_limit_are_refused_before_the_api(cluster, node) -> None:
    """A request line or header over 8190 bytes never reaches the API: aiohttp's parser
    answers 400 with a plain-text message (documented in docs/openapi.yaml)."""
    for path, headers in (("/kv/" + "k" * 9000, {}), (VICTIM, {"X-Big": "a" * 9000})):
        status, _h, body = request(node, "PUT", path, b"v", headers)
        assert status == 400 and b"8190 bytes" in body
    victim_unchanged(cluster)


def test_head_of_a_missing_key_is_404_without_body(cluster, node) -> None:
    assert request(node, "HEAD", "/kv/never-written")[:3:2] == (404, b"")


def test_oversized_chunked_body_is_refused_without_writing(cluster, node) -> None:
    answer = request(node, "PUT", VICTIM, _chunked(BIG + 10))  # no Content-Length
    assert answer[0] == 413 and error_of(answer)["limit"] == BIG
    victim_unchanged(cluster)


def test_limits_themselves_are_accepted(cluster, node) -> None:
    key = "/kv/" + "k" * 1024
    assert request(node, "PUT", key, b"x" * BIG)[0] == 204
    assert request(node, "GET", key)[2] == b"x" * BIG
    assert request(node, "PUT", "/kv/empty-value", b"")[0] == 204
    assert request(node, "GET", "/kv/empty-value")[:3:2] == (200, b"")


def test_a_sequencer_on_a_cluster_without_lock_service_is_refused(cluster, node) -> None:
    token = Sequencer("jobs", LockMode.EXCLUSIVE, 3, 7).to_token()
    answer = request(node, "PUT", VICTIM, b"fenced", {"X-Ringlock-Sequencer": token})
    assert answer[0] == 400 and "no lock service" in error_of(answer)["message"]
    victim_unchanged(cluster)


def test_a_write_is_applied_after_all_that(cluster, node) -> None:
    """The hostile requests did not wedge the node: ordinary traffic still works."""
    _status, headers, _ = request(node, "GET", VICTIM)
    assert request(node, "PUT", VICTIM, b"new", {"X-Ringlock-Context": headers[CTX]})[0] == 204
    assert request(cluster.names[2], "GET", VICTIM)[2] == b"new"
