"""Raft benchmark: ringlock's 3-member Raft (raft.demo_node processes, fsync on) beside etcd
3.4 (three members via ../shared/anchors/etcd.sh, puts through its HTTP gateway), driven by
the same asyncio/aiohttp load generator, interleaved A/B, ratios printed.

    .venv/bin/python -m bench.raft                      # 1, 16, 64 clients; 5 failovers each
    .venv/bin/python -m bench.raft --clients 1,64 --duration 5 --trials 5 --json out.json

Measures, per target: committed puts per second and p50/p99 latency at each client count
(256-byte values, each client waits for its put before sending the next), and failover:
the leader is SIGKILLed under a light load (4 clients that give up on a put after 0.25 s and
retry on another member) and the time until the next put *sent after the kill* commits is
taken; also how long puts in flight at the kill took to come back, and how long one put sent
to a surviving member right after the kill is held before it is answered (no client
timeout). CPU of the load generator and of the three servers is reported beside every
figure, in cores (CPU seconds / wall second).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import random
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench._common import busy_note, loadavg, process_cpu_seconds, ratio

ETCD_SH = str(Path(__file__).resolve().parents[2] / "shared" / "anchors" / "etcd.sh")
ETCD_DIR = os.environ.get("ETCD_ANCHOR_DIR", "/tmp/etcd-anchor")
ETCD_MEMBERS = {"m1": 22379, "m2": 22479, "m3": 22579}
VALUE = "v" * 256
REQUEST_TIMEOUT_S = 15.0


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


# -- targets ---------------------------------------------------------------------------


class Ringlock:
    name = "ringlock"

    def __init__(self, root: str, tick_ms: float, election_ticks: int) -> None:
        self.root = root
        self.tick_ms, self.election_ticks = tick_ms, election_ticks
        self.ports = dict(zip((1, 2, 3), free_ports(3), strict=True))
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.leader_hint: str | None = None

    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{p}" for p in self.ports.values()]

    def start_node(self, node: int) -> None:
        peers = ",".join(f"{i}=127.0.0.1:{p}" for i, p in self.ports.items())
        log = open(os.path.join(self.root, f"n{node}.log"), "ab")  # noqa: SIM115
        self.procs[node] = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "raft.demo_node",
                "--id",
                str(node),
                "--peers",
                peers,
                "--data",
                os.path.join(self.root, f"n{node}"),
                "--tick-ms",
                str(self.tick_ms),
                "--election-ticks",
                str(self.election_ticks),
                "--snapshot-threshold",
                "20000",
            ],
            stdout=log,
            stderr=log,
        )
        log.close()

    def start(self) -> None:
        for node in self.ports:
            if node not in self.procs or self.procs[node].poll() is not None:
                self.start_node(node)

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs.values() if p.poll() is None]

    async def leader_url(self, s: aiohttp.ClientSession) -> str | None:
        for url in self.urls():
            try:
                async with s.get(url + "/status", timeout=aiohttp.ClientTimeout(total=1)) as r:
                    st = await r.json()
                    if st["is_leader"]:
                        return url
            except (aiohttp.ClientError, TimeoutError, OSError):
                continue
        return None

    async def term(self, s: aiohttp.ClientSession) -> int:
        terms = [0]
        for url in self.urls():
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError, KeyError):
                async with s.get(url + "/status", timeout=aiohttp.ClientTimeout(total=1)) as r:
                    terms.append((await r.json())["term"])
        return max(terms)

    def kill(self, url: str) -> None:
        node = next(i for i, p in self.ports.items() if url.endswith(f":{p}"))
        self.procs[node].send_signal(signal.SIGKILL)  # reaped by poll() in start()

    async def put(self, s: aiohttp.ClientSession, url: str, key: str) -> tuple[bool, str | None]:
        """(committed, where to send the next put)."""
        async with s.post(url + "/propose", json={"key": key, "value": VALUE}) as r:
            body = await r.json()
            if r.status == 200:
                return True, url
            if r.status == 421 and body.get("leader"):
                return False, "http://" + body["leader"]
            return False, None

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
        for p in self.procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


class Etcd:
    name = "etcd"

    def __init__(self) -> None:
        self.started_here = False

    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{p}" for p in ETCD_MEMBERS.values()]

    def start(self) -> None:
        if not self.pids():
            self.started_here = True  # so stop() leaves a cluster someone else runs alone
        subprocess.run([ETCD_SH, "start3"], check=True, capture_output=True)

    def pids(self) -> list[int]:
        out = []
        for m in ETCD_MEMBERS:
            try:
                pid = int(Path(ETCD_DIR, f"{m}.pid").read_text())
                os.kill(pid, 0)
                out.append(pid)
            except (OSError, ValueError):
                pass
        return out

    async def leader_url(self, s: aiohttp.ClientSession) -> str | None:
        for url in self.urls():
            try:
                async with s.post(
                    url + "/v3/maintenance/status", json={}, timeout=aiohttp.ClientTimeout(total=1)
                ) as r:
                    st = await r.json()
                    if st.get("leader") and st["leader"] == st["header"]["member_id"]:
                        return url
            except (aiohttp.ClientError, TimeoutError, OSError, KeyError):
                continue
        return None

    async def term(self, s: aiohttp.ClientSession) -> int:
        terms = [0]
        for url in self.urls():
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError, KeyError):
                async with s.post(
                    url + "/v3/maintenance/status", json={}, timeout=aiohttp.ClientTimeout(total=1)
                ) as r:
                    terms.append(int((await r.json())["raftTerm"]))
        return max(terms)

    def kill(self, url: str) -> None:
        """SIGKILL the member at `url` by the pid etcd.sh recorded when it started it."""
        port = int(url.rsplit(":", 1)[1])
        member = next(m for m, p in ETCD_MEMBERS.items() if p == port)
        os.kill(int(Path(ETCD_DIR, f"{member}.pid").read_text()), signal.SIGKILL)

    async def put(self, s: aiohttp.ClientSession, url: str, key: str) -> tuple[bool, str | None]:
        body = {
            "key": base64.b64encode(key.encode()).decode(),
            "value": base64.b64encode(VALUE.encode()).decode(),
        }
        async with s.post(url + "/v3/kv/put", json=body) as r:
            await r.read()
            return r.status == 200, url if r.status == 200 else None

    def stop(self) -> None:
        if self.started_here:
            subprocess.run([ETCD_SH, "stop"], capture_output=True)


# -- measurement ---------------------------------------------------------------------


@dataclass
class Cpu:
    wall: float
    gen: float
    servers: float

    @classmethod
    def take(cls, pids: list[int]) -> Cpu:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        srv = 0.0
        for pid in pids:
            with contextlib.suppress(OSError):
                srv += process_cpu_seconds(pid)
        return cls(time.monotonic(), ru.ru_utime + ru.ru_stime, srv)

    def cores_since(self, start: Cpu) -> tuple[float, float]:
        wall = self.wall - start.wall
        return (self.gen - start.gen) / wall, (self.servers - start.servers) / wall


@dataclass
class LoadResult:
    target: str
    clients: int
    ops: int
    errors: int
    seconds: float
    latencies_ms: list[float] = field(repr=False)
    gen_cores: float = 0.0
    server_cores: float = 0.0
    elections: int = 0  # term increases during the cell: spurious elections under load

    @property
    def rate(self) -> float:
        return self.ops / self.seconds

    def pct(self, q: float) -> float:
        lat = sorted(self.latencies_ms)
        return lat[min(len(lat) - 1, int(q * len(lat)))] if lat else float("nan")


async def run_load(target: Any, clients: int, duration: float) -> LoadResult:
    conn = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as s:
        leader = await target.leader_url(s)
        assert leader, f"{target.name}: no leader"
        term0 = await target.term(s)
        lat: list[float] = []
        errors = 0
        warm_until = time.monotonic() + 0.5
        end = warm_until + duration
        pids = target.pids()
        cpu0: list[Cpu] = []

        async def worker(w: int) -> None:
            nonlocal errors
            url, i = leader, 0
            while (now := time.monotonic()) < end:
                i += 1
                t0 = time.perf_counter()
                try:
                    ok, nxt = await target.put(s, url, f"c{w}-{i}")
                except (aiohttp.ClientError, TimeoutError, OSError):
                    ok, nxt = False, None
                ms = (time.perf_counter() - t0) * 1000
                if now >= warm_until:
                    if ok:
                        lat.append(ms)
                    else:
                        errors += 1
                if nxt:
                    url = nxt
                elif not ok:
                    url = random.choice(target.urls())

        async def sampler() -> None:
            await asyncio.sleep(max(0.0, warm_until - time.monotonic()))
            cpu0.append(Cpu.take(pids))

        await asyncio.gather(sampler(), *(worker(w) for w in range(clients)))
        gen, srv = Cpu.take(pids).cores_since(cpu0[0])
        elections = await target.term(s) - term0
    return LoadResult(target.name, clients, len(lat), errors, duration, lat, gen, srv, elections)


@dataclass
class Failover:
    target: str
    seconds: float  # kill -> first commit of a put sent after the kill
    inflight_ms: list[float]  # how long puts in flight at the kill took to return
    inflight_failed: int
    probe_ms: float  # a put sent to a survivor right after the kill: time to its answer
    probe_ok: bool


FAILOVER_CLIENT_TIMEOUT_S = 0.25  # a client gives up on a put after this and retries


async def probe_survivor(target: Any, dead: str) -> tuple[float, bool]:
    """One put to a surviving member just after the kill, with no client timeout: how long
    the server holds it before answering (ringlock: 421 at once; etcd: about 7 s)."""
    url = next(u for u in target.urls() if u != dead)
    t0 = time.monotonic()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s:
        try:
            ok, _ = await target.put(s, url, "probe")
        except (aiohttp.ClientError, TimeoutError, OSError):
            ok = False
    return (time.monotonic() - t0) * 1000, ok


async def failover_trial(target: Any, clients: int = 4) -> Failover:
    timeout = aiohttp.ClientTimeout(total=FAILOVER_CLIENT_TIMEOUT_S)
    probe: list[tuple[float, bool]] = []
    async with aiohttp.ClientSession(timeout=timeout) as s:
        leader = await target.leader_url(s)
        assert leader
        kill_at: list[float] = []
        first: list[float] = []
        inflight: list[tuple[float, bool]] = []
        done = asyncio.Event()

        async def worker(w: int) -> None:
            url, i = leader, 0
            while not done.is_set():
                i += 1
                t0 = time.monotonic()
                try:
                    ok, nxt = await target.put(s, url, f"f{w}-{i}")
                except (aiohttp.ClientError, TimeoutError, OSError):
                    ok, nxt = False, None
                t1 = time.monotonic()
                if kill_at and t0 < kill_at[0] <= t1:
                    inflight.append(((t1 - kill_at[0]) * 1000, ok))
                if ok and kill_at and t0 >= kill_at[0]:
                    first.append(t1)
                    done.set()
                if nxt:
                    url = nxt
                elif not ok:
                    url = random.choice([u for u in target.urls() if u != leader])
                    await asyncio.sleep(0.01)

        async def killer() -> None:
            await asyncio.sleep(1.0)
            target.kill(leader)  # a signal: returns at once
            kill_at.append(time.monotonic())
            probe.append(await probe_survivor(target, leader))
            await asyncio.wait_for(done.wait(), 60)

        await asyncio.gather(killer(), *(worker(w) for w in range(clients)))
    return Failover(
        target.name,
        first[0] - kill_at[0],
        [ms for ms, _ in inflight],
        sum(1 for _, ok in inflight if not ok),
        *probe[0],
    )


async def wait_healthy(target: Any) -> None:
    target.start()
    async with aiohttp.ClientSession() as s:
        for _ in range(300):
            if await target.leader_url(s) and len(target.pids()) == 3:
                ok, _ = await target.put(s, await target.leader_url(s), "warm")
                if ok:
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{target.name} did not become healthy")


# -- main ------------------------------------------------------------------------------


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    root = tempfile.mkdtemp(prefix="bench-raft-")
    ours = Ringlock(root, args.tick_ms, args.election_ticks)
    etcd = Etcd()
    targets = [ours] if args.skip_etcd else [ours, etcd]
    out: dict[str, Any] = {"load": [], "failover": [], "loadavg_start": loadavg()}
    try:
        for t in targets:
            await wait_healthy(t)
        for clients in args.clients:
            for rep in range(args.reps):
                order = targets if rep % 2 == 0 else list(reversed(targets))
                for t in order:
                    await wait_healthy(t)
                    r = await run_load(t, clients, args.duration)
                    out["load"].append(r)
                    print(
                        f"  {t.name:8} {clients:3} clients: {r.rate:7.0f}/s  "
                        f"p50 {r.pct(0.5):6.1f} ms  p99 {r.pct(0.99):6.1f} ms  "
                        f"errors {r.errors}  cpu gen {r.gen_cores:.2f} "
                        f"servers {r.server_cores:.2f}  elections {r.elections}",
                        flush=True,
                    )
        for trial in range(args.trials):
            order = targets if trial % 2 == 0 else list(reversed(targets))
            for t in order:
                await wait_healthy(t)
                await asyncio.sleep(1.0)
                f = await failover_trial(t)
                out["failover"].append(f)
                worst = max(f.inflight_ms, default=0.0)
                print(
                    f"  {t.name:8} failover {f.seconds:5.2f} s; {len(f.inflight_ms)} in "
                    f"flight, {f.inflight_failed} failed, slowest back after {worst:.0f} ms;"
                    f" put to a survivor answered after {f.probe_ms:.0f} ms "
                    f"({'ok' if f.probe_ok else 'error'})",
                    flush=True,
                )
                await wait_healthy(t)
    finally:
        ours.stop()
        etcd.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    out["loadavg_end"] = loadavg()
    return out


def summarize(out: dict[str, Any], names: list[str]) -> None:
    print("\n| clients | target | puts/s | p50 ms | p99 ms | gen CPU | server CPU | elections |")
    print("|---|---|---|---|---|---|---|---|")
    clients = sorted({r.clients for r in out["load"]})
    best: dict[tuple[str, int], dict[str, float]] = {}
    for c in clients:
        for n in names:
            rs = [r for r in out["load"] if r.clients == c and r.target == n]
            if not rs:
                continue
            lat = [x for r in rs for x in r.latencies_ms]
            agg = LoadResult(
                n,
                c,
                sum(r.ops for r in rs),
                sum(r.errors for r in rs),
                sum(r.seconds for r in rs),
                lat,
            )
            g = statistics.mean(r.gen_cores for r in rs)
            sv = statistics.mean(r.server_cores for r in rs)
            best[(n, c)] = {"rate": agg.rate, "p50": agg.pct(0.5), "p99": agg.pct(0.99)}
            print(
                f"| {c} | {n} | {agg.rate:.0f} | {agg.pct(0.5):.1f} | {agg.pct(0.99):.1f} "
                f"| {g:.2f} | {sv:.2f} | {sum(r.elections for r in rs)} |"
            )
    if len(names) == 2:
        print("\n| clients | puts/s ratio | p50 ratio | p99 ratio |  (ringlock / etcd)")
        print("|---|---|---|---|")
        for c in clients:
            a, b = best.get((names[0], c)), best.get((names[1], c))
            if a and b:
                print(
                    f"| {c} | {ratio(a['rate'], b['rate']):.2f} | "
                    f"{ratio(a['p50'], b['p50']):.2f} | {ratio(a['p99'], b['p99']):.2f} |"
                )
    print(
        "\n| target | failover median s | min | max | in-flight puts: failed / total, "
        "slowest back ms | put to a survivor: median answer ms |"
    )
    print("|---|---|---|---|---|---|")
    med: dict[str, float] = {}
    for n in names:
        fs = [f for f in out["failover"] if f.target == n]
        if not fs:
            continue
        secs = [f.seconds for f in fs]
        med[n] = statistics.median(secs)
        inflight = [ms for f in fs for ms in f.inflight_ms]
        print(
            f"| {n} | {med[n]:.2f} | {min(secs):.2f} | {max(secs):.2f} | "
            f"{sum(f.inflight_failed for f in fs)} / {len(inflight)}, "
            f"{max(inflight, default=0):.0f} | "
            f"{statistics.median(f.probe_ms for f in fs):.0f} |"
        )
    if len(med) == 2:
        print(f"\nfailover median ratio ringlock/etcd: {med[names[0]] / med[names[1]]:.2f}")
    print(
        f"\nmachine: {busy_note(out['loadavg_start'][0])} at start, "
        f"{busy_note(out['loadavg_end'][0])} at end"
    )


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--clients", type=lambda s: [int(x) for x in s.split(",")], default=[1, 16, 64])
    p.add_argument("--duration", type=float, default=5.0, help="seconds per load cell")
    p.add_argument("--reps", type=int, default=2, help="A/B repetitions per client count")
    p.add_argument("--trials", type=int, default=5, help="failover trials per target")
    p.add_argument("--tick-ms", type=float, default=40.0)
    p.add_argument("--election-ticks", type=int, default=10)
    p.add_argument("--skip-etcd", action="store_true")
    p.add_argument("--keep", action="store_true")
    p.add_argument("--json", help="write raw figures here")
    args = p.parse_args()
    out = asyncio.run(main_async(args))
    names = ["ringlock"] if args.skip_etcd else ["ringlock", "etcd"]
    summarize(out, names)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "load": [
                        {k: v for k, v in r.__dict__.items() if k != "latencies_ms"}
                        | {"p50": r.pct(0.5), "p99": r.pct(0.99), "rate": r.rate}
                        for r in out["load"]
                    ],
                    "failover": [f.__dict__ for f in out["failover"]],
                },
                f,
                indent=1,
            )


if __name__ == "__main__":
    main()
