"""etcd 3.4 as a benchmark target: the cluster (through ../shared/anchors/etcd.sh) and its
workloads for the load generator, all through etcd's HTTP/JSON gateway (`POST /v3/...`,
base64 keys and values), as ringlock's users talk to ringlock over HTTP.

- `EtcdCluster`: start3 (wiping old data first when nothing runs), pids, leader, SIGKILL a
  member by the pid etcd.sh recorded, stop (only when this process started it).
- `EtcdKV`: `/v3/kv/put` and linearizable `/v3/kv/range` (etcd's default read).
- `EtcdLock`: one lease per client (granted in setup, kept alive at TTL/3 with one-shot
  `/v3/lease/keepalive` POSTs, as etcd's session helper renews at TTL/3), then
  `/v3/lock/lock {name, lease}` (blocks until held) and `/v3/lock/unlock {key}`. The order
  key is the lock answer's header revision (grant order).
- `keepalive_leases`: N idle leases kept alive at TTL/3, for the keepalive CPU comparison.

The gateway (grpc-gateway inside each etcd process) costs etcd CPU that a gRPC client would
not; that cost is part of every etcd figure here, as HTTP parsing is part of ringlock's.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.loadgen import KVWorkload, LockWorkload, OpFailed

ETCD_SH = str(Path(__file__).resolve().parents[2] / "shared" / "anchors" / "etcd.sh")
ETCD_DIR = os.environ.get("ETCD_ANCHOR_DIR", "/tmp/etcd-anchor")
MEMBERS = {"m1": 22379, "m2": 22479, "m3": 22579}
JSON = {"Content-Type": "application/json"}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _post(url: str, body: dict[str, Any], timeout: float = 2.0) -> dict[str, Any]:
    req = urllib.request.Request(url, json.dumps(body).encode(), JSON)
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read().decode().splitlines()[0])


class EtcdCluster:
    """A 3-member etcd on 127.0.0.1 via etcd.sh."""

    name = "etcd"

    def __init__(self) -> None:
        self.started_here = False

    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{p}" for p in MEMBERS.values()]

    def pid_of(self, member: str) -> int | None:
        try:
            pid = int(Path(ETCD_DIR, f"{member}.pid").read_text())
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError):
            return None

    def pids(self) -> list[int]:
        return [p for m in MEMBERS if (p := self.pid_of(m)) is not None]

    def start(self, fresh: bool = True) -> None:
        """Start (or restart killed members of) the 3-member cluster; when nothing of it
        runs and `fresh`, wipe old data first so every run starts from an empty store."""
        if not self.pids():
            self.started_here = True  # stop() leaves a cluster someone else runs alone
            if fresh:
                subprocess.run([ETCD_SH, "wipe"], check=True, capture_output=True)
        subprocess.run([ETCD_SH, "start3"], check=True, capture_output=True, timeout=120)
        self.wait_leader()

    def wait_leader(self, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leader = self.leader_url()
            if leader:
                with contextlib.suppress(OSError, ValueError):
                    _post(leader + "/v3/kv/put", {"key": b64(b"warm"), "value": b64(b"1")})
                    return leader
            time.sleep(0.1)
        raise RuntimeError("etcd: no leader")

    def leader_url(self) -> str | None:
        for url in self.urls():
            with contextlib.suppress(OSError, ValueError, KeyError):
                st = _post(url + "/v3/maintenance/status", {}, timeout=1.0)
                if st.get("leader") and st["leader"] == st["header"]["member_id"]:
                    return url
        return None

    def member_of(self, url: str) -> str:
        port = int(url.rstrip("/").rsplit(":", 1)[1])
        return next(m for m, p in MEMBERS.items() if p == port)

    def kill(self, url: str) -> float:
        """SIGKILL the member serving `url`; return the monotonic instant of the signal."""
        pid = self.pid_of(self.member_of(url))
        if pid is None:
            raise RuntimeError(f"etcd member at {url} is not running")
        at = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        return at

    def kill_leader(self) -> dict[str, Any]:
        leader = self.leader_url()
        if leader is None:
            raise RuntimeError("etcd: no leader to kill")
        return {"killed": leader, "at": self.kill(leader)}

    def stop(self) -> None:
        if self.started_here:
            subprocess.run([ETCD_SH, "stop"], capture_output=True, timeout=60)
            self.started_here = False


class EtcdKV(KVWorkload):
    """put / linearizable get through the gateway; clients spread over the members."""

    async def put(self, cid: int, key: bytes, value: bytes) -> None:
        body = json.dumps({"key": b64(key), "value": b64(value)})
        try:
            async with self.session.post(self.url(cid) + "/v3/kv/put", data=body,
                                         headers=JSON) as r:  # fmt: skip
                await r.read()
                if r.status != 200:
                    raise OpFailed(f"etcd put http {r.status}")
        except OSError:
            self.move_on(cid)
            raise

    async def get(self, cid: int, key: bytes) -> None:
        body = json.dumps({"key": b64(key)})
        try:
            async with self.session.post(self.url(cid) + "/v3/kv/range", data=body,
                                         headers=JSON) as r:  # fmt: skip
                data = await r.read()
                if r.status != 200:
                    raise OpFailed(f"etcd range http {r.status}")
        except OSError:
            self.move_on(cid)
            raise
        if b'"kvs"' not in data:
            raise OpFailed("etcd range: key missing")


class EtcdLock(LockWorkload):
    """etcd's lock API over one lease per client; requests go to the leader."""

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.leader = self.urls[0]
        self.lease: dict[int, str] = {}
        self.held_key: dict[int, str] = {}

    async def call(self, path: str, body: dict[str, Any], url: str | None = None) -> Any:
        try:
            async with self.session.post((url or self.leader) + path, data=json.dumps(body),
                                         headers=JSON) as r:  # fmt: skip
                data = await r.read()
                if r.status != 200:
                    raise OpFailed(f"etcd {path} http {r.status}")
        except (OSError, TimeoutError):
            self.leader = self.urls[(self.urls.index(self.leader) + 1) % len(self.urls)]
            raise
        return json.loads(data.decode().splitlines()[0])

    async def connect(self) -> None:
        for url in self.urls:
            with contextlib.suppress(Exception):
                st = await self.call("/v3/maintenance/status", {}, url)
                if st.get("leader") == st["header"]["member_id"]:
                    self.leader = url
                    return

    def sessions(self) -> list[int]:
        return list(self.lease)

    async def open_session(self, cid: int) -> None:
        ttl_s = max(1, self.ttl_ms // 1000)
        self.lease[cid] = (await self.call("/v3/lease/grant", {"TTL": ttl_s}))["ID"]

    async def keepalive(self, cid: int) -> None:
        while True:
            await asyncio.sleep(self.ttl_ms / 3000)
            with contextlib.suppress(Exception):
                await self.call("/v3/lease/keepalive", {"ID": self.lease[cid]})

    async def acquire(self, cid: int, name: str) -> float | None:
        out = await self.call("/v3/lock/lock", {"name": b64(name.encode()),
                                                "lease": self.lease[cid]})  # fmt: skip
        self.held_key[cid] = out["key"]
        return float(out["header"]["revision"])

    async def release(self, cid: int, name: str) -> None:
        await self.call("/v3/lock/unlock", {"key": self.held_key.pop(cid)})

    async def close_session(self, cid: int) -> None:
        await self.call("/v3/lease/revoke", {"ID": self.lease.pop(cid)})

    async def still_holds(self, cid: int, name: str) -> bool:
        """The lock key lives with the lease: it exists iff the lease survived."""
        out = await self.call("/v3/kv/range", {"key": self.held_key[cid]})
        return bool(out.get("kvs"))


async def keepalive_leases(url: str, count: int, ttl_s: int, seconds: float,
                           mark: Any = None) -> dict[str, Any]:  # fmt: skip
    """Grant `count` leases, keep them alive at TTL/3 for `seconds` (renewals spread evenly
    over the period), revoke them; returns renewals sent and failed. `mark("start")` is
    called once every lease exists, `mark("end")` when the renewals stop (the caller's CPU
    window)."""
    import aiohttp

    renewals = failures = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64),
                                     timeout=aiohttp.ClientTimeout(total=10)) as s:  # fmt: skip

        async def post(path: str, body: dict[str, Any]) -> Any:
            async with s.post(url + path, data=json.dumps(body), headers=JSON) as r:
                data = await r.read()
                if r.status != 200:
                    raise OpFailed(f"etcd {path} http {r.status}")
                return json.loads(data.decode().splitlines()[0])

        sem = asyncio.Semaphore(32)

        async def grant() -> str:
            async with sem:
                return (await post("/v3/lease/grant", {"TTL": ttl_s}))["ID"]

        ids = await asyncio.gather(*(grant() for _ in range(count)))
        period = ttl_s / 3
        end = time.monotonic() + seconds

        async def renew(k: int, lease: str) -> None:
            nonlocal renewals, failures
            await asyncio.sleep(period * k / count)
            while time.monotonic() < end:
                try:
                    await post("/v3/lease/keepalive", {"ID": lease})
                    renewals += 1
                except Exception:
                    failures += 1
                await asyncio.sleep(period)

        tasks = [asyncio.create_task(renew(k, lease)) for k, lease in enumerate(ids)]
        if mark:
            mark("start")
        await asyncio.gather(*tasks)
        if mark:
            mark("end")

        async def revoke(lease: str) -> None:
            async with sem:
                with contextlib.suppress(Exception):
                    await post("/v3/lease/revoke", {"ID": lease})

        await asyncio.gather(*(revoke(lease) for lease in ids))
    return {"sessions": count, "renewals": renewals, "failures": failures}
