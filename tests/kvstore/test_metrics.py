"""`/metrics` on real node processes (issue 9, Observability; kvstore/metrics.py).

Three nodes, all lock-service voters. Each test scrapes one node before and after the
requests it makes and checks that the request counters moved by exactly those requests,
and that the gauges read at scrape time show the state the test created.
"""

from __future__ import annotations

import json
import threading
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from kvstore.metrics import Sources, StatsCollector, outcome_of
from tests.cluster import Cluster, wait_for

Samples = dict[tuple[str, frozenset], float]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with Cluster(tmp_path_factory.mktemp("metrics"), size=3, lock_voters=3) as c:
        yield c


def scrape(cluster: Cluster, node: str) -> Samples:
    status, headers, body = cluster.http(node, "GET", "/metrics")
    assert status == 200, body
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(body.decode("utf-8"))
            for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def moved(before: Samples, after: Samples, prefix: str) -> dict:
    """The samples named `prefix...` whose value changed, with the change."""
    return {(name, tuple(sorted(labels))): after[(name, labels)] - before.get((name, labels), 0)
            for (name, labels) in after
            if name.startswith(prefix) and after[(name, labels)] != before.get((name, labels), 0)}


# -- outcome labels (pure) ------------------------------------------------------------------


def test_outcome_comes_from_the_status_and_the_json_error_code() -> None:
    assert outcome_of(200, b"value") == "ok"
    assert outcome_of(300, b"--multipart") == "ok"
    assert outcome_of(404, b'{"error": "not_found"}') == "not_found"
    assert outcome_of(404, b'{"values": [], "deleted": true}') == "not_found"  # JSON reads
    assert outcome_of(503, b'{"error": "quorum"}') == "quorum_failed"
    assert outcome_of(503, b'{"error": "unavailable"}') == "unavailable"
    assert outcome_of(409, b'{"error": "sequencer_rejected"}') == "sequencer_rejected"
    assert outcome_of(400, b"not json") == "bad_request"
    assert outcome_of(400, b'["a list"]') == "bad_request"
    assert outcome_of(418, b'{"error": "made_up"}') == "error"  # labels stay a fixed set


class _Lock:
    """A lock server's two read surfaces, as plain data."""

    def __init__(self) -> None:
        self.leader = 1
        self.leader_changes = 1
        self.fsm = SimpleNamespace(locks={
            "a": SimpleNamespace(holders={1: object()}, waiters=[object(), object()]),
            "b": SimpleNamespace(holders={}, waiters=[])})  # idle under lock-delay

    def status(self) -> dict:
        return {"term": 4, "commit": 9, "applied": 8, "leader_id": self.leader,
                "is_leader": self.leader == 1, "sessions": 3,
                "leader_changes": self.leader_changes}


def _collect(collector: StatsCollector) -> Samples:
    registry = CollectorRegistry()
    registry.register(collector)
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in registry.collect() for s in family.samples}


def test_the_collector_reads_each_source_and_survives_a_broken_one() -> None:
    def broken() -> dict:
        raise RuntimeError("engine closed")
    lock = _Lock()
    collector = StatsCollector("n1", Sources(
        coordinator=lambda: {"get": 5, "put": 2, "quorum_failed": 1},
        replica=broken, hints=lambda: {"hints": 3, "owners": {"n2": 2, "n3": 1}},
        handoff=lambda: None, aae=lambda: {"totals": {"exchanges": 2, "keys_repaired": 7,
                                                      "duration_total_s": 0.5}},
        lock=lambda: lock))
    samples = _collect(collector)
    assert value(samples, "ringlock_coordinator_operations_total", op="get") == 5
    assert value(samples, "ringlock_quorum_failures_total") == 1
    assert value(samples, "ringlock_hints_pending_by_owner", owner="n2") == 2
    assert value(samples, "ringlock_aae_exchange_duration_seconds_sum") == 0.5
    assert value(samples, "ringlock_aae_keys_repaired_total") == 7
    assert (value(samples, "ringlock_raft_term"), value(samples, "ringlock_raft_applied_index"),
            value(samples, "ringlock_locks_held"), value(samples, "ringlock_lock_waiters"),
            value(samples, "ringlock_raft_is_leader")) == (4, 8, 1, 2, 1)
    assert not any(name.startswith("ringlock_lsm_") for name, _ in samples)  # broken source
    assert not any(name.startswith("ringlock_handoff_") for name, _ in samples)  # absent
    assert value(samples, "ringlock_raft_leader_changes_total") == 1
    lock.leader, lock.leader_changes = 3, 3  # two changes between scrapes: both counted
    assert value(_collect(collector), "ringlock_raft_leader_changes_total") == 3


