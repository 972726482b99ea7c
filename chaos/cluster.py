"""The cluster under test: real node processes, each on its own loopback address.

Theory of operation. Node i (a `kv serve` process) listens on 127.0.0.(10+i) at one shared
port and sends from that address too, so a network fault between two nodes is a rule on
their two addresses (chaos/firewall.py) and the harness's own clients (on 127.0.0.1) are
never cut off by it.
The first node starts alone (a new ring), the others join it; the first `lock_members`
nodes are also the lock service's Raft voters. The controller is the only thing that
signals the processes, and `close()` (also on leaving the `with`) resumes paused nodes and
stops every process (SIGTERM, then SIGKILL), so a run never leaves one behind.

With `proxies` (chaos/proxy.py), each node's public address is held by a link proxy and
the node listens behind it (`kv serve --listen`): slow links, and partitions without root.

Process faults: `kill` (SIGKILL), `pause` / `resume` (SIGSTOP / SIGCONT), `restart` (with
an optional clock skew: libfaketime from Debian's faketime package shifts the node's clocks
by a constant offset, wall and monotonic alike; a constant offset leaves sleeps and
timeouts intact, a changing one would make the monotonic clock jump), and `tear_tail`
(after a kill, a partial record is appended to the newest write-ahead log of each of the
node's logs: a write torn by the crash, which recovery must cut off).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaos.proxy import ProxyNetwork

logger = logging.getLogger(__name__)

FAKETIME_LIBS = ("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
                 "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
                 "/usr/lib/faketime/libfaketime.so.1")
READY_S = 90.0
STOP_S = 10.0


class ClusterError(RuntimeError):
    """The cluster could not be started or did not answer as expected."""


def faketime_env(skew_s: float) -> dict[str, str]:
    """Environment that shifts a process's clocks by `skew_s` seconds (libfaketime)."""
    lib = next((p for p in FAKETIME_LIBS if os.path.exists(p)), None)
    if lib is None:
        raise ClusterError("clock skew needs libfaketime: apt-get install faketime")
    return {"LD_PRELOAD": lib, "FAKETIME": f"{skew_s:+.3f}s"}


