"""ZooKeeper 3.8 as a benchmark target: the ensemble (through ../shared/anchors/zookeeper.sh)
and a kazoo lock workload for the load generator.

- `ZkCluster`: start3 (wiping old data first when nothing runs), pids, the leader (the
  member whose `srvr` says "Mode: leader"), SIGKILL a member by the pid zookeeper.sh
  recorded, stop (only when this process started it).
- `ZkLock`: one KazooClient (one ZooKeeper session, 10 s timeout) per client, spread over
  the members as kazoo does, and a `kazoo.recipe.lock.Lock` per name; a cycle is
  `acquire(timeout=...)` then `release()`. kazoo is synchronous, so each client is a
  thread (`ThreadWorkload`); the load generator spreads them over processes. The order key
  is the lock node's sequence number, i.e. the enqueue order (the recipe's FIFO queue).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.loadgen import Outcome, ThreadWorkload

ZK_SH = str(Path(__file__).resolve().parents[2] / "shared" / "anchors" / "zookeeper.sh")
ZK_DIR = os.environ.get("ZK_ANCHOR_DIR", "/tmp/zk-anchor")
MEMBERS = {"m1": 22181, "m2": 22281, "m3": 22381}
HOLDER = -1  # the client id of the session that holds one lock across a failover


def four_letter(port: int, word: str = "srvr", timeout: float = 2.0) -> str:
    """A ZooKeeper four-letter-word reply ('' when the member does not answer)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(word.encode())
            chunks = []
            while data := s.recv(4096):
                chunks.append(data)
            return b"".join(chunks).decode(errors="replace")
    except OSError:
        return ""


class ZkCluster:
    """A 3-member ZooKeeper ensemble on 127.0.0.1 via zookeeper.sh."""

    name = "zookeeper"

    def __init__(self) -> None:
        self.started_here = False

    def hosts(self) -> str:
        return ",".join(f"127.0.0.1:{p}" for p in MEMBERS.values())

    def pid_of(self, member: str) -> int | None:
        try:
            pid = int(Path(ZK_DIR, f"{member}.pid").read_text())
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError):
            return None

    def pids(self) -> list[int]:
        return [p for m in MEMBERS if (p := self.pid_of(m)) is not None]

    def start(self, fresh: bool = True) -> None:
        if not self.pids():
            self.started_here = True
            if fresh:
                subprocess.run([ZK_SH, "wipe"], check=True, capture_output=True)
        subprocess.run([ZK_SH, "start3"], check=True, capture_output=True, timeout=180)
        deadline = time.monotonic() + 60
        while self.leader() is None:
            if time.monotonic() > deadline:
                raise RuntimeError("zookeeper: no leader")
            time.sleep(0.2)

    def leader(self) -> str | None:
        for m, port in MEMBERS.items():
            if "Mode: leader" in four_letter(port):
                return m
        return None

    def kill_leader(self) -> dict[str, Any]:
        member = self.leader()
        pid = self.pid_of(member) if member else None
        if pid is None:
            raise RuntimeError("zookeeper: no leader to kill")
        at = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        return {"killed": member, "at": at}

    def stop(self) -> None:
        if self.started_here:
            subprocess.run([ZK_SH, "stop"], capture_output=True, timeout=120)
            self.started_here = False


class ZkLock(ThreadWorkload):
    """kazoo lock cycles; params: hosts, mode ("distinct" | "contended"), ttl_ms (session
    timeout), wait_ms (acquire timeout), run."""

    order_means = "enqueue"

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.hosts: str = params["hosts"]
        self.mode: str = params.get("mode", "distinct")
        self.ttl_s = int(params.get("ttl_ms", 10_000)) / 1000
        self.wait_s = int(params.get("wait_ms", 10_000)) / 1000
        self.run_tag = str(params.get("run", "0"))
        self.clients: dict[int, Any] = {}
        self.locks: dict[int, Any] = {}
        self.lost: list[int] = []
        self.holder_kept: bool | None = None

    def lock_path(self, cid: int) -> str:
        if self.mode == "contended":
            return f"/bench/{self.run_tag}/one"
        return f"/bench/{self.run_tag}/{cid}"

    def setup(self, client_ids: list[int]) -> None:
        import logging

        from kazoo.client import KazooClient, KazooState
        from kazoo.recipe.lock import Lock

        logging.getLogger("kazoo").setLevel(logging.CRITICAL)
        holder = [HOLDER] if self.params.get("holder") and 0 in client_ids else []
        for cid in [*client_ids, *holder]:
            zk = KazooClient(hosts=self.hosts, timeout=self.ttl_s, randomize_hosts=True)
            zk.start(timeout=30)

            def listener(state: Any, cid: int = cid) -> None:
                if state == KazooState.LOST:
                    self.lost.append(cid)

            zk.add_listener(listener)
            self.clients[cid] = zk
            path = f"/bench/{self.run_tag}/held" if cid == HOLDER else self.lock_path(cid)
            self.locks[cid] = Lock(zk, path, identifier=str(cid))
        if holder:
            if not self.locks[HOLDER].acquire(timeout=30):
                raise RuntimeError("zookeeper: the holder did not get its lock")
            self.holder_kept = False

    def op(self, cid: int, i: int) -> Outcome:
        lock = self.locks[cid]
        t0 = time.perf_counter()
        if not lock.acquire(timeout=self.wait_s):
            raise TimeoutError("zookeeper lock not acquired in time")
        t1 = time.perf_counter()
        node = lock.node or ""
        seq = float(node.rsplit("__lock__", 1)[-1]) if "__lock__" in node else None
        lock.release()
        return Outcome("cycle", (("acquire", (t1 - t0) * 1000),), seq)

    def teardown(self) -> None:
        if self.holder_kept is not None:
            lock = self.locks[HOLDER]
            with contextlib.suppress(Exception):
                node = f"{lock.path}/{lock.node}"
                self.holder_kept = (HOLDER not in self.lost and lock.is_acquired
                                    and self.clients[HOLDER].exists(node) is not None)
        for zk in self.clients.values():
            with contextlib.suppress(Exception):
                zk.stop()
                zk.close()

    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = {"sessions_lost": len(self.lost)}
        if self.holder_kept is not None:
            out["holder_kept"] = self.holder_kept
        return out
