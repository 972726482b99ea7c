"""Chubby §2.4 lock-delay and §2.8 lease expiry, on three real members.

A holder whose session ends (it stops its KeepAlives, or its process is SIGKILLed) loses the
lock only when the server's clock has passed its lease end plus the lock-delay. Every
comparison is between times the server reported (`expires_at`, `lease_expires_at`,
`delay_until`, `granted_at`: the table clock, ms), never the test's own wall clock.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.lockservice.cluster import REPO, LockCluster, running_cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LockCluster]:
    root: Path = tmp_path_factory.mktemp("locks")
    with running_cluster(root) as c:
        yield c


def _contend(cluster: LockCluster, session: int, name: str) -> tuple[dict[str, Any],
                                                                      list[dict[str, Any]]]:
    """Try to acquire `name` until it is granted; return the grant and every refusal."""
    refusals: list[dict[str, Any]] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        code, reply = cluster.acquire(session, name)
        if code == 200:
            return reply, refusals
        refusals.append(reply)
        time.sleep(0.02)
    raise AssertionError(f"{name} was not granted within 60 s")


def test_lock_is_free_after_ttl_plus_lock_delay_when_keepalives_stop(
        cluster: LockCluster) -> None:
    holder, contender = cluster.open_session(800), cluster.open_session(60_000)
    code, _ = cluster.acquire(holder, "exp/x", lock_delay_ms=1_200)
    assert code == 200
    _, ka = cluster.request("POST", f"/lock/v1/sessions/{holder}/keepalive", {}, ok=(200,))
    lease_end = ka["expires_at"]  # the last keepalive: the lease ends here
    grant, refusals = _contend(cluster, contender, "exp/x")
    assert grant["granted_at"] >= lease_end + 1_200
    assert refusals and {r["error"] for r in refusals} <= {"busy", "lock_delay"}
    for r in refusals:
        if r["error"] == "lock_delay":
            assert r["delay_until"] >= lease_end + 1_200
    code, gone = cluster.request("POST", f"/lock/v1/sessions/{holder}/keepalive", {},
                                 ok=(404, 410))
    assert (code, gone["error"]) == (410, "session_expired")


def test_lock_of_a_sigkilled_holder_process_is_free_after_ttl_plus_lock_delay(
        cluster: LockCluster, tmp_path: Path) -> None:
    follower = cluster.followers()[0]  # the child's requests are forwarded to the leader
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.lockservice.holder_child", str(cluster.ports[follower]),
         "kill/x", "900", "1500"], stdout=subprocess.PIPE, cwd=REPO)
    try:
        assert child.stdout is not None
        lines = [json.loads(child.stdout.readline()) for _ in range(3)]
        assert [x["step"] for x in lines] == ["open", "acquire", "keepalive"]
        assert lines[2]["status"] == 200
        holder = lines[0]["session"]
        child.kill()
    finally:
        child.kill()
        child.wait(10)
        if child.stdout is not None:
            child.stdout.close()
    contender = cluster.open_session(60_000)
    lease_end = lines[2]["expires_at"]
    while True:  # the holder's lease end, as the table has it, until the holder is gone
        info = cluster.lock_info("kill/x")
        if not info["holders"]:
            break
        assert [h["session"] for h in info["holders"]] == [holder]
        lease_end = max(lease_end, info["holders"][0]["lease_expires_at"])
    if info["delay_until"]:
        assert info["delay_until"] >= lease_end + 1_500
    code, grant = cluster.acquire(contender, "kill/x", wait_ms=30_000)
    assert code == 200, grant
    assert grant["granted_at"] >= lease_end + 1_500
    assert [h["session"] for h in cluster.lock_info("kill/x")["holders"]] == [contender]


def test_stale_sequencer_is_not_current_once_the_lock_is_granted_again(
        cluster: LockCluster) -> None:
    """§2.4: CheckSequencer refuses the sequencer of a holder whose session expired."""
    old, new = cluster.open_session(500), cluster.open_session(60_000)
    _, first = cluster.acquire(old, "stale/x", lock_delay_ms=0)
    code, second = cluster.acquire(new, "stale/x", wait_ms=30_000)
    assert code == 200 and second["generation"] > first["generation"]
    for member in cluster.ids:
        for token, current in ((first["sequencer"], False), (second["sequencer"], True)):
            code, reply = cluster.try_call(member, "POST", "/lock/v1/sequencers/check",
                                           {"sequencer": token})
            assert (code, reply) == (200, {"current": current})
