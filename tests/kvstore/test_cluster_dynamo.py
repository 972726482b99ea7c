"""Dynamo's promises on three real node processes, through the public HTTP API (one
cluster shared by the file; the first node is also the lock service's only voter):
§4.5 a put on one node is read on the others, any node coordinates, and a write that
cannot reach W says it may still have been applied; §4.4 concurrent writes become
siblings and a write with the merged context resolves them; §5 read repair brings a
stale replica up to date; Chubby §2.4 fenced writes (sequencers checked by the store);
hostile bodies on /internal/v1/* get 400 and change nothing; a stopped node exits 0 and
comes back with its data.

With three nodes and N=3 every node is a primary of every key and no fallback exists, so
a stopped node's missed writes reach it only by read repair (no hint is held for it).
"""

from __future__ import annotations

import base64
import json

import msgpack
import pytest

from kvstore import vclock
from lockservice.sequencer import LockMode, Sequencer
from tests.cluster import Cluster, wait_for

JSON = {"Accept": "application/json"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with Cluster(tmp_path_factory.mktemp("dynamo"), size=3, lock_voters=1) as c:
        yield c


def test_a_put_on_one_node_is_read_on_every_other(cluster) -> None:
    a, b, c = cluster.names
    status, headers, _ = cluster.http(a, "PUT", "/kv/greeting", b"hello")
    assert status == 204, headers
    for node in (b, c):
        status, headers, body = cluster.http(node, "GET", "/kv/greeting")
        assert (status, body) == (200, b"hello")
        assert headers["X-Ringlock-Context"]


def test_every_node_serves_every_key(cluster) -> None:
    """Any node coordinates: writes through each node land, and read back everywhere."""
    for i, node in enumerate(cluster.names):
        for j in range(10):
            status, _, _ = cluster.http(node, "PUT", f"/kv/key-{i}-{j}", b"v%d" % j)
            assert status == 204
    for i in range(3):
        for j in range(10):
            reader = cluster.names[(i + j) % 3]
            status, _, body = cluster.http(reader, "GET", f"/kv/key-{i}-{j}?r=3")
            assert (status, body) == (200, b"v%d" % j)


def test_a_stopped_node_exits_zero_and_restarts_with_its_data(cluster) -> None:
    node = cluster[2]
    cluster.http(node.name, "PUT", "/kv/kept?w=3", b"durable")
    assert node.stop() == 0
    assert "stopped" in node.output()
    node.start()
    node.wait_ready()
    status, _, body = cluster.http(node.name, "GET", "/kv/kept?r=3")
    assert (status, body) == (200, b"durable")
    cluster.wait_converged()


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


def test_a_delete_leaves_a_tombstone_that_a_later_write_replaces(cluster) -> None:
    """§4.4: a delete is a versioned write (a tombstone with a clock): reads answer 404 with
    a context, and a put with that context replaces the tombstone on every replica."""
    a, b, c = cluster.names
    status, headers, _ = put(cluster, a, "session", b"alive", w=3)
    assert status == 204
    status, _, _ = cluster.http(b, "DELETE", "/kv/session?w=3",
                                headers={"X-Ringlock-Context": headers["X-Ringlock-Context"]})
    assert status == 204
    for node in cluster.names:
        status, doc = get_json(cluster, node, "session", r=3)
        assert status == 404 and doc["deleted"] is True and doc["values"] == []
        assert cluster.copy_on(node, b"session").is_deleted
    assert put(cluster, c, "session", b"again", doc["context"], w=3)[0] == 204
    status, doc = get_json(cluster, a, "session", r=3)
    assert status == 200 and values(doc) == [b"again"]


def test_a_stale_replica_is_repaired_by_a_read_and_a_short_write_is_indeterminate(
        cluster) -> None:
    """§5 read repair, and §4.5's failure answer: W=3 with a replica down is refused with
    indeterminate=True, yet the write is on the replicas that were up. Anti-entropy is
    paused meanwhile, so that only the read can repair the stale replica."""
    key = "profile"
    a, b, c = cluster.preference_list(key.encode())
    status, headers, _ = put(cluster, a, key, b"v1", w=3)
    assert status == 204
    node = cluster.node(c)
    node.stop()
    try:
        anti_entropy(cluster, [a, b], enabled=False)
        cluster.wait_alive(a, c, alive=False)
        status, _, body = put(cluster, a, key, b"v2", headers["X-Ringlock-Context"], w=3)
        assert status == 503
        err = json.loads(body)
        assert err["error"] == "quorum" and err["indeterminate"] is True
        assert cluster.copy_on(a, key.encode()).values == [b"v2"]  # the coordinator's copy
        # The answer came once W was out of reach; the send to b goes on in the background.
        wait_for(lambda: cluster.copy_on(b, key.encode()).values == [b"v2"],
                 what="replication to the other up replica")
    finally:
        node.start()
        node.wait_ready()
    try:
        anti_entropy(cluster, [c], enabled=False)
        cluster.wait_converged()
        assert cluster.copy_on(c, key.encode()).values == [b"v1"]  # stale: nobody told it
        status, doc = get_json(cluster, a, key, r=3)
        assert status == 200 and values(doc) == [b"v2"]
        wait_for(lambda: cluster.copy_on(c, key.encode()).values == [b"v2"],
                 what="read repair")
        assert cluster.status_of(a)["coordinator"]["read_repairs"] >= 1
    finally:
        anti_entropy(cluster, cluster.names, enabled=True)


def anti_entropy(cluster: Cluster, nodes: list[str], *, enabled: bool) -> None:
    for node in nodes:
        status, body = cluster.json(node, "POST", "/admin/v1/aae/schedule",
                                    {"enabled": enabled})
        assert status == 200, body


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


def leader_known(cluster: Cluster) -> bool:
    status, body = cluster.json(cluster.names[0], "GET", "/lock/v1/leader")
    return status == 200 and body["leader"] is not None


def acquire(cluster: Cluster, session: int, name: str) -> str:
    status, body = cluster.json(cluster.names[0], "POST", f"/lock/v1/locks/{name}/acquire",
                                {"session": session, "mode": "exclusive", "wait_ms": 0})
    assert status == 200, body
    return body["sequencer"]


def test_fenced_writes_pass_with_a_current_sequencer_and_are_refused_after(cluster) -> None:
    voter, other, third = cluster.names
    wait_for(lambda: leader_known(cluster), what="a lock-service leader")
    status, body = cluster.json(voter, "POST", "/lock/v1/sessions", {"ttl_ms": 60_000})
    assert status == 201, body
    session = body["session"]
    old = acquire(cluster, session, "writer")
    context = None
    for node in (voter, other):  # the voter asks itself; the other node asks the voter
        headers = {"X-Ringlock-Sequencer": old}
        if context:
            headers["X-Ringlock-Context"] = context
        status, reply, body = cluster.http(node, "PUT", "/kv/fenced", b"by holder", headers)
        assert status == 204, body
        context = reply["X-Ringlock-Context"]
    status, _ = cluster.json(voter, "POST", "/lock/v1/locks/writer/release",
                             {"session": session})
    assert status == 204
    acquire(cluster, session, "writer")  # a new generation: `old` is no longer current
    status, _, body = cluster.http(third, "PUT", "/kv/fenced", b"stale holder",
                                   {"X-Ringlock-Sequencer": old})
    assert status == 409, body
    status, _, body = cluster.http(third, "GET", "/kv/fenced?r=3")
    assert (status, body) == (200, b"by holder")
    status, _, body = cluster.http(third, "PUT", "/kv/fenced", b"x",
                                   {"X-Ringlock-Sequencer": "not-a-token"})
    assert status == 400, body
    assert cluster.http(voter, "DELETE", f"/lock/v1/sessions/{session}")[0] == 204


def test_a_cluster_without_a_lock_service_refuses_sequencers(tmp_path) -> None:
    with Cluster(tmp_path, size=1) as single:
        node = single.names[0]
        token = Sequencer("writer", LockMode.EXCLUSIVE, 1, 1).to_token()
        status, _, body = single.http(node, "PUT", "/kv/k", b"v",
                                      {"X-Ringlock-Sequencer": token})
        assert status == 400 and b"no lock service" in body
        status, _, _ = single.http(node, "GET", "/kv/k")
        assert status == 404
