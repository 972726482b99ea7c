"""Fenced writes (Chubby §2.4 sequencers, checked by the store) on real node processes.

Three nodes; the first is the lock service's only voter. A write carrying a sequencer is
checked before anything is written: through the voter (it asks its own LockServer) and
through the other nodes (they ask the voter over HTTP). A sequencer that is no longer
current is refused with 409 and nothing is written; a malformed one gets 400.
"""

from __future__ import annotations

import pytest

from lockservice.sequencer import LockMode, Sequencer
from tests.cluster import Cluster, wait_for


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with Cluster(tmp_path_factory.mktemp("fencing"), size=3, lock_voters=1) as c:
        yield c


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
