"""Limits against abuse over HTTP (issue 9), on three real members started with small limits.

Each limit exceeded answers a clear 4xx JSON error (429 for a count, 413 for a value, 400
for a name) with a message, and changes nothing in the table: sessions, locks, entries and
the generation are the same before and after. The sessions-per-client limit counts every
session a client opens, through any member; a member that relays an OpenSession names the
client it relays for. All requests here come from 127.0.0.1, so they are one client
("address:127.0.0.1"); the module opens exactly that client's three sessions.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lockservice.http_api import CLIENT, FORWARDED
from tests.lockservice.cluster import LockCluster, running_cluster

LIMITS = {"max_sessions_per_client": 3, "max_waiters_per_lock": 1, "max_locks_per_session": 2,
          "max_watches_per_session": 1, "max_entries": 2, "max_value_bytes": 8,
          "max_name_bytes": 16}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LockCluster]:
    root: Path = tmp_path_factory.mktemp("limits")
    flags = tuple(x for k, v in LIMITS.items() for x in ("--limit", f"{k}={v}"))
    with running_cluster(root, extra_args=flags) as c:
        yield c


@pytest.fixture(scope="module")
def sessions(cluster: LockCluster) -> list[int]:
    return [cluster.open_session(600_000) for _ in range(3)]


def _table(cluster: LockCluster) -> tuple[Any, ...]:
    st = cluster.status(cluster.leader())
    assert st is not None
    return st["sessions"], st["locks"], st["entries"], st["generation"]


def _refused(cluster: LockCluster, member: int, method: str, path: str, body: Any,
             status: int, code: str, headers: dict[str, str] | None = None) -> None:
    before = _table(cluster)
    got, reply = cluster.try_call(member, method, path, body, headers=headers)
    assert (got, reply["error"]) == (status, code), reply
    assert reply["message"], reply
    assert _table(cluster) == before


def test_sessions_per_client_through_any_member(cluster: LockCluster,
                                                sessions: list[int]) -> None:
    leader = cluster.leader()
    for member in cluster.ids:  # the leader itself, and both followers relaying
        _refused(cluster, member, "POST", "/lock/v1/sessions", {"ttl_ms": 60_000}, 429,
                 "too_many_sessions")
    # A relayed request is counted under the client its relaying member names.
    relayed = {FORWARDED: "2", CLIENT: "address:10.0.0.9"}
    other = []
    for _ in range(3):
        code, reply = cluster.try_call(leader, "POST", "/lock/v1/sessions", {"ttl_ms": 60_000},
                                       headers=relayed)
        assert code == 201, reply
        other.append(reply["session"])
    _refused(cluster, leader, "POST", "/lock/v1/sessions", {"ttl_ms": 60_000}, 429,
             "too_many_sessions", headers=relayed)
    # Closing one makes room for one: the count follows the table, not the history.
    cluster.request("DELETE", f"/lock/v1/sessions/{other[0]}", ok=(204,))
    code, reply = cluster.try_call(leader, "POST", "/lock/v1/sessions", {"ttl_ms": 60_000},
                                   headers=relayed)
    assert code == 201, reply
    for sid in [*other[1:], reply["session"]]:
        cluster.request("DELETE", f"/lock/v1/sessions/{sid}", ok=(204,))


def test_waiters_per_lock(cluster: LockCluster, sessions: list[int]) -> None:
    a, b, c = sessions
    assert cluster.acquire(a, "w")[0] == 200
    answers: list[tuple[int, Any]] = []
    waiter = threading.Thread(target=lambda: answers.append(cluster.acquire(
        b, "w", wait_ms=60_000)))
    waiter.start()
    try:
        cluster.wait(lambda: len(cluster.lock_info("w")["waiters"]) == 1, 30, "b to wait")
        for member in cluster.ids:
            _refused(cluster, member, "POST", "/lock/v1/locks/w/acquire",
                     {"session": c, "wait_ms": 60_000}, 429, "too_many_waiters")
        assert [w["session"] for w in cluster.lock_info("w")["waiters"]] == [b]
    finally:
        cluster.request("POST", "/lock/v1/locks/w/release", {"session": a}, ok=(204,))
        waiter.join(30)
    assert answers and answers[0][0] == 200, answers
    cluster.request("POST", "/lock/v1/locks/w/release", {"session": b}, ok=(204,))


def test_held_locks_per_session(cluster: LockCluster, sessions: list[int]) -> None:
    a = sessions[0]
    for name in ("h1", "h2"):
        assert cluster.acquire(a, name)[0] == 200
    _refused(cluster, cluster.leader(), "POST", "/lock/v1/locks/h3/acquire", {"session": a},
             429, "too_many_locks")
    assert cluster.lock_info("h3")["holders"] == []
    for name in ("h1", "h2"):
        cluster.request("POST", f"/lock/v1/locks/{name}/release", {"session": a}, ok=(204,))


def test_watches_per_session(cluster: LockCluster, sessions: list[int]) -> None:
    a = sessions[0]
    cluster.request("POST", f"/lock/v1/sessions/{a}/watches", {"prefix": "x/"}, ok=(204,))
    _refused(cluster, cluster.leader(), "POST", f"/lock/v1/sessions/{a}/watches",
             {"prefix": "y/"}, 429, "too_many_watches")


def test_entries_value_size_and_name_length(cluster: LockCluster, sessions: list[int]) -> None:
    leader = cluster.leader()
    small = base64.b64encode(b"12345678").decode()
    _refused(cluster, leader, "PUT", "/lock/v1/entries/big",
             {"value": base64.b64encode(b"123456789").decode()}, 413, "bad_request")
    _refused(cluster, leader, "PUT", "/lock/v1/entries/" + "n" * 17, {"value": small}, 400,
             "bad_request")
    _refused(cluster, leader, "POST", "/lock/v1/locks/" + "n" * 17 + "/acquire",
             {"session": sessions[0]}, 400, "bad_request")
    for name in ("e1", "e2"):
        cluster.request("PUT", f"/lock/v1/entries/{name}", {"value": small}, ok=(200,))
    _refused(cluster, leader, "PUT", "/lock/v1/entries/e3", {"value": small}, 429,
             "too_many_entries")
    for name in ("e1", "e2"):
        cluster.request("DELETE", f"/lock/v1/entries/{name}", ok=(204,))