# -- counters on a real node ----------------------------------------------------------------


def test_request_counters_move_by_exactly_the_requests_made(cluster) -> None:
    node = cluster.names[1]
    before = scrape(cluster, node)
    for i in range(3):
        assert cluster.http(node, "PUT", f"/kv/metrics-{i}", b"v")[0] == 204
    assert cluster.http(node, "GET", "/kv/metrics-0")[0] == 200
    assert cluster.http(node, "GET", "/kv/metrics-1")[0] == 200
    assert cluster.http(node, "GET", "/kv/metrics-absent")[0] == 404
    assert cluster.http(node, "DELETE", "/kv/metrics-2")[0] == 204
    assert cluster.http(node, "PUT", "/kv/metrics-0?w=0", b"v")[0] == 400
    assert cluster.http(node, "POST", "/kv/metrics-0", b"v")[0] == 405
    after = scrape(cluster, node)

    assert moved(before, after, "ringlock_kv_requests_total") == {
        ("ringlock_kv_requests_total", (("op", "put"), ("outcome", "ok"))): 3,
        ("ringlock_kv_requests_total", (("op", "get"), ("outcome", "ok"))): 2,
        ("ringlock_kv_requests_total", (("op", "get"), ("outcome", "not_found"))): 1,
        ("ringlock_kv_requests_total", (("op", "delete"), ("outcome", "ok"))): 1,
        ("ringlock_kv_requests_total", (("op", "put"), ("outcome", "bad_request"))): 1,
        ("ringlock_kv_requests_total", (("op", "other"), ("outcome", "method_not_allowed"))): 1,
    }
    counts = moved(before, after, "ringlock_kv_request_duration_seconds_count")
    assert counts == {
        ("ringlock_kv_request_duration_seconds_count", (("op", "put"),)): 4,
        ("ringlock_kv_request_duration_seconds_count", (("op", "get"),)): 3,
        ("ringlock_kv_request_duration_seconds_count", (("op", "delete"),)): 1,
        ("ringlock_kv_request_duration_seconds_count", (("op", "other"),)): 1,
    }
    inf = value(after, "ringlock_kv_request_duration_seconds_bucket", op="put", le="+Inf")
    assert inf == value(after, "ringlock_kv_request_duration_seconds_count", op="put")
    # The coordinator's own counters (read from its stats at scrape time) saw the valid ones.
    ops = moved(before, after, "ringlock_coordinator_operations_total")
    assert ops[("ringlock_coordinator_operations_total", (("op", "put"),))] == 3
    assert ops[("ringlock_coordinator_operations_total", (("op", "get"),))] == 3
    assert ops[("ringlock_coordinator_operations_total", (("op", "delete"),))] == 1
    assert value(after, "ringlock_node_info", node=node) == 1


def test_gauges_read_the_nodes_own_stats(cluster) -> None:
    node = cluster.names[0]
    samples = scrape(cluster, node)
    status = cluster.status_of(node)
    assert value(samples, "ringlock_hints_pending") == status["hints"]
    engine = status["replica"]["engine"]
    assert value(samples, "ringlock_lsm_compactions_total") == engine["compactions"]
    assert value(samples, "ringlock_lsm_stalls_total") == engine["stalls"]
    for level, size in enumerate(engine["bytes_per_level"]):
        assert value(samples, "ringlock_lsm_level_bytes", level=str(level)) == size
    assert ("ringlock_aae_exchange_duration_seconds_count", frozenset()) in samples
    assert ("ringlock_handoff_delivered_total", frozenset()) in samples


