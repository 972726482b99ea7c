"""The chaos controller's process faults on a real 3-node cluster on 127.0.0.11-13."""

from __future__ import annotations

import email.utils
import os
import random
import time
import urllib.request

import pytest

from chaos import grudge
from chaos.cluster import ChaosCluster, ClusterError, faketime_env
from chaos.firewall import IptablesFirewall
from chaos.nemesis import Nemesis
from kvstore.client import Client
from tests.waiting import wait_until


class NoNetwork:
    """A network with no faults for the process-fault tests (links are tested elsewhere)."""

    def __init__(self):
        self.dropped = []

    def drop(self, links, probability=1.0):
        self.dropped.extend(links)

    def delay(self, links, delay_s):
        self.dropped.extend(links)

    def heal(self):
        self.dropped.clear()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with ChaosCluster(tmp_path_factory.mktemp("chaos"), nodes=3, lock_members=0) as c:
        c.start()
        yield c
    assert not any(n.running for n in c.nodes)


def server_clock_offset(node) -> float:
    with urllib.request.urlopen(f"http://{node.name}/health", timeout=10) as r:
        served = email.utils.parsedate_to_datetime(r.headers["Date"]).timestamp()
    return served - time.time()


def test_nodes_listen_on_their_own_addresses(cluster):
    assert [n.host for n in cluster.nodes] == ["127.0.0.11", "127.0.0.12", "127.0.0.13"]
    assert all(cluster.healthy(n) for n in cluster.nodes)


def test_killed_node_with_a_torn_log_tail_restarts_with_its_data(cluster):
    with Client([n.name for n in cluster.nodes]) as client:
        client.put(b"torn", b"kept", w=3)
    node = cluster.nodes[1]
    cluster.kill(node)
    torn = cluster.tear_tail(node, random.Random(4))
    assert any(t.startswith("replicas/") for t in torn)
    cluster.restart(node)
    cluster.wait_healthy([node])
    with Client([node.name]) as client:
        assert client.get(b"torn", r=3).values == [b"kept"]


def test_tearing_a_running_node_is_refused(cluster):
    with pytest.raises(ClusterError, match="after killing"):
        cluster.tear_tail(cluster.nodes[0], random.Random(0))


def _faketime_missing() -> str | None:
    try:
        faketime_env(1.0)
    except ClusterError as exc:
        return str(exc)
    return None


@pytest.mark.skipif(_faketime_missing() is not None, reason=f"{_faketime_missing()}")
def test_clock_skew_shifts_the_nodes_wall_clock(cluster):
    node = cluster.nodes[2]
    cluster.restart(node, skew_s=-20.0)
    cluster.wait_healthy([node])
    assert server_clock_offset(node) < -15  # the Date header comes from the node's clock
    cluster.restart(node, skew_s=0.0)
    cluster.wait_healthy([node])
    assert abs(server_clock_offset(node)) < 5


def test_paused_node_answers_nothing_until_resumed(cluster):
    node = cluster.nodes[0]
    cluster.pause(node)
    assert not cluster.healthy(node)
    cluster.resume(node)
    assert cluster.healthy(node)


@pytest.mark.parametrize("kind", ["kill", "pause", "torn-tail", "clock", "partition", "loss",
                                  "delay"])
def test_every_fault_begins_ends_and_heals(cluster, kind):
    if kind == "clock" and _faketime_missing():
        pytest.skip(_faketime_missing())
    network = NoNetwork()
    nemesis = Nemesis(cluster, network, random.Random(11))
    line = nemesis.begin(kind)
    assert line
    if kind in ("partition", "loss", "delay"):
        assert network.dropped
    assert nemesis.end() != "quiet"
    assert nemesis.end() == "quiet"
    nemesis.heal_all()
    assert not network.dropped
    assert all(n.running and not n.paused and n.skew_s == 0 for n in cluster.nodes)
    assert all(cluster.healthy(n) for n in cluster.nodes)


def _alive(cluster, view, target) -> bool:
    ring = cluster.get_json(view, "/ring")
    return {m["name"]: m["alive"] for m in ring["members"]}[target.name]


@pytest.mark.skipif(IptablesFirewall.available() is not None,
                    reason=f"iptables unusable: {IptablesFirewall.available()}")
def test_an_isolated_node_is_seen_down_and_comes_back_after_the_heal(cluster):
    """Nodes send from their own addresses, so a firewall rule pair cuts exactly one node."""
    firewall = IptablesFirewall(f"RLTEST-{os.getpid()}")
    firewall.setup()
    try:
        a, _, x = cluster.nodes
        firewall.drop(grudge.dropped_links(grudge.isolate([n.host for n in cluster.nodes],
                                                          x.host)))
        assert wait_until(lambda: not _alive(cluster, a, x), timeout=60, interval=0.1)
        assert wait_until(lambda: not _alive(cluster, x, a), timeout=60, interval=0.1)
        firewall.heal()
        assert wait_until(lambda: _alive(cluster, a, x) and _alive(cluster, x, a), timeout=60,
                          interval=0.1)
    finally:
        firewall.close()
