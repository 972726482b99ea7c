"""ringlock as a benchmark target: real node processes on 127.0.0.1 and workloads that use
only the public HTTP APIs of docs/openapi.yaml and docs/openapi-lock.yaml.

- `StoreCluster`: `kv serve --name 127.0.0.1:PORT --data DIR --n --r --w --sync` per node
  (the console script beside this interpreter), the lowest-named node founding the cluster
  (it is the claimant that decides each join) and the others `--join`ing it one by one;
  ready when every node's `/ring` lists every node alive on the same ring version.
  SIGKILL one node; stop = SIGTERM, then SIGKILL after 10 s.
- `RinglockKV`: `PUT /kv/{key}` (raw value body, 204) and `GET /kv/{key}` (200, or 300
  with siblings; R and W are the nodes' defaults), clients spread over the nodes, each
  moving to the next node after a connection error as the client library does.
- `LockCluster`: `python -m lockservice.node --id --peers --data` per member (Raft log
  fsynced, 40 ms ticks, 10-tick elections: the node's defaults); the leader from
  `GET /lock/v1/leader`; SIGKILL the leader.
- `RinglockLock`: one session per client (`POST /lock/v1/sessions`), kept alive by the
  long-polling `POST /lock/v1/sessions/{id}/keepalive` as the client library does; a cycle
  is `POST /lock/v1/locks/{name}/acquire {session, mode: exclusive, wait_ms}` then
  `.../release`. Requests go to the leader (members would forward them). The order key is
  the sequencer's generation (grant order, strictly increasing per lock).
- `keepalive_sessions`: N idle sessions kept alive by long polls, for the keepalive CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

from bench.loadgen import KVWorkload, LockWorkload, OpFailed

KV_SCRIPT = os.path.join(os.path.dirname(sys.executable), "kv")
JSON = {"Content-Type": "application/json"}


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def http_json(method: str, url: str, body: Any = None, timeout: float = 2.0) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data, JSON, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            return r.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        with contextlib.suppress(ValueError):
            return exc.code, json.loads(raw)
        return exc.code, None


class _Processes:
    """Real child processes, each with a log file; stopped in `stop()` whatever happens."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        os.makedirs(root, exist_ok=True)

    def spawn(self, key: str, argv: list[str]) -> None:
        with open(os.path.join(self.root, f"{key.replace(':', '_')}.log"), "ab") as log:
            self.procs[key] = subprocess.Popen(argv, stdout=log, stderr=log,
                                               stdin=subprocess.DEVNULL)  # fmt: skip

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs.values() if p.poll() is None]

    def kill(self, key: str) -> float:
        at = time.monotonic()
        self.procs[key].send_signal(signal.SIGKILL)
        self.procs[key].wait()
        return at

    def log_tail(self, key: str, lines: int = 15) -> str:
        try:
            with open(os.path.join(self.root, f"{key.replace(':', '_')}.log"), "rb") as f:
                return b"\n".join(f.read().splitlines()[-lines:]).decode(errors="replace")
        except OSError:
            return ""

    def log_count(self, needle: str) -> int:
        """Lines of all the processes' logs that contain `needle`."""
        total = 0
        for key in self.procs:
            with contextlib.suppress(OSError), open(
                    os.path.join(self.root, f"{key.replace(':', '_')}.log"), "rb") as f:
                total += sum(1 for line in f if needle.encode() in line)
        return total

    def check_alive(self) -> None:
        for key, p in self.procs.items():
            if p.poll() is not None:
                raise RuntimeError(f"{key} exited with {p.returncode}:\n{self.log_tail(key)}")

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
        deadline = time.monotonic() + 10
        for p in self.procs.values():
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


