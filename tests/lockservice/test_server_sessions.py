"""Chubby §2.8 (sessions and KeepAlives) and §2.4 (locks) on three real members.

One cluster serves the whole module; each test uses its own lock names and sessions.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lockservice.sequencer import LockMode, Sequencer
from tests.lockservice.cluster import LockCluster, call, running_cluster
from tests.waiting import wait_until


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LockCluster]:
    root: Path = tmp_path_factory.mktemp("locks")
    with running_cluster(root) as c:
        yield c


def test_leader_endpoint_agrees_on_every_member(cluster: LockCluster) -> None:
    lead = cluster.leader()

    def answers() -> list[tuple[int, dict]]:
        return [cluster.try_call(m, "GET", "/lock/v1/leader") for m in cluster.ids]

    # A follower names the leader once its first AppendEntries of the term arrived; on a
    # loaded machine that can trail the leader's own readiness by a heartbeat or two.
    assert wait_until(lambda: all(b and b.get("leader") == lead for _, b in answers()),
                      timeout=30, interval=0.05)
    for code, body in answers():
        assert code == 200
        assert body["leader"] == lead
        assert body["address"] == f"127.0.0.1:{cluster.ports[lead]}"
        assert body["term"] >= 1


def test_every_member_serves_sessions_and_locks(cluster: LockCluster) -> None:
    """§2.8: a follower forwards to the leader and answers as the leader would."""
    for member in [*cluster.followers(), cluster.leader()]:
        code, opened = cluster.try_call(member, "POST", "/lock/v1/sessions", {"ttl_ms": 10_000})
        assert code == 201, opened
        sid = opened["session"]
        assert opened["ttl_ms"] == 10_000 and 0 < opened["lease_ms"] <= 10_000
        name = f"basic/{member}"
        code, got = cluster.try_call(member, "POST", f"/lock/v1/locks/{name}/acquire",
                                     {"session": sid})
        assert code == 200, got
        seq = Sequencer.from_token(got["sequencer"])
        assert seq == Sequencer(name, LockMode.EXCLUSIVE, got["generation"], sid)
        code, info = cluster.try_call(member, "GET", f"/lock/v1/locks/{name}")
        assert code == 200 and [h["session"] for h in info["holders"]] == [sid]
        code, _ = cluster.try_call(member, "POST", f"/lock/v1/locks/{name}/release",
                                   {"session": sid})
        assert code == 204
        assert cluster.lock_info(name)["holders"] == []
        code, _ = cluster.try_call(member, "DELETE", f"/lock/v1/sessions/{sid}")
        assert code == 204


def test_a_second_exclusive_acquire_is_busy_and_shared_holders_share(
        cluster: LockCluster) -> None:
    a, b, c = (cluster.open_session(10_000) for _ in range(3))
    code, first = cluster.acquire(a, "busy/x")
    assert code == 200
    code, refused = cluster.acquire(b, "busy/x")
    assert (code, refused["error"]) == (409, "busy")
    assert cluster.lock_info("busy/x")["holders"][0]["session"] == a
    assert cluster.acquire(b, "busy/s", mode="shared")[0] == 200
    assert cluster.acquire(c, "busy/s", mode="shared")[0] == 200
    assert {h["session"] for h in cluster.lock_info("busy/s")["holders"]} == {b, c}
    assert first["generation"] >= 1


def test_keepalive_extends_the_lease_before_it_ends(cluster: LockCluster) -> None:
    """§2.8: the long poll answers shortly before the lease ends, with a new lease."""
    sid = cluster.open_session(1_500)
    expires = []
    for _ in range(3):
        sent = time.monotonic()
        _code, ka = cluster.request("POST", f"/lock/v1/sessions/{sid}/keepalive", {}, ok=(200,))
        elapsed_ms = (time.monotonic() - sent) * 1000
        assert ka["ttl_ms"] == 1_500 and 0 < ka["lease_ms"] <= 1_500
        # How long the member had the request: part of the round trip, never more.
        assert type(ka["held_ms"]) is int and 0 <= ka["held_ms"] <= elapsed_ms
        expires.append(ka["expires_at"])
    assert expires == sorted(expires) and len(set(expires)) == 3


def test_keepalive_answers_at_once_with_a_pending_event(cluster: LockCluster) -> None:
    """§2.5: events ride on KeepAlive; a pending event ends the long poll."""
    waiter, holder = cluster.open_session(60_000), cluster.open_session(60_000)
    assert cluster.acquire(holder, "ev/x")[0] == 200
    code, _ = cluster.request("POST", f"/lock/v1/sessions/{waiter}/watches",
                              {"prefix": "ev/"}, ok=(204,))
    code, _ = cluster.request("POST", "/lock/v1/locks/ev/x/release", {"session": holder},
                              ok=(204,))
    # With a 60 s lease a quiet long poll would be held ~40 s; the event answers it now.
    code, ka = cluster.try_call(cluster.leader(), "POST",
                                f"/lock/v1/sessions/{waiter}/keepalive", {"ack": 0}, timeout=20)
    assert code == 200, ka
    kinds = [(e["kind"], e["name"]) for e in ka["events"]]
    assert ("lock_released", "ev/x") in kinds
    last = ka["events"][-1]["seq"]
    assert all(e["seq"] <= last for e in ka["events"])


def test_waiting_acquire_is_granted_when_the_holder_releases(cluster: LockCluster) -> None:
    a, b = cluster.open_session(10_000), cluster.open_session(10_000)
    assert cluster.acquire(a, "wait/x")[0] == 200
    result: list[tuple[int, object]] = []
    t = threading.Thread(target=lambda: result.append(
        cluster.acquire(b, "wait/x", wait_ms=20_000)))
    t.start()
    cluster.wait(lambda: [w["session"] for w in cluster.lock_info("wait/x")["waiters"]] == [b],
                 20, "b to queue")
    cluster.request("POST", "/lock/v1/locks/wait/x/release", {"session": a}, ok=(204,))
    t.join(30)
    code, got = result[0]
    assert code == 200 and got["session"] == b
    assert [h["session"] for h in cluster.lock_info("wait/x")["holders"]] == [b]


def test_waiting_acquire_times_out_and_leaves_the_queue(cluster: LockCluster) -> None:
    a, b = cluster.open_session(10_000), cluster.open_session(10_000)
    assert cluster.acquire(a, "timeout/x")[0] == 200
    code, refused = cluster.acquire(b, "timeout/x", wait_ms=300)
    assert (code, refused["error"]) == (409, "busy")
    info = cluster.lock_info("timeout/x")
    assert info["waiters"] == [] and [h["session"] for h in info["holders"]] == [a]


def test_closed_session_releases_its_locks_without_lock_delay(cluster: LockCluster) -> None:
    """§2.4: lock-delay applies to an expired holder, not to a clean close."""
    a, b = cluster.open_session(10_000), cluster.open_session(10_000)
    assert cluster.acquire(a, "close/x", lock_delay_ms=60_000)[0] == 200
    cluster.request("DELETE", f"/lock/v1/sessions/{a}", ok=(204,))
    code, got = cluster.acquire(b, "close/x")
    assert code == 200 and got["session"] == b
    code, body = cluster.request("POST", f"/lock/v1/sessions/{a}/keepalive", {}, ok=(404, 410))
    assert body["error"] in ("unknown_session", "session_expired")


def test_waiting_acquire_whose_client_goes_away_leaves_the_queue(cluster: LockCluster) -> None:
    """A waiter that nobody waits for any more would be granted a lock no one uses."""
    a, b = cluster.open_session(10_000), cluster.open_session(10_000)
    assert cluster.acquire(a, "gone/x")[0] == 200
    for member in (cluster.leader(), cluster.followers()[0]):
        with pytest.raises(OSError):  # the client gives up long before wait_ms
            call(cluster.ports[member], "POST", "/lock/v1/locks/gone/x/acquire",
                 {"session": b, "wait_ms": 60_000}, timeout=1.0)
        cluster.wait(lambda: cluster.lock_info("gone/x")["waiters"] == [], 20,
                     "the abandoned waiter to leave the queue")
    cluster.request("POST", "/lock/v1/locks/gone/x/release", {"session": a}, ok=(204,))
    assert cluster.lock_info("gone/x")["holders"] == []


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def test_entries_compare_and_set_and_ephemerals_end_with_their_session(
        cluster: LockCluster) -> None:
    """Chubby's small files: versions, CAS without ABA, ephemeral entries (§2.3)."""
    owner, watcher = cluster.open_session(10_000), cluster.open_session(60_000)
    cluster.request("POST", f"/lock/v1/sessions/{watcher}/watches", {"prefix": "ent/"},
                    ok=(204,))
    _, v1 = cluster.request("PUT", "/lock/v1/entries/ent/a", {"value": b64(b"one"),
                                                               "expected_version": 0}, ok=(200,))
    code, clash = cluster.request("PUT", "/lock/v1/entries/ent/a",
                                  {"value": b64(b"x"), "expected_version": 0}, ok=(200, 409))
    assert (code, clash["error"]) == (409, "version_mismatch")
    _, v2 = cluster.request("PUT", "/lock/v1/entries/ent/a",
                            {"value": b64(b"two"), "expected_version": v1["version"]}, ok=(200,))
    assert v2["version"] > v1["version"]
    for member in cluster.ids:
        code, got = cluster.try_call(member, "GET", "/lock/v1/entries/ent/a")
        assert (code, got) == (200, {"value": b64(b"two"), "version": v2["version"]})
    cluster.request("PUT", "/lock/v1/entries/ent/eph",
                    {"value": b64(b""), "ephemeral_session": owner}, ok=(200,))
    cluster.request("DELETE", f"/lock/v1/sessions/{owner}", ok=(204,))
    cluster.request("GET", "/lock/v1/entries/ent/eph", ok=(404,))
    cluster.request("DELETE", f"/lock/v1/entries/ent/a?expected_version={v2['version']}",
                    ok=(204,))
    _, ka = cluster.request("POST", f"/lock/v1/sessions/{watcher}/keepalive", {}, ok=(200,))
    assert [(e["kind"], e["name"]) for e in ka["events"]] == [
        ("entry_changed", "ent/a"), ("entry_changed", "ent/a"), ("entry_changed", "ent/eph"),
        ("entry_deleted", "ent/eph"), ("entry_deleted", "ent/a")]
