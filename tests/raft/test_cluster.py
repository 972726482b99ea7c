"""Real `raft.demo_node` processes on 127.0.0.1: elections, SIGKILLed leaders, catch-up by
snapshot, membership changes under load, and restart from disk.

Each test states the Raft promise it checks (paper sections: §5.2 election, §5.3 log
replication, §5.4 safety, §6 membership, §7 log compaction).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.raft.procs import ProcCluster, request


@pytest.fixture
def clusters(tmp_path: Path) -> Iterator[list[ProcCluster]]:
    made: list[ProcCluster] = []
    yield made
    for c in made:
        c.close()


def make(clusters: list[ProcCluster], tmp_path: Path, ids: list[int], **kw) -> ProcCluster:
    c = ProcCluster(tmp_path, ids, **kw)
    clusters.append(c)
    return c


def converged(c: ProcCluster, nodes: list[int]) -> bool:
    """Every node applied the same commands in the same order up to the same index."""
    dumps = [c.dump(i) for i in nodes]
    return len({(d["last_applied"], d["digest"]) for d in dumps}) == 1


def assert_has_all(c: ProcCluster, node: int, acked: dict[str, int]) -> None:
    data = c.dump(node)["data"]
    missing = [k for k, v in acked.items() if data.get(k) != v]
    assert not missing, f"node {node} lost acknowledged puts: {missing[:5]}"


def test_three_members_elect_one_leader_and_replicate(clusters, tmp_path: Path) -> None:
    """§5.2, §5.3: one leader is elected; its log reaches every member in the same order."""
    c = make(clusters, tmp_path, [1, 2, 3])
    c.start_all()
    leader = c.leader()
    acked = {f"k{i}": i for i in range(20)}
    for k, v in acked.items():
        c.propose(k, v)
    c.wait(lambda: converged(c, [1, 2, 3]), 20, "all three to apply the same log")
    for node in (1, 2, 3):
        assert_has_all(c, node, acked)
    statuses = [c.status(i) for i in (1, 2, 3)]
    assert {s["leader_id"] for s in statuses} == {leader}
    assert len({s["term"] for s in statuses}) == 1
    # ReadIndex (dissertation §6.4): a linearizable read on any member sees the last put.
    c.propose("last", "value")
    for node in (1, 2, 3):
        code, body = request(c.ports[node], "GET", "/read?key=last")
        assert code == 200 and json.loads(body)["value"] == "value"


def test_sigkilled_leader_is_replaced_and_keeps_every_acknowledged_put(
    clusters, tmp_path: Path
) -> None:
    """§5.4 (leader completeness): after the leader dies, the new leader has every entry
    that was acknowledged, and the restarted old leader catches up to it."""
    c = make(clusters, tmp_path, [1, 2, 3])
    c.start_all()
    old = c.leader()
    acked: dict[str, int] = {}
    for i in range(30):
        acked[f"a{i}"] = i
        c.propose(f"a{i}", i)
    c.kill(old)
    new = c.leader()
    assert new != old
    for i in range(30):
        acked[f"b{i}"] = i
        c.propose(f"b{i}", i)
    survivors = [i for i in (1, 2, 3) if i != old]
    c.wait(lambda: converged(c, survivors), 20, "survivors to converge")
    for node in survivors:
        assert_has_all(c, node, acked)
    c.start(old)
    c.wait(lambda: converged(c, [1, 2, 3]), 30, "the restarted node to catch up")
    assert_has_all(c, old, acked)
    assert c.status(old)["term"] >= c.status(new)["term"]


def test_five_members_survive_losing_the_leader_and_a_follower(clusters, tmp_path: Path) -> None:
    """§5.2, §5.4: a 5-member cluster commits with any 3 alive; nothing acknowledged is lost."""
    c = make(clusters, tmp_path, [1, 2, 3, 4, 5])
    c.start_all()
    acked: dict[str, int] = {}
    for i in range(20):
        acked[f"a{i}"] = i
        c.propose(f"a{i}", i)
    first = c.leader()
    follower = next(i for i in (1, 2, 3, 4, 5) if i != first)
    c.kill(first)
    c.kill(follower)
    second = c.leader()
    assert second not in (first, follower)
    for i in range(20):
        acked[f"b{i}"] = i
        c.propose(f"b{i}", i)
    alive = c.alive()
    assert len(alive) == 3
    c.wait(lambda: converged(c, alive), 20, "the three survivors to converge")
    for node in alive:
        assert_has_all(c, node, acked)


def test_member_down_for_many_entries_catches_up_by_snapshot(clusters, tmp_path: Path) -> None:
    """§7: the leader compacted the entries a lagging member needs, so it sends a snapshot."""
    c = make(clusters, tmp_path, [1, 2, 3], snapshot_threshold=25)
    c.start_all()
    leader = c.leader()
    lagging = next(i for i in (1, 2, 3) if i != leader)
    c.propose("before", 0)
    c.wait(lambda: converged(c, [1, 2, 3]), 20, "initial convergence")
    c.kill(lagging)
    down_at = c.dump(leader)["last_applied"]
    acked = {f"k{i}": i for i in range(120)}
    for k, v in acked.items():
        c.propose(k, v)
    # Both members that could lead have compacted away the entries the lagging one lacks,
    # so only InstallSnapshot can bring it up to date.
    for node in c.alive():
        assert c.status(node)["snapshot_index"] > down_at + 1
    c.start(lagging)
    c.wait(lambda: converged(c, [1, 2, 3]), 30, "the lagging member to catch up")
    assert_has_all(c, lagging, acked)
    assert c.status(lagging)["snapshot_index"] > down_at


def test_add_learner_promote_it_and_remove_a_member_under_load(clusters, tmp_path: Path) -> None:
    """§6 / dissertation §4.2: single-server changes; a learner catches up before it votes;
    proposals keep committing throughout, and none acknowledged is lost."""
    c = make(clusters, tmp_path, [1, 2, 3, 4], voters=[1, 2, 3])
    c.start_all()
    c.leader()
    acked: dict[str, int] = {}
    errors: list[BaseException] = []
    stop = threading.Event()

    def load() -> None:
        i = 0
        try:
            while not stop.is_set():
                c.propose(f"m{i}", i)
                acked[f"m{i}"] = i
                i += 1
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    t = threading.Thread(target=load)
    t.start()
    try:
        c.start(4, join=True)
        conf = c.change("add_learner", 4)
        assert 4 in conf["learners"]
        c.wait(lambda: c.status(4)["applied"] > 0, 20, "the learner to receive the log")
        conf = c.change("add_voter", 4)
        assert 4 in conf["voters"] and 4 not in conf["learners"]
        removed = next(i for i in (1, 2, 3) if i != c.leader())
        conf = c.change("remove", removed)
        assert sorted(conf["voters"]) == sorted({1, 2, 3, 4} - {removed})
        n_before = len(acked)
        c.wait(lambda: len(acked) >= n_before + 10, 20, "proposals after the removal")
    finally:
        stop.set()
        t.join(60)
    assert not errors, errors
    c.kill(removed)
    members = sorted({1, 2, 3, 4} - {removed})
    c.wait(lambda: converged(c, members), 20, "the new configuration to converge")
    for node in members:
        assert_has_all(c, node, acked)
        assert c.status(node)["voters"] == members
    # The added member recovers its membership from its own disk after a SIGKILL.
    c.kill(4)
    c.start(4, join=True)
    c.propose("after-restart", 1)
    c.wait(lambda: converged(c, members), 20, "the restarted new member to catch up")
    assert c.status(4)["voters"] == members


def test_whole_cluster_sigkilled_restarts_from_disk(clusters, tmp_path: Path) -> None:
    """§5.1 durability: term, vote and log are on disk before anyone is told; a cluster that
    is killed entirely comes back with every acknowledged put."""
    c = make(clusters, tmp_path, [1, 2, 3])
    c.start_all()
    acked = {f"k{i}": i for i in range(25)}
    for k, v in acked.items():
        c.propose(k, v)
    terms = {i: c.status(i)["term"] for i in (1, 2, 3)}
    for i in (1, 2, 3):
        c.kill(i)
    for i in (1, 2, 3):
        c.start(i)
    c.leader()
    c.propose("after", 1)
    c.wait(lambda: converged(c, [1, 2, 3]), 20, "convergence after restart")
    for i in (1, 2, 3):
        assert_has_all(c, i, acked)
        assert c.status(i)["term"] >= terms[i]
