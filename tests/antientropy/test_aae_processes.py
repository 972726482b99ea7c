"""Dynamo §4.7 (replica synchronisation) on three real node processes, with no reads:
replicas made to diverge by writing into one replica's storage converge; a tombstone
reaches the replica that missed the delete; a node whose data folder was wiped is rebuilt
completely; trees left stale by SIGKILL are rebuilt and still find every difference.

With three nodes and N=3 every node replicates every key and no fallback exists, so no
hint carries anything, and nothing here reads through the public API before checking:
only anti-entropy can move the data. Each node's own copy is read with the internal
`get` op (the node's local state, no read repair).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time

import pytest

from kvstore import vclock
from kvstore.replica import ReplicaStore
from kvstore.vclock import SiblingSet, VersionVector
from tests.cluster import Cluster, wait_for

FAST = {"interval_s": 0.3, "enabled": True}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with Cluster(tmp_path_factory.mktemp("aae"), size=3) as c:
        schedule(c, **FAST)
        yield c


def schedule(cluster: Cluster, nodes: list[str] | None = None, **settings) -> None:
    for node in nodes or cluster.names:
        status, body = cluster.json(node, "POST", "/admin/v1/aae/schedule", settings)
        assert status == 200, body


def aae_status(cluster: Cluster, node: str) -> dict:
    status, body = cluster.json(node, "GET", "/admin/v1/aae")
    assert status == 200, body
    return body


def put_everywhere(cluster: Cluster, keys: list[bytes], value: bytes) -> None:
    for key in keys:
        status, _, body = cluster.http(cluster.names[0], "PUT", f"/kv/{key.decode()}?w=3",
                                       value)
        assert status == 204, body


def merge_on(cluster: Cluster, node: str, key: bytes, state: SiblingSet) -> None:
    status, body = cluster.internal(node, "merge", {"key": key, "state": vclock.encode(state)})
    assert status == 200, body


def write_on(cluster: Cluster, node: str, key: bytes, value: bytes, *,
             deleted: bool = False) -> SiblingSet:
    """A new version of `key` written into `node`'s storage only (coordinated as `node`)."""
    current = cluster.copy_on(node, key)
    state = vclock.update(current, current.clock, node, value, timestamp=time.time_ns(),
                          deleted=deleted)
    merge_on(cluster, node, key, state)
    return state


def same_everywhere(cluster: Cluster, keys: list[bytes]) -> bool:
    for key in keys:
        copies = [cluster.copy_on(n.name, key) for n in cluster.nodes if n.running]
        if any(c != copies[0] for c in copies):
            return False
    return True


def test_4_7_diverged_replicas_converge_without_any_read(cluster) -> None:
    a, b, c = cluster.names
    keys = [b"div-%d" % i for i in range(40)]
    put_everywhere(cluster, keys, b"old")
    newer = {k: write_on(cluster, b, k, b"newer on b") for k in keys[:10]}
    only_c = {b"only-c-%d" % i: write_on(cluster, c, b"only-c-%d" % i, b"c") for i in range(8)}
    concurrent = keys[10]
    write_on(cluster, a, concurrent, b"sibling a")
    write_on(cluster, c, concurrent, b"sibling c")
    wait_for(lambda: same_everywhere(cluster, keys + list(only_c)), what="convergence")
    for key, state in {**newer, **only_c}.items():
        assert cluster.copy_on(a, key) == state  # nothing else was written to these keys
    assert sorted(cluster.copy_on(b, concurrent).values) == [b"sibling a", b"sibling c"]
    assert cluster.copy_on(a, keys[20]).values == [b"old"]
    repaired = sum(aae_status(cluster, n)["totals"]["keys_repaired"] for n in cluster.names)
    assert repaired >= len(newer) + len(only_c) + 1


def test_4_7_a_tombstone_reaches_the_replica_that_missed_the_delete(cluster) -> None:
    a, b, c = cluster.names
    key = b"deleted-key"
    put_everywhere(cluster, [key], b"alive")
    tomb = write_on(cluster, a, key, b"", deleted=True)
    merge_on(cluster, b, key, tomb)  # a and b saw the delete, c did not
    assert cluster.copy_on(c, key).values == [b"alive"]
    wait_for(lambda: cluster.copy_on(c, key) == tomb, what="the tombstone on c")
    time.sleep(1.0)  # several more rounds: the live value never comes back
    for node in cluster.names:
        assert cluster.copy_on(node, key) == tomb and tomb.is_deleted
    assert cluster.http(c, "GET", f"/kv/{key.decode()}")[0] == 404


def test_4_7_a_wiped_node_rejoins_and_is_rebuilt_completely(cluster) -> None:
    a, _, c = cluster.names
    keys = [b"wipe-%d" % i for i in range(60)]
    put_everywhere(cluster, keys, b"before the wipe")
    # Nothing may repair c before the check that it came back empty: a and b's fast
    # schedules would race it (c's own first round comes only after its 10 s interval).
    schedule(cluster, enabled=False)
    node = cluster.node(c)
    node.stop()
    shutil.rmtree(node.data)
    node.start(join=a)
    node.wait_ready()
    cluster.wait_converged()
    schedule(cluster, [c], enabled=False)
    assert cluster.copy_on(c, keys[0]) == SiblingSet()
    schedule(cluster, **FAST)
    every = keys + [b"div-%d" % i for i in range(40)] + [b"deleted-key"]
    wait_for(lambda: same_everywhere(cluster, every), what="the wiped node refilled")
    assert cluster.copy_on(c, keys[-1]).values == [b"before the wipe"]