class StoreCluster:
    """`nodes` ringlock store nodes (`kv serve`) under `root`."""

    name = "ringlock"

    def __init__(self, root: str, nodes: int = 3, *, n: int = 3, r: int = 2, w: int = 2,
                 sync: str = "interval") -> None:  # fmt: skip
        self.root = root
        # the seed gets the lowest name: the lowest-named live member decides ring changes
        # (the claimant), so every join is decided by the node already in the ring
        self.names = sorted(f"127.0.0.1:{p}" for p in free_ports(nodes))
        self.n, self.r, self.w, self.sync = n, r, w, sync
        self.procs = _Processes(root)

    def urls(self) -> list[str]:
        return [f"http://{name}" for name in self.names]

    def pids(self) -> list[int]:
        return self.procs.pids()

    def argv(self, name: str, join: str | None) -> list[str]:
        argv = [KV_SCRIPT, "serve", "--name", name,
                "--data", os.path.join(self.root, name.replace(":", "_")),
                "--n", str(self.n), "--r", str(self.r), "--w", str(self.w),
                "--sync", self.sync, "--log-level", "WARNING"]  # fmt: skip
        return argv + (["--join", join] if join else [])

    def start(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        seed = self.names[0]
        for k, name in enumerate(self.names):
            self.procs.spawn(name, self.argv(name, None if k == 0 else seed))
            self._wait(lambda name=name: http_json("GET", f"http://{name}/health")[0] == 200,
                       deadline, f"{name} /health")  # fmt: skip
        self._wait(self.converged, deadline, "every node on one ring with every member")

    def converged(self) -> bool:
        versions = set()
        for url in self.urls():
            status, ring = http_json("GET", url + "/ring")
            if status != 200 or not isinstance(ring, dict):
                return False
            members = {m["name"]: m.get("alive", True) for m in ring.get("members", [])}
            if set(members) != set(self.names) or not all(members.values()):
                return False
            versions.add(ring.get("version"))
        return len(versions) == 1

    def _wait(self, predicate: Any, deadline: float, what: str) -> None:
        while True:
            self.procs.check_alive()
            with contextlib.suppress(OSError, ValueError):
                if predicate():
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"ringlock store: timed out waiting for {what}")
            time.sleep(0.2)

    def health_notes(self) -> dict[str, int]:
        """What the nodes logged about themselves: event-loop stalls the membership noticed
        and nodes convicted down by the failure detector (false ones, when none died)."""
        return {"stalls": self.procs.log_count("this process stalled"),
                "convictions": self.procs.log_count(" is down (phi")}  # fmt: skip

    def kill(self, index: int) -> dict[str, Any]:
        name = self.names[index]
        return {"killed": name, "at": self.procs.kill(name)}

    def stop(self) -> None:
        self.procs.stop()


class RinglockKV(KVWorkload):
    """Public API puts and gets; any node coordinates."""

    async def put(self, cid: int, key: bytes, value: bytes) -> None:
        try:
            async with self.session.put(f"{self.url(cid)}/kv/{key.decode()}", data=value,
                                        headers={"Content-Type": "application/octet-stream"}
                                        ) as r:  # fmt: skip
                await r.read()
                if r.status != 204:
                    raise OpFailed(f"ringlock put http {r.status}")
        except OSError:
            self.move_on(cid)
            raise

    async def get(self, cid: int, key: bytes) -> None:
        try:
            async with self.session.get(f"{self.url(cid)}/kv/{key.decode()}") as r:
                await r.read()
                status = r.status
        except OSError:
            self.move_on(cid)
            raise
        if status == 404:
            raise OpFailed("ringlock get: key missing")
        if status not in (200, 300):
            raise OpFailed(f"ringlock get http {status}")


