"""Progress of the long `kv` operations, end to end on real node processes.

One story: `kv cluster up --progress` (nodes started, joined, ring formed, lock leader
agreed), a load, `kv aae rebuild --wait` (trees rebuilt), `kv aae status --watch` (every
shared partition exchanged again, Dynamo §4.7), then a node of a second cluster
joins with `kv cluster join --wait` and leaves with `kv cluster leave --wait` (Dynamo
§4.9: partitions transferred, counted from every node's transfers status). The bars'
final lines are on stderr (log-style lines: stderr is a pipe here) and stdout holds only
the commands' results. After each --wait the hand-off is really over: every node owes
nothing, and every key still reads back.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from kvstore.cli import main
from kvstore.client import Client
from tests.kvstore.api_cluster import free_base_port, request, running_cluster


def kv(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[str]:
    out = subprocess.run([sys.executable, "-m", "kvstore.cli", *args], input=stdin,
                         capture_output=True, timeout=300)
    return subprocess.CompletedProcess(out.args, out.returncode, out.stdout.decode(),
                                       out.stderr.decode())


def final_lines(stderr: str) -> dict[str, str]:
    """The last line each bar printed, by its label."""
    return {line.split(":", 1)[0]: line for line in stderr.splitlines() if ": " in line}


def members(node: str) -> dict:
    with Client([node]) as c:
        return c.admin("members")


def test_cluster_up_load_rebuild_join_and_leave_show_progress(tmp_path: Path, capsys) -> None:
    folder, port = tmp_path / "a", free_base_port(2)
    names = [f"127.0.0.1:{port}", f"127.0.0.1:{port + 1}"]
    where = ("--dir", str(folder))
    try:
        up = kv("cluster", "up", *where, "--nodes", "2", "--base-port", str(port),
                "--progress")
        assert up.returncode == 0, up.stdout + up.stderr
        bars = final_lines(up.stderr)
        for label in ("nodes started", "nodes joined", "ring formed"):
            assert bars[label].startswith(f"{label}: 100%") and "2/2 nodes" in bars[label]
        assert "lock leader agreed: 100%" in up.stderr
        assert "100%" not in up.stdout and "cluster ready: " in up.stdout

        data = "".join(f"key-{i}\tvalue-{i}\n" for i in range(200)).encode()
        load = kv("load", "-", "--node", names[0], stdin=data)
        assert load.returncode == 0 and load.stdout.startswith("loaded 200, failed 0")

        rebuild = kv("aae", "rebuild", "--wait", "--progress", "--node", names[0], "--json")
        assert rebuild.returncode == 0, rebuild.stderr
        doc = json.loads(rebuild.stdout)
        assert doc["rebuilt"] > 0 and doc["trees"]["pending"] == 0
        last = rebuild.stderr.splitlines()[-1]
        assert last.startswith("trees rebuilt: 100%") and f"{doc['rebuilt']}/" in last

        def schedule(**settings: object) -> None:
            status, _, _ = request(names[0], "POST", "/admin/v1/aae/schedule",
                                   json.dumps(settings).encode(),
                                   {"Content-Type": "application/json"})
            assert status == 200

        schedule(enabled=False)  # paused: a watch would wait forever, so it says so
        assert main(["aae", "status", "--watch", "--node", names[0]]) == 1
        assert "exchanges are paused" in capsys.readouterr().err
        schedule(enabled=True, interval_s=0.2)
        watch = kv("aae", "status", "--watch", "--progress", "--node", names[0], "--json")
        assert watch.returncode == 0, watch.stderr
        doc = json.loads(watch.stdout)
        assert doc["partitions"] and doc["trees"]["pending"] == 0
        assert all(row["last_exchange"] is not None for row in doc["partitions"].values())
        bars = final_lines(watch.stderr)
        shared = len(doc["partitions"])
        assert bars["partitions exchanged"].startswith("partitions exchanged: 100%")
        assert f"{shared}/{shared} partitions" in bars["partitions exchanged"]
        assert bars["trees ready"].startswith("trees ready: 100%")

        with running_cluster(tmp_path / "b", nodes=1) as b:
            newcomer = b.names[0]
            join = kv("cluster", "join", names[0], "--node", newcomer, "--wait", "--progress")
            assert join.returncode == 0, join.stderr
            assert f"{newcomer}: up" in join.stdout and "converged True" in join.stdout
            last = join.stderr.splitlines()[-1]
            assert last.startswith("partitions transferred: 100%"), join.stderr
            owed = 0
            for node in [*names, newcomer]:  # settled means settled: nothing owed anywhere
                t = members(node)["transfers"]
                assert t["pending"] == 0 and t["base_version"] is None
                assert t["partitions_done"] == t["partitions_owed"]
                owed += t["partitions_owed"]
            assert owed > 0 and f"{owed}/{owed} partitions" in last
            assert members(newcomer)["members"][newcomer]["partitions"] > 0

            leave = kv("cluster", "leave", "--node", newcomer, "--wait", "--progress",
                       "--json")
            assert leave.returncode == 0, leave.stderr
            assert json.loads(leave.stdout)["status"] == "left"
            assert leave.stderr.splitlines()[-1].startswith("partitions transferred: 100%")
            assert members(newcomer)["transfers"]["pending"] == 0
            with Client(names) as c:
                assert {m["name"] for m in c.ring()["members"]} == set(names)
                for i in range(0, 200, 7):
                    assert c.get(f"key-{i}".encode()).values == [f"value-{i}".encode()]
    finally:
        kv("cluster", "down", *where)


def test_wait_options_are_refused_where_they_mean_nothing() -> None:
    got = kv("cluster", "members", "--wait")
    assert got.returncode == 2 and "unrecognized arguments: --wait" in got.stderr