def free_port(hosts: list[str], avoid: set[int] = frozenset()) -> int:
    """A port that is free on every one of `hosts` right now (and not in `avoid`)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind((hosts[0], 0))
            port = probe.getsockname()[1]
        if port in avoid:
            continue
        try:
            for host in hosts:
                with socket.socket() as s:
                    s.bind((host, port))
            return port
        except OSError:
            continue
    raise ClusterError("no port is free on every node address")


def _members(ring: Any) -> list[str]:
    try:
        return sorted(m["name"] for m in ring["members"] if m["alive"])
    except (KeyError, TypeError):
        return []


@dataclass
class Node:
    index: int
    host: str
    port: int
    data: Path
    log: Path
    lock_id: int | None
    skew_s: float = 0.0
    proc: subprocess.Popen | None = field(default=None, repr=False)
    paused: bool = False

    @property
    def name(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class ChaosCluster:
    def __init__(self, root: Path, *, nodes: int = 5, lock_members: int = 3,
                 extra_args: tuple[str, ...] = (), first_host: int = 11,
                 proxies: ProxyNetwork | None = None) -> None:
        if not 1 <= nodes <= 40 or not 0 <= lock_members <= nodes:
            raise ValueError("1..40 nodes, at most as many lock members")
        self.root = Path(root)
        hosts = [f"127.0.0.{first_host + i}" for i in range(nodes)]
        port = free_port(hosts)
        # With proxies, each node's name (its public address) is held by a link proxy
        # and the node itself listens on a private port of the same host (--listen).
        self.proxies = proxies
        self.private_port = free_port(hosts, avoid={port}) if proxies else None
        self.nodes = [Node(i + 1, h, port, self.root / f"n{i + 1}", self.root / f"n{i + 1}.log",
                           i + 1 if i < lock_members else None) for i, h in enumerate(hosts)]
        self.extra_args = list(extra_args)
        self.lock_peers = ",".join(f"{n.lock_id}={n.name}" for n in self.nodes if n.lock_id)

    def __enter__(self) -> ChaosCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Start every node (the first alone, the others joining it) and wait until ready."""
        self.root.mkdir(parents=True, exist_ok=True)
        if self.proxies is not None and not self.proxies.proxies:
            for n in self.nodes:
                self.proxies.add((n.host, n.port), (n.host, self.private_port))
        first, rest = self.nodes[0], self.nodes[1:]
        self._spawn(first, join=None)
        self.wait_healthy([first])
        for n in rest:
            self._spawn(n, join=first.name)
        self.wait_healthy(rest)
        self._wait_formed()
        self.wait_lock_leader()

    def wait_lock_leader(self, timeout: float = READY_S) -> Node | None:
        """The lock service's leader once one is elected (None without lock members)."""
        if not any(n.lock_id for n in self.nodes):
            return None
        deadline = time.monotonic() + timeout
        while (leader := self.lock_leader()) is None:
            if time.monotonic() > deadline:
                raise ClusterError(f"no lock-service leader after {timeout:.0f} s")
            time.sleep(0.1)
        return leader

    def _spawn(self, node: Node, join: str | None) -> None:
        cmd = [sys.executable, "-m", "kvstore.cli", "serve", "--name", node.name,
               "--data", str(node.data), *self.extra_args]
        if join and not node.data.exists():
            cmd += ["--join", join]
        if self.private_port is not None:
            cmd += ["--listen", f"{node.host}:{self.private_port}"]
        if node.lock_id:
            cmd += ["--lock-id", str(node.lock_id), "--lock-peers", self.lock_peers]
        env = dict(os.environ)
        if node.skew_s:
            env.update(faketime_env(node.skew_s))
        with open(node.log, "ab") as log:
            node.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         env=env, start_new_session=True)
        node.paused = False
        logger.info("started %s (pid %d, skew %+.1fs)", node.name, node.proc.pid, node.skew_s)

    def wait_healthy(self, nodes: list[Node], timeout: float = READY_S) -> None:
        deadline = time.monotonic() + timeout
        for n in nodes:
            while not self.healthy(n):
                if not n.running:
                    raise ClusterError(f"{n.name} exited with {n.proc and n.proc.returncode};"
                                       f" see {n.log}")
                if time.monotonic() > deadline:
                    raise ClusterError(f"{n.name} not healthy after {timeout:.0f} s; see {n.log}")
                time.sleep(0.1)

    def _wait_formed(self, timeout: float = READY_S) -> None:
        want = sorted(n.name for n in self.nodes)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            views = [_members(self.get_json(n, "/ring")) for n in self.nodes]
            if all(v == want for v in views):
                return
            time.sleep(0.2)
        raise ClusterError(f"the ring did not come to hold all of {want}")

    def close(self) -> None:
        for n in self.nodes:
            if n.running and n.paused:
                n.proc.send_signal(signal.SIGCONT)
            if n.running:
                n.proc.terminate()
        deadline = time.monotonic() + STOP_S
        for n in self.nodes:
            if n.proc is None:
                continue
            try:
                n.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                n.proc.kill()
                n.proc.wait()

    # -- faults ---------------------------------------------------------------------------

    def kill(self, node: Node) -> None:
        if node.running:
            node.proc.kill()
            node.proc.wait()
        node.paused = False

    def restart(self, node: Node, *, skew_s: float | None = None) -> None:
        """Start a stopped or killed node again (SIGTERM first if it runs), maybe skewed."""
        if node.running:
            if node.paused:
                self.resume(node)
            node.proc.terminate()
            try:
                node.proc.wait(STOP_S)
            except subprocess.TimeoutExpired:
                self.kill(node)
        if skew_s is not None:
            node.skew_s = skew_s
        self._spawn(node, join=None)

    def pause(self, node: Node) -> None:
        if node.running and not node.paused:
            node.proc.send_signal(signal.SIGSTOP)
            node.paused = True

    def resume(self, node: Node) -> None:
        if node.running and node.paused:
            node.proc.send_signal(signal.SIGCONT)
            node.paused = False

    def tear_tail(self, node: Node, rng: random.Random) -> list[str]:
        """Append a torn record to the newest log of each of the node's logs (node down)."""
        if node.running:
            raise ClusterError(f"tear the tail of {node.name} only after killing it")
        torn = []
        for folder in sorted({p.parent for p in node.data.rglob("*.log")}):
            newest = max(folder.glob("*.log"), key=lambda p: p.name)
            # A header that promises more bytes than follow: a write cut by the crash.
            garbage = rng.randbytes(rng.randint(1, 6)) + b"\xff" * rng.randint(1, 40)
            with open(newest, "ab") as f:
                f.write(garbage)
            torn.append(f"{newest.relative_to(node.data)} +{len(garbage)} bytes")
        return torn

    # -- queries --------------------------------------------------------------------------

    def get_json(self, node: Node, path: str, timeout: float = 2.0) -> Any:
        try:
            with urllib.request.urlopen(f"http://{node.name}{path}", timeout=timeout) as r:
                return json.loads(r.read())
        except (OSError, ValueError, urllib.error.URLError):
            return None

    def healthy(self, node: Node) -> bool:
        return self.get_json(node, "/health") is not None

    def lock_leader(self) -> Node | None:
        for n in self.nodes:
            if n.lock_id and n.running and not n.paused:
                answer = self.get_json(n, "/lock/v1/leader")
                with contextlib.suppress(KeyError, TypeError, StopIteration):
                    return self.node(answer["address"])
        return None