class LockCluster:
    """`members` lock-service members (`python -m lockservice.node`) under `root`."""

    name = "ringlock"

    def __init__(self, root: str, members: int = 3, *, tick_ms: float = 40.0,
                 election_ticks: int = 10) -> None:  # fmt: skip
        self.root = root
        self.addresses = {i + 1: f"127.0.0.1:{p}" for i, p in enumerate(free_ports(members))}
        self.tick_ms, self.election_ticks = tick_ms, election_ticks
        self.procs = _Processes(root)

    def urls(self) -> list[str]:
        return [f"http://{a}" for a in self.addresses.values()]

    def pids(self) -> list[int]:
        return self.procs.pids()

    def leader_pid(self) -> int | None:
        leader = self.leader_id()
        p = self.procs.procs.get(str(leader)) if leader else None
        return p.pid if p is not None and p.poll() is None else None

    def start_member(self, node: int) -> None:
        peers = ",".join(f"{i}={a}" for i, a in self.addresses.items())
        self.procs.spawn(str(node), [
            sys.executable, "-m", "lockservice.node", "--id", str(node), "--peers", peers,
            "--data", os.path.join(self.root, f"m{node}"), "--tick-ms", str(self.tick_ms),
            "--election-ticks", str(self.election_ticks),
            "--log-level", os.environ.get("RINGLOCK_BENCH_LOG_LEVEL", "WARNING"),
        ])  # fmt: skip

    def start(self, timeout: float = 60.0) -> None:
        """Start every member that is not running (a killed leader comes back on its data)
        and wait until one leader is known and a session can be opened and closed."""
        for node in self.addresses:
            p = self.procs.procs.get(str(node))
            if p is None or p.poll() is not None:
                self.start_member(node)
        deadline = time.monotonic() + timeout
        while True:
            self.procs.check_alive()
            with contextlib.suppress(OSError, ValueError):
                if self.leader_id() is not None:
                    status, body = http_json("POST", self.leader_url() + "/lock/v1/sessions",
                                             {"ttl_ms": 10_000})  # fmt: skip
                    if status == 201:
                        http_json("DELETE", f"{self.leader_url()}/lock/v1/sessions/"
                                  f"{body['session']}")  # fmt: skip
                        return
            if time.monotonic() > deadline:
                raise RuntimeError("ringlock lock service: no leader")
            time.sleep(0.1)

    def leader_id(self) -> int | None:
        for url in self.urls():
            with contextlib.suppress(OSError, ValueError):
                status, body = http_json("GET", url + "/lock/v1/leader", timeout=1.0)
                if status == 200 and body.get("leader"):
                    return int(body["leader"])
        return None

    def leader_url(self) -> str:
        leader = self.leader_id()
        if leader is None:
            raise RuntimeError("ringlock lock service: no leader")
        return f"http://{self.addresses[leader]}"

    def kill_leader(self) -> dict[str, Any]:
        leader = self.leader_id()
        if leader is None:
            raise RuntimeError("ringlock lock service: no leader to kill")
        return {"killed": leader, "at": self.procs.kill(str(leader))}

    def stop(self) -> None:
        self.procs.stop()


class RinglockLock(LockWorkload):
    """The /lock/v1/ API over one session per client; requests go to the leader."""

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.leader = self.urls[0]
        self.session_of: dict[int, int] = {}

    async def call(self, method: str, path: str, body: dict[str, Any],
                   url: str | None = None, timeout: Any = None) -> Any:  # fmt: skip
        try:
            async with self.session.request(method, (url or self.leader) + path,
                                            data=json.dumps(body), headers=JSON,
                                            timeout=timeout) as r:  # fmt: skip
                data = await r.read()
                status = r.status
        except (OSError, TimeoutError):
            await self.connect()
            raise
        if status >= 300:
            with contextlib.suppress(ValueError):
                code = json.loads(data).get("error", "")
                if code in ("no_leader", "unavailable"):
                    await self.connect()
                raise OpFailed(f"ringlock {path.rsplit('/', 1)[-1]} {status} {code}")
            raise OpFailed(f"ringlock {path.rsplit('/', 1)[-1]} http {status}")
        return json.loads(data) if data else None

    async def connect(self) -> None:
        for url in self.urls:
            with contextlib.suppress(Exception):
                async with self.session.get(url + "/lock/v1/leader",
                                            timeout=_short()) as r:  # fmt: skip
                    body = await r.json()
                    if body.get("address"):
                        self.leader = "http://" + body["address"]
                        return

    def sessions(self) -> list[int]:
        return list(self.session_of)

    async def open_session(self, cid: int) -> None:
        out = await self.call("POST", "/lock/v1/sessions", {"ttl_ms": self.ttl_ms})
        self.session_of[cid] = out["session"]

    async def keepalive(self, cid: int) -> None:
        import aiohttp

        ack = 0
        hold = aiohttp.ClientTimeout(total=self.ttl_ms / 1000 + 5)  # a long poll, not an op
        while True:
            try:
                out = await self.call("POST", f"/lock/v1/sessions/{self.session_of[cid]}"
                                      "/keepalive", {"ack": ack}, timeout=hold)  # fmt: skip
                ack = max([ack, *(e.get("seq", 0) for e in out.get("events", []))])
            except asyncio.CancelledError:
                raise
            except Exception:
                await asyncio.sleep(0.1)

    async def acquire(self, cid: int, name: str) -> float | None:
        out = await self.call("POST", f"/lock/v1/locks/{name}/acquire",
                              {"session": self.session_of[cid], "mode": "exclusive",
                               "wait_ms": self.wait_ms})  # fmt: skip
        return float(out["generation"])

    async def release(self, cid: int, name: str) -> None:
        await self.call("POST", f"/lock/v1/locks/{name}/release",
                        {"session": self.session_of[cid]})  # fmt: skip

    async def close_session(self, cid: int) -> None:
        await self.call("DELETE", f"/lock/v1/sessions/{self.session_of.pop(cid)}", {})

    async def still_holds(self, cid: int, name: str) -> bool:
        try:  # a release answers 204 only to the holder (409 not_holder, 404/410 otherwise)
            await self.release(cid, name)
        except OpFailed:
            return False
        return True


