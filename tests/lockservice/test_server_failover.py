"""Chubby §2.9 (fail-overs) on three real members: the leader is SIGKILLed.

A new leader grants every session a fresh lease before it expires any, so a session whose
client keeps sending KeepAlives through the fail-over still holds its locks afterwards; and
generations keep increasing, so sequencers strictly increase across fail-overs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.lockservice.cluster import LockCluster, running_cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LockCluster]:
    root: Path = tmp_path_factory.mktemp("locks")
    with running_cluster(root) as c:
        yield c


class KeepAliveLoop:
    """A client's keepalive loop in a thread: any live member, retried on 503 or no answer."""

    def __init__(self, cluster: LockCluster, session: int) -> None:
        self.cluster, self.session = cluster, session
        self.answers: list[tuple[float, int, Any]] = []  # (monotonic time, status, body)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        ack = 0
        while not self._stop.is_set():
            for member in self.cluster.alive():
                code, body = self.cluster.try_call(
                    member, "POST", f"/lock/v1/sessions/{self.session}/keepalive", {"ack": ack},
                    timeout=10)
                if code not in (0, 503):
                    self.answers.append((time.monotonic(), code, body))
                    if code == 200 and body["events"]:
                        ack = body["events"][-1]["seq"]
                    break
            else:
                time.sleep(0.02)

    def ok_since(self, t: float) -> bool:
        return any(at > t and code == 200 for at, code, _ in self.answers)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)


def _failover(cluster: LockCluster, session: int, probe: str) -> float:
    """SIGKILL the leader; return the seconds until an acquire succeeded again; restart it."""
    old = cluster.leader()
    t0 = time.monotonic()
    cluster.kill(old)
    while True:
        live = cluster.alive()
        code, reply = cluster.try_call(live[0], "POST", f"/lock/v1/locks/{probe}/acquire",
                                       {"session": session}, timeout=10)
        if code == 200:
            break
        assert code in (0, 503), reply
    elapsed = time.monotonic() - t0
    cluster.request("POST", f"/lock/v1/locks/{probe}/release", {"session": session}, ok=(204,))
    cluster.start(old)
    return elapsed


def test_sessions_and_held_locks_survive_a_leader_sigkill(cluster: LockCluster) -> None:
    holder, prober = cluster.open_session(2_000), cluster.open_session(60_000)
    code, held = cluster.acquire(holder, "fo/held")
    assert code == 200
    loop = KeepAliveLoop(cluster, holder)
    try:
        before = time.monotonic()
        elapsed = _failover(cluster, prober, "fo/probe")
        after = time.monotonic()
        cluster.wait(lambda: loop.ok_since(after), 30, "a keepalive after the fail-over")
        info = cluster.lock_info("fo/held")
        assert [h["sequencer"] for h in info["holders"]] == [held["sequencer"]]
        _, check = cluster.request("POST", "/lock/v1/sequencers/check",
                                   {"sequencer": held["sequencer"]}, ok=(200,))
        assert check == {"current": True}
    finally:
        loop.stop()
    assert {code for _, code, _ in loop.answers} == {200}, loop.answers
    kinds = [e["kind"] for at, _, body in loop.answers if at > before for e in body["events"]]
    assert "leader_changed" in kinds
    print(f"fail-over: {elapsed:.3f} s from SIGKILL to the next granted acquire")


def test_sequencers_strictly_increase_across_failovers(cluster: LockCluster) -> None:
    session = cluster.open_session(60_000)
    generations: list[int] = []
    for round_ in range(2):
        code, got = cluster.acquire(session, "fo/gen")
        assert code == 200
        generations.append(got["generation"])
        cluster.request("POST", "/lock/v1/locks/fo/gen/release", {"session": session},
                        ok=(204,))
        _failover(cluster, session, f"fo/probe{round_}")
    code, got = cluster.acquire(session, "fo/gen")
    assert code == 200
    generations.append(got["generation"])
    assert generations == sorted(set(generations)), generations


def test_a_follower_relays_to_the_next_leader_when_the_leader_is_down(
        cluster: LockCluster) -> None:
    """Right after the leader is SIGKILLed the followers still name it, and a relay to it is
    refused: the follower waits for the new leader and relays there, so the client gets its
    answer (200), not a 503 to retry against other members."""
    session = cluster.open_session(60_000)
    old = cluster.leader()
    follower = next(i for i in cluster.alive() if i != old)
    cluster.kill(old)
    try:
        code, reply = cluster.try_call(follower, "POST", "/lock/v1/locks/fo/relayed/acquire",
                                       {"session": session}, timeout=20)
        assert code == 200, (code, reply)
        assert reply["session"] == session
    finally:
        cluster.start(old)
