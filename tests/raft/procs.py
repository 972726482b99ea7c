"""Real `raft.demo_node` processes on 127.0.0.1 for the cluster and hostile-input tests.

`ProcCluster` starts, SIGKILLs and restarts node processes, and talks to them over HTTP with
the standard library (no client of ours in the way). Every process it starts is killed in
`close()`; tests use it through a fixture that always calls it.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

TICK_MS = 20  # fast elections for tests: timeouts of 200-400 ms
ELECTION_TICKS = 10


def free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def request(port: int, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None, timeout: float = 3.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()



class ProcCluster:
    def __init__(self, root: Path, ids: list[int], *, voters: list[int] | None = None,
                 snapshot_threshold: int = 10_000, fsync: bool = True) -> None:
        self.root = root
        self.ids = ids
        self.voters = voters or ids
        self.ports = dict(zip(ids, free_ports(len(ids)), strict=True))
        self.snapshot_threshold = snapshot_threshold
        self.fsync = fsync
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def peers_arg(self) -> str:
        return ",".join(f"{i}=127.0.0.1:{p}" for i, p in self.ports.items())

    def start(self, node: int, *, join: bool = False) -> None:
        assert node not in self.procs or self.procs[node].poll() is not None
        args = [
            sys.executable, "-m", "raft.demo_node", "--id", str(node),
            "--peers", self.peers_arg, "--voters", ",".join(map(str, self.voters)),
            "--data", str(self.root / f"n{node}"),
            "--snapshot-threshold", str(self.snapshot_threshold),
            "--tick-ms", str(TICK_MS), "--election-ticks", str(ELECTION_TICKS),
            "--log-level", "WARNING",
        ]
        if join:
            args.append("--join")
        if not self.fsync:
            args.append("--no-fsync")
        log = open(self.root / f"n{node}.log", "ab")  # noqa: SIM115 - the child owns it
        self.procs[node] = subprocess.Popen(args, stdout=log, stderr=log, cwd=self.root,
                                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        log.close()
        self.wait(lambda: self.status(node) is not None, 20, f"node {node} to listen")

    def start_all(self) -> None:
        for i in self.voters:
            self.start(i)

    def kill(self, node: int) -> None:
        proc = self.procs[node]
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def alive(self) -> list[int]:
        return [i for i, p in self.procs.items() if p.poll() is None]

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs.values():
            proc.wait(10)

    # -- HTTP ---------------------------------------------------------------------------

    def status(self, node: int) -> dict[str, Any] | None:
        try:
            code, body = request(self.ports[node], "GET", "/status", timeout=2)
        except OSError:
            return None
        return json.loads(body) if code == 200 else None

    def dump(self, node: int) -> dict[str, Any]:
        code, body = request(self.ports[node], "GET", "/dump")
        assert code == 200
        return json.loads(body)

    def leader(self, timeout: float = 20) -> int:
        found: list[int] = []

        def one() -> bool:
            leaders = {s["id"] for i in self.alive() if (s := self.status(i)) and s["is_leader"]}
            if len(leaders) == 1:
                found[:] = list(leaders)
                return True
            return False

        self.wait(one, timeout, "one leader")
        return found[0]

    def propose(self, key: str, value: Any, timeout: float = 30) -> Any:
        """Put key=value, following leader hints and retrying until it is acknowledged."""
        deadline = time.monotonic() + timeout
        target = None
        body = json.dumps({"key": key, "value": value}).encode()
        while time.monotonic() < deadline:
            nodes = [target] if target in self.alive() else self.alive()
            target = None
            for node in nodes:
                try:
                    code, raw = request(self.ports[node], "POST", "/propose", body, timeout=5)
                except OSError:
                    continue
                reply = json.loads(raw)
                if code == 200:
                    return reply["result"]
                if code == 421 and reply.get("leader_id"):
                    target = reply["leader_id"]
                    break
                if code == 503 and reply.get("may_have_applied"):
                    # Outcome unknown: a retry may apply it twice; puts are idempotent here.
                    break
            if target is None:
                time.sleep(0.05)
        raise AssertionError(f"put {key} not acknowledged within {timeout}s")

    def change(self, action: str, node: int, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        body = json.dumps({"action": action, "id": node}).encode()
        while time.monotonic() < deadline:
            leader = self.leader()
            code, raw = request(self.ports[leader], "POST", "/members", body, timeout=10)
            if code == 200:
                return json.loads(raw)
            time.sleep(0.1)  # not leader any more, or the previous change is in flight
        raise AssertionError(f"{action} {node} did not complete within {timeout}s")

    @staticmethod
    def wait(cond: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond():
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}")