def _short() -> Any:
    import aiohttp

    return aiohttp.ClientTimeout(total=1.0)


async def keepalive_sessions(urls: list[str], count: int, ttl_ms: int, seconds: float,
                             mark: Any = None) -> dict[str, Any]:  # fmt: skip
    """Open `count` sessions on the leader, keep each alive with back-to-back long polls for
    `seconds` (the server answers shortly before the lease ends), close them. A poll that
    fails for want of a leader (503, refused connection) is retried after 0.1 s on the
    leader found anew, as the client library does; a session the server calls expired
    (410) or unknown (404) is lost and no longer polled. Returns keepalives answered,
    failures by kind, sessions lost, and the leader before and after. `mark("start")` /
    `mark("end")` bound the caller's CPU window."""
    import aiohttp

    answered = failures = 0
    kinds: dict[str, int] = {}
    lost: set[int] = set()
    timeout = aiohttp.ClientTimeout(total=ttl_ms / 1000 + 30)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                     timeout=timeout) as s:  # fmt: skip
        leader = {"url": urls[0]}

        async def find_leader() -> str | None:
            for u in urls:
                with contextlib.suppress(Exception):
                    async with s.get(u + "/lock/v1/leader", timeout=_short()) as r:
                        body = await r.json()
                        if body.get("address"):
                            leader["url"] = "http://" + body["address"]
                            return leader["url"]
            return None

        async def post(path: str, body: dict[str, Any], method: str = "POST") -> Any:
            async with s.request(method, leader["url"] + path, data=json.dumps(body),
                                 headers=JSON) as r:  # fmt: skip
                data = await r.read()
                if r.status >= 300:
                    code = ""
                    with contextlib.suppress(ValueError, AttributeError):
                        code = json.loads(data).get("error", "")
                    raise OpFailed(f"http {r.status} {code}")
                return json.loads(data) if data else None

        leader_before = await find_leader()
        sem = asyncio.Semaphore(32)

        async def open_one() -> int:
            async with sem:
                for _attempt in range(50):  # an election may be under way
                    try:
                        return (await post("/lock/v1/sessions", {"ttl_ms": ttl_ms}))["session"]
                    except (OpFailed, OSError, TimeoutError):
                        await asyncio.sleep(0.2)
                        await find_leader()
                raise RuntimeError("ringlock: could not open a session in 50 tries")

        ids = await asyncio.gather(*(open_one() for _ in range(count)))
        end = time.monotonic() + seconds

        async def keep(sid: int) -> None:
            nonlocal answered, failures
            ack = 0
            while time.monotonic() < end:
                try:
                    out = await asyncio.wait_for(
                        post(f"/lock/v1/sessions/{sid}/keepalive", {"ack": ack}),
                        max(0.01, end - time.monotonic()))
                    answered += 1
                    ack = max([ack, *(e.get("seq", 0) for e in out.get("events", []))])
                except TimeoutError:
                    return  # the window ended while this long poll was held
                except Exception as exc:
                    failures += 1
                    kind = str(exc) if isinstance(exc, OpFailed) else type(exc).__name__
                    kinds[kind] = kinds.get(kind, 0) + 1
                    if kind.startswith(("http 410", "http 404")):
                        lost.add(sid)
                        return
                    await asyncio.sleep(0.1)
                    await find_leader()

        tasks = [asyncio.create_task(keep(sid)) for sid in ids]
        if mark:
            mark("start")
        await asyncio.gather(*tasks)
        if mark:
            mark("end")
        leader_after = await find_leader()

        async def close(sid: int) -> None:
            async with sem:
                with contextlib.suppress(Exception):
                    await post(f"/lock/v1/sessions/{sid}", {}, method="DELETE")

        await asyncio.gather(*(close(sid) for sid in ids if sid not in lost))
    return {"sessions": count, "keepalives": answered, "failures": failures,
            "failure_kinds": kinds, "sessions_lost": len(lost),
            "leader_before": leader_before, "leader_after": leader_after}  # fmt: skip
