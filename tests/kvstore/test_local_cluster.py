"""`kv cluster up|down|status` (kvstore/local_cluster.py) with real node processes.

One story on the default 5-node cluster (3 lock members): up with progress, status, data
through it, a fenced write refused (Chubby §2.4 sequencers), four nodes crash, a write
that cannot reach W says it may have been applied (Dynamo §4.5 / DESIGN "Put"), up
restarts the crashed nodes with their data, down stops every process. Then the failure
paths: a port in use, a node that cannot start, a damaged folder, a reused pid.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from kvstore.cli import main
from kvstore.client import Client
from kvstore.errors import QuorumFailed
from kvstore.local_cluster import ClusterError, LocalCluster, serve_flags
from kvstore.ring import partition_of
from lockservice.sequencer import LockMode, Sequencer
from tests.kvstore.api_cluster import error_of, free_base_port, request, running_cluster
from tests.waiting import wait_until


def kv(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kvstore.cli", *args], capture_output=True,
                          text=True, timeout=300)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_up_status_crash_restart_down(tmp_path: Path) -> None:
    folder, port = tmp_path / "c", free_base_port(5)
    names = [f"127.0.0.1:{port + i}" for i in range(5)]
    where = ("--dir", str(folder))
    try:
        up = kv("cluster", "up", *where, "--base-port", str(port))
        assert up.returncode == 0, up.stdout + up.stderr
        assert f"starting a 5-node cluster in {folder}" in up.stdout
        assert "ring formed: 5 members on every node" in up.stdout
        assert all(f"node {n} is ready" in up.stdout for n in names)
        if "--lock-id" in serve_flags():
            assert up.stdout.count("(lock member)") == 3
        pids = [int((folder / f"node{i}.pid").read_text()) for i in range(1, 6)]
        assert all(alive(p) for p in pids) and all((folder / f"node{i}.log").exists()
                                                   for i in range(1, 6))
        status = kv("cluster", "status", *where)
        assert status.returncode == 0 and "5 of 5 nodes ready" in status.stdout

        assert kv("put", "--node", names[0], "kept", "across restarts").returncode == 0
        ring = kv("ring", "--node", names[4])
        assert ring.returncode == 0 and "5 members" in ring.stdout

        if "--lock-id" in serve_flags():  # a sequencer nobody holds: refused, nothing written
            token = Sequencer("jobs", LockMode.EXCLUSIVE, 9, 9).to_token()
            fenced = {"X-Ringlock-Sequencer": token}
            assert wait_until(lambda: request(names[1], "PUT", "/kv/kept", b"x", fenced)[0]
                              == 409, timeout=60)
            assert error_of(request(names[1], "PUT", "/kv/kept", b"x", fenced))["error"] == \
                "sequencer_rejected"
            fencing_with_a_real_lock(names)

        for pid in pids[1:]:  # four nodes crash
            os.kill(pid, signal.SIGKILL)
        assert wait_until(lambda: not any(alive(p) for p in pids[1:]))
        status = kv("cluster", "status", *where)
        assert status.returncode == 3 and "1 of 5 nodes ready" in status.stdout
        assert status.stdout.count("stopped") == 4
        with Client([names[0]]) as one, pytest.raises(QuorumFailed) as caught:
            one.put(b"kept", b"cannot reach w=2", w=2, timeout=2)
        assert caught.value.indeterminate  # node 1 may have stored it: say so

        again = kv("cluster", "up", *where)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "restarting a 5-node cluster" in again.stdout
        assert "that layout is kept" in again.stderr  # saved ports, not the default 7001
        assert "started node 1/5" not in again.stdout  # node 1 was still running
        got = kv("get", "--json", "--node", names[4], "kept")
        assert "across restarts" in json.loads(got.stdout)["text"]

        down = kv("cluster", "down", *where)
        assert down.returncode == 0 and "stopped 5 nodes" in down.stdout
        new_pids = [int(line.split("pid ")[1].rstrip(")")) for line in down.stdout.splitlines()
                    if "(pid " in line]
        assert len(new_pids) == 5 and not any(alive(p) for p in new_pids)
        assert not list(folder.glob("*.pid"))
        after = kv("cluster", "status", *where)
        assert after.returncode == 3 and after.stdout.count("stopped") == 5
    finally:
        LocalCluster(folder).down()


def fencing_with_a_real_lock(names: list[str]) -> None:
    """Chubby §2.4: a write carrying the holder's sequencer lands while the lock is held;
    after the release the same sequencer is refused and the value stays."""
    def call(path: str, body: dict) -> tuple[int, dict]:
        status, _h, raw = request(names[2], "POST", path, json.dumps(body).encode(),
                                  {"Content-Type": "application/json"})
        return status, json.loads(raw) if raw else {}

    status, session = call("/lock/v1/sessions", {"ttl_ms": 10000})
    assert status == 201, session
    sid = session["session"]
    status, held = call("/lock/v1/locks/jobs/acquire",
                        {"session": sid, "mode": "exclusive", "wait_ms": 0})
    assert status == 200, held
    fenced = {"X-Ringlock-Sequencer": held["sequencer"]}
    assert request(names[3], "PUT", "/kv/fenced", b"by the holder", fenced)[0] == 204
    assert call("/lock/v1/locks/jobs/release", {"session": sid})[0] == 204
    # The node the holder called and the key's first primary (which coordinated the
    # forwarded write) checked this sequencer and may keep "current" for up to 0.5 s
    # (lockservice/fencing.py's documented trade-off); ask a node that never saw it.
    ring = json.loads(request(names[0], "GET", "/ring")[2])
    coordinator = ring["owners"][partition_of(b"fenced", ring["ring_size"])]
    fresh = next(n for n in names if n not in (names[3], coordinator))
    stale = request(fresh, "PUT", "/kv/fenced", b"stale", fenced)
    assert stale[0] == 409 and error_of(stale)["error"] == "sequencer_rejected"
    assert request(names[0], "GET", "/kv/fenced")[2] == b"by the holder"


def test_a_port_in_use_is_named_and_nothing_starts(tmp_path: Path) -> None:
    port = free_base_port(2)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port + 1))
        busy.listen()
        cluster = LocalCluster(tmp_path / "c", nodes=2, base_port=port)
        with pytest.raises(ClusterError, match=f"port {port + 1} .* --base-port"):
            cluster.up()
        out = kv("cluster", "up", "--dir", str(tmp_path / "d"), "--nodes", "2",
                 "--base-port", str(port))
        assert out.returncode == 1 and "Traceback" not in out.stderr
        assert f"kv cluster up: port {port + 1} on 127.0.0.1 is in use" in out.stderr
    assert not list((tmp_path / "c").glob("*.pid")) and not list((tmp_path / "d").glob("*.pid"))


def test_a_node_that_cannot_start_is_reported_with_its_log(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path / "c", nodes=1, base_port=free_base_port(1),
                           lock_members=0, serve_args=("--ring-size", "3"))
    try:
        with pytest.raises(ClusterError, match="exited during startup") as caught:
            cluster.up(timeout=60)
        assert "ring-size" in str(caught.value)  # the log's last lines say why
    finally:
        cluster.down()


def test_commands_on_a_folder_without_a_cluster_fail_clearly(tmp_path: Path) -> None:
    for verb in ("down", "status"):
        out = kv("cluster", verb, "--dir", str(tmp_path / "none"))
        assert out.returncode == 1 and "no cluster in" in out.stderr
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "cluster.json").write_text("{not json")
    out = kv("cluster", "status", "--dir", str(tmp_path / "bad"))
    assert out.returncode == 1 and "damaged" in out.stderr and "Traceback" not in out.stderr


def test_a_pid_file_naming_another_process_is_never_signalled(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path / "c", nodes=1, base_port=free_base_port(1))
    cluster.folder.mkdir(parents=True)
    (cluster.folder / "cluster.json").write_text(json.dumps(
        {"host": "127.0.0.1", "base_port": cluster.base_port, "nodes": cluster.names,
         "lock_members": 0}))
    (cluster.folder / "node1.pid").write_text(f"{os.getpid()}\n")  # a reused pid: us
    assert [s.pid for s in cluster.status()] == [None]
    assert cluster.down() == 0  # and we are still here


def test_membership_commands_join_leave_and_refuse(tmp_path: Path, capsys) -> None:
    """`kv cluster join|members|leave|remove` against real nodes (Dynamo §4.8.1: an
    operator issues membership changes explicitly). In-process `main` for speed."""
    def run(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    with running_cluster(tmp_path / "a", nodes=2) as a, \
            running_cluster(tmp_path / "b", nodes=1) as b, Client([a.names[0]]) as seed_client:
        seed, newcomer = a.names[0], b.names[0]
        code, out, err = run("cluster", "join", seed, "--node", newcomer)
        assert code == 0, err
        assert wait_until(lambda: newcomer in seed_client.admin("members")["members"])
        code, out, _ = run("cluster", "members", "--node", seed)
        assert code == 0 and newcomer in out and "up" in out
        code, _, err = run("cluster", "remove", a.names[1], "--node", seed)
        assert code == 1 and "is alive" in err and "Traceback" not in err
        code, out, _ = run("cluster", "leave", "--node", newcomer)
        assert code == 0 and "is leaving" in out
        assert wait_until(lambda: {m["name"] for m in seed_client.ring()["members"]}
                          == set(a.names))
