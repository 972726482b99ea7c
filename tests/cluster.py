"""Real ringlock node processes for tests: start N on free 127.0.0.1 ports, stop them always.

Usage (a module-scoped fixture shares one cluster between the tests of a file):

    @pytest.fixture(scope="module")
    def cluster(tmp_path_factory):
        with Cluster(tmp_path_factory.mktemp("cluster"), size=3) as c:
            yield c

- `Cluster.start()` starts the first node (a new cluster), then the others with
  `--join <first>`, waits for each one's ready line (`ringlock node NAME ready` on stderr,
  which goes to `ROOT/<port>.log`), then until every node sees every member alive in one
  converged ring. `stop()` (also on leaving the `with`) sends SIGTERM to every node that
  runs and SIGKILL to any still running `STOP_S` later, so no test leaves a process behind.
- A `NodeProcess` can be stopped (`stop()`, SIGTERM), killed (`kill()`, SIGKILL) and
  started again on the same port and data folder (`start()`, then `wait_ready()`). A node
  gets SIGTERM when the thread that started it ends (Linux PR_SET_PDEATHSIG: not even a
  SIGKILLed pytest leaves nodes behind), so start nodes from the main thread.
- Requests: `http(node, method, path, body, headers)` for the public API and
  `/admin/v1/...` (answers status, headers, body bytes), `json(...)` for JSON answers,
  `internal(node, op, fields)` for the msgpack internal API (answers status and the
  decoded map). All synchronous, with a timeout.
- The processes run `kv serve` (`python -m kvstore.cli serve`, so the interpreter running
  the tests runs the nodes) with the flags of kvstore/config.py; `extra_args` are added to
  every node's command line. With `lock_voters=k` the first k nodes are lock-service
  voters (`--lock-id 1..k`) and every node gets `--lock-peers` naming them
  (`Cluster.lock_peers`).
- With `tls=True` the cluster makes its certificates under `ROOT/certs` (kvstore/certs.py:
  a CA, a node certificate per name, a client certificate `client-test`), starts every node
  with `--tls-cert/--tls-key/--tls-ca`, and its requests go over HTTPS presenting the first
  node's certificate (so `internal()` passes the peer-route check); `tls_dir` names the folder.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import json as jsonlib
import os
import random
import signal
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import msgpack

from kvstore import certs, tls, vclock
from kvstore.ring import partition_of
from kvstore.vclock import SiblingSet
from tests.waiting import wait_until

READY_S = 120.0  # a node's start, or a cluster's convergence, on a loaded 2-core machine
STOP_S = 10.0  # SIGTERM, then SIGKILL after this long
REQUEST_S = 30.0
PR_SET_PDEATHSIG = 1  # linux/prctl.h
PORT_RANGE = (20_000, 32_768)  # below the ephemeral range; see free_ports


def free_ports(count: int) -> list[int]:
    """`count` distinct ports that were free on 127.0.0.1 a moment ago.

    Drawn at random below the kernel's ephemeral range (32768 and up on Linux), where the
    source ports of the many client connections on a busy test machine are taken from,
    so a port chosen here is not grabbed by someone's outgoing connection before the node
    binds it (bind(0) would hand out exactly such a port).
    """
    rng = random.SystemRandom()
    ports: list[int] = []
    while len(ports) < count:
        port = rng.randrange(*PORT_RANGE)
        if port in ports:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
    return ports


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it if the test process dies without cleaning up
    (Linux PR_SET_PDEATHSIG), so not even a SIGKILLed pytest leaves nodes behind."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class NodeProcess:
    """One `kv serve` process (as `python -m kvstore.cli serve`) with its own data folder
    and log file."""

    def __init__(self, name: str, root: Path, args: list[str]) -> None:
        self.name = name
        self.port = int(name.rsplit(":", 1)[1])
        self.data = root / f"node-{self.port}"
        self.log = root / f"{self.port}.log"
        self.args = args
        self.proc: subprocess.Popen | None = None
        self._log_offset = 0

    def start(self, join: str | None = None) -> None:
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        cmd = [sys.executable, "-m", "kvstore.cli", "serve", "--name", self.name,
               "--data", str(self.data), *self.args]
        if join:
            cmd += ["--join", join]
        self._log_offset = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=log,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1"},
                                         preexec_fn=_die_with_parent)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        """What this run of the process wrote to stderr so far."""
        with open(self.log, "rb") as f:
            f.seek(self._log_offset)
            return f.read().decode("utf-8", "replace")

    def wait_ready(self, timeout: float = READY_S) -> None:
        line = f"ringlock node {self.name} ready"
        ok = wait_until(lambda: line in self.output() or not self.running, timeout, 0.05)
        if not ok or line not in self.output():
            raise RuntimeError(f"{self.name} did not get ready (exit code "
                               f"{self.proc.poll() if self.proc else None}):\n"
                               f"{self.output()[-4000:]}")

    def stop(self, timeout: float = STOP_S) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; the exit code (None if never started)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Cluster:
    """`size` real nodes on 127.0.0.1 under `root`; see the module docstring."""

    def __init__(self, root: Path, size: int = 3, extra_args: list[str] | None = None, *,
                 lock_voters: int = 0, tls: bool = False) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        # Sorted, so the seed has the lowest name: it is the claimant for every join (a
        # joiner named lower than the seed could be asked to claim while it still joins).
        self.names = sorted(f"127.0.0.1:{port}" for port in free_ports(size))
        self.lock_peers = {i + 1: name for i, name in enumerate(self.names[:lock_voters])}
        peers = ",".join(f"{i}={name}" for i, name in self.lock_peers.items())
        self.tls_dir, self.ssl_context = (self._make_certs() if tls else (None, None))
        self.nodes = []
        for i, name in enumerate(self.names):
            args = list(extra_args or [])
            if lock_voters:
                args += ["--lock-peers", peers]
                if i < lock_voters:
                    args += ["--lock-id", str(i + 1)]
            if self.tls_dir is not None:
                stem = self.tls_dir / certs.node_stem(name)
                args += ["--tls-cert", f"{stem}.crt", "--tls-key", f"{stem}.key",
                         "--tls-ca", str(self.tls_dir / "ca.crt")]
            self.nodes.append(NodeProcess(name, self.root, args))

    def _make_certs(self) -> tuple[Path, ssl.SSLContext]:
        folder = self.root / "certs"
        certs.init(folder, self.names, ["test"], force=True)
        first = folder / certs.node_stem(self.names[0])
        return folder, tls.client_context(folder / "ca.crt", f"{first}.crt", f"{first}.key")

    def __enter__(self) -> Cluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __getitem__(self, index: int) -> NodeProcess:
        return self.nodes[index]

    def start(self) -> None:
        first, rest = self.nodes[0], self.nodes[1:]
        first.start()
        first.wait_ready()
        for node in rest:
            node.start(join=first.name)
        for node in rest:
            node.wait_ready()
        self.wait_converged()

    def stop(self) -> None:
        for node in self.nodes:
            if node.running:
                node.proc.send_signal(signal.SIGTERM)
        for node in self.nodes:
            node.stop()

    # -- waiting ---------------------------------------------------------------------------

    def members_view(self, node: str) -> dict | None:
        with contextlib.suppress(OSError, ValueError):
            status, body = self.json(node, "GET", "/admin/v1/members")
            if status == 200:
                return body
        return None

    def wait_converged(self, nodes: list[str] | None = None, timeout: float = READY_S) -> None:
        """Until each running node sees `nodes` (default: all) as live members of one ring."""
        want = set(nodes or self.names)

        def settled() -> bool:
            versions = set()
            for node in self.nodes:
                if not node.running:
                    continue
                view = self.members_view(node.name)
                if not view or not view.get("converged"):
                    return False
                live = {m for m, s in view["members"].items() if s["member"] and s["alive"]}
                if live != want:
                    return False
                versions.add(view["ring_version"])
            return len(versions) == 1
        if not wait_until(settled, timeout, 0.1):
            views = {n.name: self.members_view(n.name) for n in self.nodes if n.running}
            raise RuntimeError(f"cluster did not converge on {sorted(want)}: {views}")

    def wait_alive(self, observer: str, node: str, alive: bool = True,
                   timeout: float = READY_S) -> None:
        """Until `observer`'s failure detector calls `node` alive (or down)."""
        def seen() -> bool:
            view = self.members_view(observer)
            return bool(view) and view["members"].get(node, {}).get("alive") == alive
        if not wait_until(seen, timeout, 0.05):
            raise RuntimeError(f"{observer} never saw {node} alive={alive}")

    # -- requests --------------------------------------------------------------------------

    def http(self, node: str, method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None,
             timeout: float = REQUEST_S) -> tuple[int, dict[str, str], bytes]:
        host, port = node.rsplit(":", 1)
        conn = (http.client.HTTPConnection(host, int(port), timeout=timeout)
                if self.ssl_context is None else
                http.client.HTTPSConnection(host, int(port), timeout=timeout,
                                            context=self.ssl_context))
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, dict(resp.getheaders()), resp.read()
        finally:
            conn.close()

    def json(self, node: str, method: str, path: str, payload: object = None,
             headers: dict[str, str] | None = None) -> tuple[int, object]:
        body = None if payload is None else jsonlib.dumps(payload).encode()
        status, _, data = self.http(node, method, path, body,
                                    {"Content-Type": "application/json", **(headers or {})})
        return status, jsonlib.loads(data) if data else None

    def internal(self, node: str, op: str, fields: dict | None = None,
                 raw: bytes | None = None) -> tuple[int, dict]:
        body = raw if raw is not None else msgpack.packb(fields or {}, use_bin_type=True)
        status, _, data = self.http(node, "POST", f"/internal/v1/{op}", body,
                                    {"Content-Type": "application/x-msgpack"})
        return status, msgpack.unpackb(data, raw=False) if data else {}

    def copy_on(self, node: str, key: bytes) -> SiblingSet:
        """`node`'s own copy of `key` (its replica state synced with hints it holds)."""
        status, body = self.internal(node, "get", {"key": key})
        if status != 200:
            raise AssertionError(f"internal get on {node}: {status} {body}")
        return vclock.decode(body["state"])

    def status_of(self, node: str) -> dict:
        status, body = self.internal(node, "status")
        if status != 200:
            raise AssertionError(f"internal status on {node}: {status} {body}")
        return body

    def preference_list(self, key: bytes, n: int = 3, via: str | None = None) -> list[str]:
        """The key's N primaries under the ring `via` (default: the first node) serves."""
        status, ring = self.json(via or self.names[0], "GET", "/ring")
        assert status == 200, ring
        owners, first = ring["owners"], partition_of(key, ring["ring_size"])
        walk: list[str] = []
        for step in range(len(owners)):
            owner = owners[(first + step) % len(owners)]
            if owner not in walk:
                walk.append(owner)
        return walk[:n]

    def node(self, name: str) -> NodeProcess:
        return next(n for n in self.nodes if n.name == name)


def wait_for(predicate, timeout: float = READY_S, what: str = "condition") -> None:
    """`wait_until` that raises AssertionError naming `what` when the time runs out."""
    if not wait_until(predicate, timeout, 0.05):
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")
