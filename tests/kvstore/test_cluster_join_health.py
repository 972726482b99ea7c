"""/health is a readiness signal: a node started with --join answers 503 "joining" until
the cluster has taken it in (its seed is not up yet here), then 200; a Kubernetes
readiness probe (deploy/) keeps clients away from a node that has no cluster ring yet."""

from __future__ import annotations

import http.client
import json

from tests.cluster import READY_S, NodeProcess, free_ports, wait_for


def health(node: NodeProcess) -> tuple[int, dict]:
    host, port = node.name.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request("GET", "/health")
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    except OSError:
        return 0, {}  # not listening yet
    finally:
        conn.close()


def test_health_says_joining_until_the_join_is_done(tmp_path) -> None:
    seed_port, joiner_port = free_ports(2)
    seed = NodeProcess(f"127.0.0.1:{seed_port}", tmp_path, [])
    joiner = NodeProcess(f"127.0.0.1:{joiner_port}", tmp_path, [])
    try:
        joiner.start(join=seed.name)  # the seed is not running: the join retries
        wait_for(lambda: health(joiner)[0] == 503, what="the joiner to serve /health")
        assert health(joiner) == (503, {"status": "joining", "node": joiner.name})
        seed.start()
        seed.wait_ready()
        joiner.wait_ready(READY_S)
        assert health(joiner) == (200, {"status": "ok", "node": joiner.name})
        assert health(seed) == (200, {"status": "ok", "node": seed.name})
    finally:
        joiner.stop()
        seed.stop()