def test_4_7_trees_left_stale_by_a_crash_are_rebuilt_and_find_every_difference(
        cluster) -> None:
    a, b, _ = cluster.names
    schedule(cluster, enabled=False)
    node = cluster.node(b)
    node.stop()  # a clean stop saves b's trees ...
    node.start()
    node.wait_ready()
    cluster.wait_converged()
    assert aae_status(cluster, b)["trees"]["loaded"] > 0  # ... and the restart loads them
    keys = [b"crash-%d" % i for i in range(30)]
    put_everywhere(cluster, keys, b"v1")
    node.kill()  # b's saved trees are now stale, and b's CLEAN mark is gone
    direct = asyncio.run(_write_into_storage(node.data / "replicas", b, keys[:10]))
    on_a = {k: write_on(cluster, a, k, b"newer on a") for k in keys[10:20]}
    node.start()
    node.wait_ready()
    cluster.wait_converged()
    trees = aae_status(cluster, b)["trees"]
    assert trees["loaded"] == 0 and trees["rebuilds"] > 0
    schedule(cluster, **FAST)
    wait_for(lambda: same_everywhere(cluster, keys), what="convergence after the crash")
    for key, state in {**direct, **on_a}.items():
        assert cluster.copy_on(a, key) == state


async def _write_into_storage(path, node: str, keys: list[bytes]) -> dict[bytes, SiblingSet]:
    """New versions written straight into a stopped node's replica store."""
    store = await ReplicaStore.open(path, node=node, ring_size=256)
    try:
        out = {}
        for key in keys:
            current = await store.get(key)
            out[key] = await store.coordinate(key, current.clock, b"written while down",
                                              deleted=False, timestamp=time.time_ns())
        return out
    finally:
        await store.close()


def test_aae_endpoints_refuse_hostile_bodies_and_change_nothing(cluster) -> None:
    a = cluster.names[0]
    key = b"div-30"
    before = cluster.copy_on(a, key)
    bad_state = vclock.encode(vclock.update(SiblingSet(), VersionVector(), a, b"x",
                                            timestamp=1))[:-3]
    for op, raw in [("merge", b"\xc1"), ("merge", b"\x91\x01"), ("nodes", b"\x80"),
                    ("keys", b"\x81\xa5items\x91\x93\xcd\xff\xff\xc0\x90"),
                    ("nodes", b"\x85\xa9ring_size\x01\xa6fanout\x04\xa5depth\x05"
                              b"\xa5width\x08\xa5items\x90")]:
        status, body = cluster.internal(a, f"aae/{op}", raw=raw)
        assert status == 400 and body["error"] == "invalid", (op, body)
    status, body = cluster.internal(a, "aae/merge", {"items": [[key, bad_state]]})
    assert status == 400 and "state" in body["message"]
    assert cluster.copy_on(a, key) == before
    for path, payload in [("exchange", {"peer": "nobody:1"}), ("exchange", {"mode": "x"}),
                          ("exchange", {"partitions": [-1]}), ("schedule", {"interval_s": 0}),
                          ("schedule", {"bogus": 1}), ("schedule", {"keys_per_s": 1e-9}),
                          ("schedule", {"bytes_per_s": 10}), ("rebuild", {"partitions": "all"})]:
        status, body = cluster.json(a, "POST", f"/admin/v1/aae/{path}", payload)
        assert status == 400 and body["error"] == "invalid", (path, body)
    status, _, body = cluster.http(a, "POST", "/admin/v1/aae/exchange", b"[1, 2")
    assert status == 400


def test_kv_aae_status_and_exchange_report_what_happened(cluster) -> None:
    a, b, _ = cluster.names
    schedule(cluster, enabled=False)
    write_on(cluster, b, b"div-31", b"for the cli")

    def kv(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "antientropy.cli", "aae", *argv],
                              capture_output=True, text=True, timeout=120)

    done = kv("exchange", "--node", a, "--peer", b, "--json")
    assert done.returncode == 0, done.stderr
    (result,) = json.loads(done.stdout)["exchanges"]
    assert result["peer"] == b and result["repaired_here"] == 1
    text = kv("exchange", "--node", a, "--peer", b)
    assert text.returncode == 0 and "repaired 0 keys here, 0 there" in text.stdout
    status = kv("status", "--node", a)
    assert status.returncode == 0 and "totals:" in status.stdout and "PAUSED" in status.stdout
    doc = json.loads(kv("status", "--node", a, "--json").stdout)
    assert len(doc["partitions"]) == 256 and doc["totals"]["keys_repaired"] >= 1
    bad = kv("exchange", "--node", a, "--peer", "nobody:1")
    assert bad.returncode == 1 and "shares no partition" in bad.stderr
    schedule(cluster, **FAST)
