"""`kv serve --lock-limit NAME=VALUE` reaches the lock service of a real node: one voter
with max_sessions_per_client=2 refuses a client's third session with 429 and keeps two."""

from __future__ import annotations

from tests.cluster import Cluster


def test_a_lock_limit_given_to_kv_serve_is_enforced(tmp_path) -> None:
    with Cluster(tmp_path, size=1, lock_voters=1,
                 extra_args=["--lock-limit", "max_sessions_per_client=2"]) as cluster:
        node = cluster.names[0]
        opened = [cluster.json(node, "POST", "/lock/v1/sessions", {"ttl_ms": 10_000})
                  for _ in range(3)]
        assert [status for status, _ in opened] == [201, 201, 429], opened
        assert opened[2][1]["error"] == "too_many_sessions"
        status, body = cluster.json(node, "GET", "/lock/v1/status")
        assert status == 200 and body["sessions"] == 2, body