def _json(cluster: Cluster, node: str, path: str, payload: dict, want: int = 200) -> dict:
    status, _, body = cluster.http(node, "POST", path, json.dumps(payload).encode(),
                                   {"Content-Type": "application/json"})
    assert status == want, body
    return json.loads(body) if body else {}


def test_lock_sessions_holders_and_waiters_and_the_raft_indexes(cluster) -> None:
    node = cluster.names[0]
    wait_for(lambda: value(scrape(cluster, node), "ringlock_raft_leader_id") > 0,
             what="a lock-service leader")
    before = scrape(cluster, node)
    assert before[("ringlock_raft_term", frozenset())] >= 1
    s1 = _json(cluster, node, "/lock/v1/sessions", {"ttl_ms": 20000}, 201)["session"]
    s2 = _json(cluster, node, "/lock/v1/sessions", {"ttl_ms": 20000}, 201)["session"]
    _json(cluster, node, "/lock/v1/locks/metrics-lock/acquire",
          {"session": s1, "mode": "exclusive", "wait_ms": 0})
    waiter: dict = {}
    thread = threading.Thread(target=lambda: waiter.update(answer=cluster.http(
        node, "POST", "/lock/v1/locks/metrics-lock/acquire",
        json.dumps({"session": s2, "mode": "exclusive", "wait_ms": 20000}).encode(),
        {"Content-Type": "application/json"})))
    thread.start()
    try:
        def held_and_waited() -> bool:
            s = scrape(cluster, node)
            return (value(s, "ringlock_lock_sessions") == 2 and
                    value(s, "ringlock_locks_held") == 1 and
                    value(s, "ringlock_lock_waiters") == 1)
        wait_for(held_and_waited, what="2 sessions, 1 lock held, 1 waiter in /metrics")
    finally:
        _json(cluster, node, "/lock/v1/locks/metrics-lock/release", {"session": s1}, 204)
        thread.join(30)
    assert waiter["answer"][0] == 200  # the waiter got the lock when it was released
    for s in (s1, s2):
        assert cluster.http(node, "DELETE", f"/lock/v1/sessions/{s}")[0] == 204
    after = scrape(cluster, node)
    # Open x2, acquire, queued acquire, release, grant, close x2: at least six entries.
    assert (value(after, "ringlock_raft_commit_index")
            >= value(before, "ringlock_raft_commit_index") + 6)
    assert (value(after, "ringlock_raft_applied_index")
            >= value(before, "ringlock_raft_applied_index") + 6)
    assert value(after, "ringlock_locks_held") == 0
    assert value(after, "ringlock_lock_waiters") == 0


def test_metrics_refuses_other_methods_and_changes_nothing(cluster) -> None:
    node = cluster.names[2]
    before = scrape(cluster, node)
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        status, headers, body = cluster.http(node, method, "/metrics", b"x 1\n")
        assert status == 405, (method, body)
        assert json.loads(body)["error"] == "method_not_allowed"
        assert "GET" in headers["Allow"]
    after = scrape(cluster, node)
    assert moved(before, after, "ringlock_kv_requests_total") == {}


def test_a_quorum_failure_is_counted_as_one(cluster) -> None:
    """Last in this file: it stops a node for good."""
    node = cluster.names[1]
    cluster.nodes[2].kill()
    before = scrape(cluster, node)
    status, _, body = cluster.http(node, "PUT", "/kv/metrics-q?w=3&timeout_ms=2000", b"v")
    assert status == 503, body
    after = scrape(cluster, node)
    assert moved(before, after, "ringlock_kv_requests_total") == {
        ("ringlock_kv_requests_total", (("op", "put"), ("outcome", "quorum_failed"))): 1}
    assert moved(before, after, "ringlock_quorum_failures_total") == {
        ("ringlock_quorum_failures_total", ()): 1}
