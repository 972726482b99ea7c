"""A local cluster of real `kv serve` processes in one folder (`kv cluster up|down|status`).

Layout of the folder (default `./ringlock-cluster`):

    cluster.json        {"host", "base_port", "nodes": [names], "lock_members": k}; written by
                        the first `up`, reused by later ones (so a restart keeps the names)
    nodeI/              node I's data folder (`kv serve --data`), I = 1..n
    nodeI.log           its stdout and stderr (appended across restarts)
    nodeI.pid           its process id while it runs (removed by `down`)

`up` starts node 1 alone (it creates the ring), waits for its /health, then starts the
others with `--join <node 1>` in parallel, waits for each /health and then until every
node's /ring lists every member (the cluster has formed). The first `lock_members` nodes
(3 by default) are also lock-service members (`--lock-id I`), and every node gets
`--lock-peers` so that any node can check a write's sequencer (fencing), when `kv serve`
has those flags. Nodes are started with `os.posix_spawn` in a new session,
stdin from /dev/null and output to their log, so they outlive the command and ignore the
terminal's Ctrl-C. `down` sends SIGTERM, waits up to `grace` seconds, then SIGKILLs what
is left. A pid file is trusted only while /proc/PID/cmdline is still a `serve` of that
node's name (a reused pid is never signalled).

`up` then waits, when the nodes are lock-service members, until every lock member names the
same leader (GET /lock/v1/leader), so the first `kv lock` does not wait for an election.

Library code: progress lines go to the `progress` callback (the CLI prints them), and
counts to the `count(stage, done, total)` callback (the CLI draws them as bars,
kvstore/progress.py): stages STARTED (processes spawned), JOINED (nodes answering /health
after joining), FORMED (nodes whose ring lists every member) and LOCK_READY (lock members
that name the common leader).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kvstore.client import Client
from kvstore.errors import RinglockError

DEFAULT_DIR = "ringlock-cluster"
DEFAULT_NODES = 5
DEFAULT_BASE_PORT = 7001
DEFAULT_HOST = "127.0.0.1"
LOCK_MEMBERS = 3  # Raft voters: tolerate one failure
READY_TIMEOUT_S = 90.0  # a loaded two-core machine starts five Pythons slowly
Progress = Callable[[str], None]
Count = Callable[[str, int, int], None]  # (stage, done, total)
STARTED, JOINED, FORMED, LOCK_READY = ("nodes started", "nodes joined", "ring formed",
                                       "lock leader agreed")


def _no_count(stage: str, done: int, total: int) -> None:
    pass


class ClusterError(RinglockError):
    """`kv cluster` could not do what was asked; the message says why and what to do."""


@dataclass(frozen=True)
class NodeState:
    index: int
    name: str
    pid: int | None  # from the pid file, when it names a live `serve` of this node
    healthy: bool    # answered /health


def serve_flags() -> set[str]:
    """The option strings `kv serve` accepts (from kvstore/config.py), empty if none yet."""
    try:
        from kvstore import config
    except ImportError:
        return set()
    parser = argparse.ArgumentParser(add_help=False)
    config.add_arguments(parser)
    return {s for action in parser._actions for s in action.option_strings}


class LocalCluster:
    """One folder's cluster; see the module docstring."""

    def __init__(self, folder: str | os.PathLike, *, nodes: int = DEFAULT_NODES,
                 host: str = DEFAULT_HOST, base_port: int = DEFAULT_BASE_PORT,
                 lock_members: int = LOCK_MEMBERS, serve_args: tuple[str, ...] = ()) -> None:
        self.folder = Path(folder).resolve()
        saved = self.folder / "cluster.json"
        if saved.exists():
            try:
                doc = json.loads(saved.read_text())
                host, base_port = str(doc["host"]), int(doc["base_port"])
                nodes, lock_members = len(doc["nodes"]), int(doc["lock_members"])
            except (ValueError, KeyError, TypeError) as exc:
                raise ClusterError(f"{saved} is damaged ({exc}); remove the folder to start "
                                   "afresh") from None
        if not 1 <= nodes <= 64:
            raise ClusterError(f"a local cluster has 1..64 nodes, not {nodes}")
        if not 1 <= base_port <= 65535 - nodes:
            raise ClusterError(f"ports {base_port}..{base_port + nodes - 1} are not valid")
        self.host, self.base_port, self.size = host, base_port, nodes
        self.lock_members = min(lock_members, nodes)
        self.serve_args = tuple(serve_args)
        self.names = [f"{host}:{base_port + i}" for i in range(nodes)]
        self._spawned: dict[int, int] = {}

    @property
    def exists(self) -> bool:
        return (self.folder / "cluster.json").exists()

    # -- files -------------------------------------------------------------------------------

    def _path(self, i: int, suffix: str = "") -> Path:
        return self.folder / f"node{i + 1}{suffix}"

    def _pid(self, i: int) -> int | None:
        """The pid in node i's pid file if that process is still this node's `serve`."""
        try:
            pid = int(self._path(i, ".pid").read_text().strip())
        except (OSError, ValueError):
            return None
        _reap(pid)
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return None
        mine = b"serve" in cmdline and self.names[i].encode() in cmdline
        return pid if mine else None

    def _command(self, i: int, flags: set[str]) -> list[str]:
        cmd = [sys.executable, "-m", "kvstore.cli", "serve", "--name", self.names[i],
               "--data", str(self._path(i))]
        if i > 0:
            cmd += ["--join", self.names[0]]
        if self.lock_members and "--lock-peers" in flags:  # every node fences writes
            peers = ",".join(f"{j + 1}={self.names[j]}" for j in range(self.lock_members))
            cmd += ["--lock-peers", peers]
            if i < self.lock_members:
                cmd += ["--lock-id", str(i + 1)]
        return cmd + list(self.serve_args)

    # -- up ---------------------------------------------------------------------------------

    def up(self, progress: Progress = lambda line: None,
           timeout: float = READY_TIMEOUT_S, count: Count = _no_count) -> list[str]:
        """Start every node that is not running and wait until the cluster has formed
        (and the lock members agree on a leader)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "cluster.json").write_text(json.dumps(
            {"host": self.host, "base_port": self.base_port, "nodes": self.names,
             "lock_members": self.lock_members}, indent=1) + "\n")
        flags = serve_flags()
        deadline = time.monotonic() + timeout
        todo = [i for i in range(self.size) if self._pid(i) is None]
        for i in todo:
            self._check_port_free(i)
        running = self.size - len(todo)
        count(STARTED, running, self.size)
        count(JOINED, running, self.size)
        if todo and todo[0] == 0:
            self._start(0, flags, progress)
            count(STARTED, running + 1, self.size)
            self._wait_healthy([0], deadline, progress)
            count(JOINED, running + 1, self.size)
            running, todo = running + 1, todo[1:]
        for n, i in enumerate(todo, start=1):
            self._start(i, flags, progress)
            count(STARTED, running + n, self.size)
        self._wait_healthy(todo, deadline, progress,
                           lambda n: count(JOINED, running + n, self.size))
        self._wait_formed(deadline, progress, lambda n: count(FORMED, n, self.size))
        if self.lock_members and "--lock-id" in flags:
            self._wait_lock_leader(deadline, progress,
                                   lambda n: count(LOCK_READY, n, self.lock_members))
        return self.names

    def _check_port_free(self, i: int) -> None:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((self.host, self.base_port + i))
            except OSError:
                raise ClusterError(
                    f"port {self.base_port + i} on {self.host} is in use by another program;"
                    " choose other ports with --base-port (or stop that program)") from None

    def _start(self, i: int, flags: set[str], progress: Progress) -> None:
        self._path(i).mkdir(exist_ok=True)
        log = str(self._path(i, ".log"))
        actions = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                   (os.POSIX_SPAWN_OPEN, 1, log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644),
                   (os.POSIX_SPAWN_DUP2, 1, 2)]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        cmd = self._command(i, flags)
        pid = os.posix_spawn(sys.executable, cmd, env, file_actions=actions, setsid=True)
        self._path(i, ".pid").write_text(f"{pid}\n")
        self._spawned[i] = pid  # its cmdline is ours until it has exec'd: trust the pid
        role = " (lock member)" if i < self.lock_members and "--lock-id" in flags else ""
        progress(f"  started node {i + 1}/{self.size} {self.names[i]}{role}, pid {pid}, "
                 f"log {self._path(i, '.log')}")

    def _failed(self, i: int, why: str) -> ClusterError:
        try:
            tail = self._path(i, ".log").read_text(errors="replace").splitlines()[-15:]
        except OSError:
            tail = []
        shown = "\n".join("    " + line for line in tail)
        return ClusterError(f"node {self.names[i]} {why}; last lines of "
                            f"{self._path(i, '.log')}:\n{shown}")

    def _wait_healthy(self, indexes: list[int], deadline: float, progress: Progress,
                      ready: Callable[[int], None] = lambda n: None) -> None:
        waiting = list(indexes)
        started = time.monotonic()
        while waiting:
            for i in list(waiting):
                pid = self._spawned.get(i) or self._pid(i)
                if pid is None or not _alive(pid):
                    raise self._failed(i, "exited during startup")
                if _healthy(self.names[i]):
                    waiting.remove(i)
                    ready(len(indexes) - len(waiting))
                    progress(f"  node {self.names[i]} is ready "
                             f"({time.monotonic() - started:.1f} s)")
            if waiting and time.monotonic() > deadline:
                raise self._failed(waiting[0], "did not become ready in time")
            time.sleep(0.1)

    def _wait_formed(self, deadline: float, progress: Progress,
                     formed: Callable[[int], None] = lambda n: None) -> None:
        want = set(self.names)
        progress(f"  waiting until every node's ring lists all {len(want)} members")
        while True:
            for i, pid in self._spawned.items():
                if not _alive(pid):
                    raise self._failed(i, "exited while the ring was forming")
            seen = {}
            for name in self.names:
                try:
                    with Client([name], timeout=2) as c:
                        ring = c.ring()
                    seen[name] = {m["name"] for m in ring["members"]}
                except (RinglockError, KeyError, TypeError):
                    seen[name] = set()
            formed(sum(s == want for s in seen.values()))
            if all(s == want for s in seen.values()):
                progress(f"  ring formed: {len(want)} members on every node")
                return
            if time.monotonic() > deadline:
                lagging = sorted(n for n, s in seen.items() if s != want)
                raise ClusterError(f"the ring did not form in time: {', '.join(lagging)} "
                                   f"do not list every member; see the logs in {self.folder}")
            time.sleep(0.2)

    def _wait_lock_leader(self, deadline: float, progress: Progress,
                          agreed: Callable[[int], None]) -> None:
        members = self.names[:self.lock_members]
        progress(f"  waiting until the {len(members)} lock members agree on a leader")
        while True:
            answers = [_lock_leader(name) for name in members]
            if any(status in (401, 403) for status, _ in answers):
                progress("  lock members need a token to name their leader: not waiting")
                return
            leaders = [leader for _, leader in answers]
            common = max(set(leaders) - {None}, key=leaders.count, default=None)
            agreed(leaders.count(common) if common is not None else 0)
            if common is not None and leaders.count(common) == len(members):
                progress(f"  lock service ready: leader is member {common}")
                return
            if time.monotonic() > deadline:
                raise ClusterError(f"the lock members did not agree on a leader in time "
                                   f"(they name {leaders}); see the logs in {self.folder}")
            time.sleep(0.2)

    # -- down and status ---------------------------------------------------------------------

    def down(self, progress: Progress = lambda line: None, grace: float = 10.0) -> int:
        """SIGTERM every running node, SIGKILL those left after `grace` s; count stopped."""
        running = {i: pid for i in range(self.size) if (pid := self._pid(i)) is not None}
        for i, pid in running.items():
            _signal(pid, signal.SIGTERM)
            progress(f"  stopping node {self.names[i]} (pid {pid})")
        deadline = time.monotonic() + grace
        while any(_alive(p) for p in running.values()) and time.monotonic() < deadline:
            time.sleep(0.05)
        for i, pid in running.items():
            if _alive(pid):
                progress(f"  node {self.names[i]} did not stop in {grace:.0f} s: SIGKILL")
                _signal(pid, signal.SIGKILL)
        while any(_alive(p) for p in running.values()):
            time.sleep(0.02)
        for i in range(self.size):
            self._path(i, ".pid").unlink(missing_ok=True)
        return len(running)

    def status(self) -> list[NodeState]:
        states = []
        for i, name in enumerate(self.names):
            pid = self._pid(i)
            states.append(NodeState(i + 1, name, pid, pid is not None and _healthy(name)))
        return states


def _healthy(name: str) -> bool:
    try:
        with Client([name], timeout=1) as c:
            return c.health().get("status") == "ok"
    except RinglockError:
        return False


def _lock_leader(name: str) -> tuple[int, int | None]:
    """(HTTP status, the leader id) lock member `name` answers on GET /lock/v1/leader; the
    id is None when it names none or does not answer (status 0)."""
    host, port = name.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=2)
    try:
        conn.request("GET", "/lock/v1/leader")
        response = conn.getresponse()
        doc = json.loads(response.read()) if response.status == 200 else {}
        leader = doc.get("leader") if isinstance(doc, dict) else None
        return response.status, leader if isinstance(leader, int) and leader > 0 else None
    except (OSError, ValueError, http.client.HTTPException):
        return 0, None
    finally:
        conn.close()


def _reap(pid: int) -> None:
    """Collect `pid`'s exit status if it is our child (a test started it in-process)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _alive(pid: int) -> bool:
    _reap(pid)
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
