"""A cluster of three real node processes: a put on one node is read on another (Dynamo
§4.5), through the public HTTP API; the node's start, ready line and clean stop."""

from __future__ import annotations

import pytest

from tests.cluster import Cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with Cluster(tmp_path_factory.mktemp("basic"), size=3) as c:
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
