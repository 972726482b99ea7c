"""Dynamo's promises on three real node processes, through the public HTTP API:
§4.4 concurrent writes become siblings and a write with the merged context resolves them;
§5 read repair brings a stale replica up to date; §4.5 a write that cannot reach W says it
may still have been applied; and hostile bodies on /internal/v1/* get 400, change nothing.

With three nodes and N=3 every node is a primary of every key and no fallback exists, so
a stopped node's missed writes reach it only by read repair (no hint is held for it).
"""

from __future__ import annotations

import base64
import json

import msgpack
import pytest

from kvstore import vclock
from tests.cluster import Cluster, wait_for

JSON = {"Accept": "application/json"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with Cluster(tmp_path_factory.mktemp("dynamo"), size=3) as c:
        yield c


def get_json(cluster: Cluster, node: str, key: str, r: int = 2) -> tuple[int, dict]:
    status, _, body = cluster.http(node, "GET", f"/kv/{key}?r={r}", headers=JSON)
    return status, json.loads(body)


def values(doc: dict) -> list[bytes]:
    return sorted(base64.b64decode(v) for v in doc["values"])


def put(cluster: Cluster, node: str, key: str, value: bytes, context: str | None = None,
        w: int = 2) -> tuple[int, dict[str, str], bytes]:
    headers = {"X-Ringlock-Context": context} if context else {}
    return cluster.http(node, "PUT", f"/kv/{key}?w={w}", value, headers)


def test_concurrent_writes_become_siblings_and_the_merged_context_resolves_them(
        cluster) -> None:
    """§4.4: two writes with the same context, through two nodes, are both kept; a write
    with the context of the read that saw both replaces both."""
    a, b, c = cluster.names
    status, headers, _ = put(cluster, a, "cart", b"base", w=3)
    assert status == 204
    base = headers["X-Ringlock-Context"]
    assert put(cluster, a, "cart", b"apples", base, w=3)[0] == 204
    assert put(cluster, b, "cart", b"pears", base, w=3)[0] == 204
    status, doc = get_json(cluster, c, "cart", r=3)
    assert status == 200 and values(doc) == [b"apples", b"pears"]
    status, headers, body = cluster.http(c, "GET", "/kv/cart")
    assert status == 300 and b"apples" in body and b"pears" in body
    assert headers["Content-Type"].startswith("multipart/mixed")
    assert put(cluster, c, "cart", b"apples+pears", doc["context"], w=3)[0] == 204
    for node in cluster.names:
        status, doc = get_json(cluster, node, "cart", r=3)
        assert status == 200 and values(doc) == [b"apples+pears"]


def test_a_stale_replica_is_repaired_by_a_read_and_a_short_write_is_indeterminate(
        cluster) -> None:
    """§5 read repair, and §4.5's failure answer: W=3 with a replica down is refused with
    indeterminate=True, yet the write is on the replicas that were up."""
    key = "profile"
    a, b, c = cluster.preference_list(key.encode())
    status, headers, _ = put(cluster, a, key, b"v1", w=3)
    assert status == 204
    node = cluster.node(c)
    node.stop()
    try:
        cluster.wait_alive(a, c, alive=False)
        status, _, body = put(cluster, a, key, b"v2", headers["X-Ringlock-Context"], w=3)
        assert status == 503
        err = json.loads(body)
        assert err["error"] == "quorum" and err["indeterminate"] is True
        assert cluster.copy_on(a, key.encode()).values == [b"v2"]
        assert cluster.copy_on(b, key.encode()).values == [b"v2"]
    finally:
        node.start()
        node.wait_ready()
        cluster.wait_converged()
    assert cluster.copy_on(c, key.encode()).values == [b"v1"]  # stale: nobody told it
    status, doc = get_json(cluster, a, key, r=3)
    assert status == 200 and values(doc) == [b"v2"]
    wait_for(lambda: cluster.copy_on(c, key.encode()).values == [b"v2"], what="read repair")
    repairs = sum(cluster.status_of(n)["coordinator"]["read_repairs"] for n in cluster.names)
    assert repairs >= 1


STATE = vclock.encode(vclock.update(vclock.SiblingSet(), vclock.VersionVector(),
                                    "127.0.0.1:1", b"evil", timestamp=1))
HOSTILE = [
    ("get", b"\xc1"),
    ("get", msgpack.packb({"key": b""})),
    ("merge", msgpack.packb({"key": b"hostile", "state": STATE[:-2]})),
    ("merge", msgpack.packb({"key": b"hostile", "state": STATE, "more": 1})),
    ("merge_many", msgpack.packb({"items": [[b"hostile", STATE], [b"x"]]})),
    ("hint", msgpack.packb({"owner": 5, "key": b"hostile", "state": STATE})),
    ("coordinate", msgpack.packb({"op": "put", "key": b"hostile", "value": b"v",
                                  "context": b"not a context"})),
    ("coordinate", msgpack.packb({"op": "put", "key": b"hostile", "value": b"v", "w": 4})),
    ("coordinate", msgpack.packb({"op": "drop", "key": b"hostile", "value": b""})),
    ("status", msgpack.packb([])),
]


def test_hostile_internal_bodies_get_400_and_change_nothing(cluster) -> None:
    node = cluster.names[0]
    before = cluster.status_of(node)
    for op, body in HOSTILE:
        status, err = cluster.internal(node, op, raw=body)
        assert status == 400, (op, status, err)
        assert err["error"] in ("wire", "invalid_context", "invalid_request") and err["message"]
    status, _, body = cluster.http(node, "GET", "/internal/v1/get")
    assert status == 405
    after = cluster.status_of(node)
    for counter in ("coordinates", "merge_writes", "batches"):
        assert after["replica"][counter] == before["replica"][counter], counter
    assert after["hints"] == before["hints"]
    for n in cluster.names:
        assert cluster.copy_on(n, b"hostile").siblings == ()
    status, doc = get_json(cluster, node, "hostile")
    assert status == 404 and doc["values"] == [] and doc["deleted"] is False
