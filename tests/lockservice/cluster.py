"""Three real `lockservice.node` processes on free 127.0.0.1 ports, for the server tests.

`LockCluster` starts, SIGKILLs and restarts members and speaks the /lock/v1/ API with the
standard library (no client of ours in the way). `close()` kills every process it started;
the `lock_cluster` fixtures always call it. Data and logs live under the test's tmp dir.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.raft.procs import free_ports

TICK_MS = 20  # elections after 200-400 ms: failovers are quick in tests
REPO = Path(__file__).resolve().parents[2]


def call(port: int, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
         timeout: float = 30.0, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """One HTTP request; returns (status, JSON body or None). Raises OSError when down."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        conn.request(method, path, body=data, headers=headers or {})
        resp = conn.getresponse()
        text = resp.read()
        return resp.status, (json.loads(text) if text else None)
    finally:
        conn.close()


class LockCluster:
    def __init__(self, root: Path, n: int = 3, *, extra_args: tuple[str, ...] = ()) -> None:
        self.root = root
        self.extra_args = list(extra_args)  # more `lockservice.node` flags, e.g. --limit
        self.ids = list(range(1, n + 1))
        self.ports = dict(zip(self.ids, free_ports(n), strict=True))
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def peers(self) -> str:
        return ",".join(f"{i}=127.0.0.1:{p}" for i, p in self.ports.items())

    def start(self, member: int) -> None:
        self.spawn(member)
        self.wait_serving(member)

    def wait_serving(self, member: int) -> None:
        self.wait(lambda: self.try_call(member, "GET", "/lock/v1/leader")[0] == 200, 30,
                  f"member {member} to serve")

    def spawn(self, member: int) -> None:
        assert member not in self.procs or self.procs[member].poll() is not None
        args = [sys.executable, "-m", "lockservice.node", "--id", str(member),
                "--peers", self.peers, "--data", str(self.root / f"m{member}"),
                "--tick-ms", str(TICK_MS), "--log-level", "INFO", *self.extra_args]
        log = open(self.root / f"m{member}.log", "ab")  # noqa: SIM115 - the child owns it
        self.procs[member] = subprocess.Popen(
            args, stdout=log, stderr=log, cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        log.close()

    def start_all(self) -> None:
        for i in self.ids:  # all at once: interpreters start in parallel
            self.spawn(i)
        for i in self.ids:
            self.wait_serving(i)
        self.leader()

    def kill(self, member: int) -> None:
        proc = self.procs[member]
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def alive(self) -> list[int]:
        return [i for i, p in self.procs.items() if p.poll() is None]

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

    # -- HTTP ---------------------------------------------------------------------------

    def try_call(self, member: int, method: str, path: str, body: Any = None,
                 **kw: Any) -> tuple[int, Any]:
        try:
            return call(self.ports[member], method, path, body, **kw)
        except OSError:
            return 0, None

    def status(self, member: int) -> dict[str, Any] | None:
        code, body = self.try_call(member, "GET", "/lock/v1/status", timeout=5)
        return body if code == 200 else None

    def leader(self, timeout: float = 30) -> int:
        """The one member that leads and has granted fresh leases."""
        found: list[int] = []

        def one() -> bool:
            ready = [i for i in self.alive() if (s := self.status(i)) and s["ready_leader"]]
            found[:] = ready
            return len(ready) == 1

        self.wait(one, timeout, "one ready leader")
        return found[0]

    def followers(self) -> list[int]:
        lead = self.leader()
        return [i for i in self.alive() if i != lead]

    def request(self, method: str, path: str, body: Any = None, *, ok: tuple[int, ...],
                timeout: float = 30) -> tuple[int, Any]:
        """Send to any live member until the answer is not a 503 or a dropped connection;
        assert its status is in `ok`."""
        deadline = time.monotonic() + timeout
        while True:
            for member in self.alive():
                code, reply = self.try_call(member, method, path, body)
                if code not in (0, 503):
                    assert code in ok, (code, reply)
                    return code, reply
            assert time.monotonic() < deadline, f"{method} {path}: only 503s for {timeout}s"
            time.sleep(0.05)

    def open_session(self, ttl_ms: int) -> int:
        return self.request("POST", "/lock/v1/sessions", {"ttl_ms": ttl_ms}, ok=(201,))[1][
            "session"]

    def acquire(self, session: int, name: str, **fields: Any) -> tuple[int, Any]:
        return self.request("POST", f"/lock/v1/locks/{name}/acquire",
                            {"session": session, **fields}, ok=(200, 409))

    def lock_info(self, name: str) -> dict[str, Any]:
        return self.request("GET", f"/lock/v1/locks/{name}", ok=(200,))[1]

    @staticmethod
    def wait(cond: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond():
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@contextmanager
def running_cluster(root: Path, *, extra_args: tuple[str, ...] = ()) -> Iterator[LockCluster]:
    cluster = LockCluster(root, extra_args=extra_args)
    try:
        cluster.start_all()
        yield cluster
    finally:
        cluster.close()
