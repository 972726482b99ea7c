"""Closed-loop load generator shared by bench/kv.py and bench/lock.py.

    from bench.loadgen import LoadSpec, run
    result = run(LoadSpec("bench.etcd_target:EtcdKV", {"urls": [...], "mix": "put"},
                          clients=64, procs=2, duration_s=10), server_pids=[...])

Theory of operation: `run` starts `procs` worker processes (`python -m bench.loadgen
--worker`), because one Python process issuing HTTP requests saturates one core long before
the servers do (about 120 us of client CPU per request on these machines). Clients are dealt
round-robin to the workers. Each worker imports the workload class named in the spec
(`module:Class`, a `Workload` or `ThreadWorkload` subclass in one of the bench/*_target.py
adapters), runs its `setup` (sessions, leases, connections), reports ready, and waits for
"go". The parent then gives every worker the same two instants on CLOCK_MONOTONIC (one
clock for all processes of the machine): the end of the warm-up and the end of the run.

Each client is a closed loop: it sends one operation, waits for its answer, records it, and
sends the next, until the end instant; then the worker waits for operations in flight,
runs `teardown`, and writes every operation that completed after the warm-up (start and end
times, label, sub-latencies, an optional order key) plus its own CPU time over the measured
window as one JSON line. The parent samples the servers' CPU (each pid with its
descendants, every 0.25 s, so a pid SIGKILLed mid-run keeps its last reading), fires timed
events (e.g. a SIGKILL) and merges the records into a `LoadResult`: throughput, p50/p99 per
label and per sub-latency, errors by kind, and the longest gap between two successful
operations anywhere in the window (its edges included).

Async workloads share one aiohttp session per worker (keep-alive, no connection limit);
thread workloads (kazoo, which is synchronous) get one thread per client.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import loadavg, tree_cpu_seconds

ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 120.0  # setup of 64 sessions on a busy machine


# -- what a workload is ----------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """One successful operation: its label ("put", "get", "cycle"), sub-latencies in ms
    (e.g. ("acquire", 3.2)), and an order key (a lock's grant order, for the FIFO check)."""

    label: str = "op"
    parts: tuple[tuple[str, float], ...] = ()
    order: float | None = None


class OpFailed(Exception):
    """The target answered an operation with an error; str() is the error's kind."""


class Workload:
    """Base of async workloads. Subclasses live in the target adapters; `params` come from
    the LoadSpec (JSON values only, since they cross a process boundary)."""

    kind = "async"

    def __init__(self, **params: Any) -> None:
        self.params = params

    async def setup(self, session: Any, client_ids: list[int]) -> None:
        """Before the clock starts: create sessions, leases, whatever each client needs."""

    async def op(self, cid: int, i: int) -> Outcome:  # pragma: no cover - abstract
        raise NotImplementedError

    async def teardown(self) -> None:
        """After the run: release what setup created (best effort)."""

    def report(self) -> dict[str, Any]:
        """Anything the workload found out (after teardown), e.g. whether a lock held across
        a failover was kept; lands in `LoadResult.extra`, one dict per worker."""
        return {}


class ThreadWorkload:
    """Base of synchronous workloads (kazoo): one thread per client runs `op`."""

    kind = "thread"

    def __init__(self, **params: Any) -> None:
        self.params = params

    def setup(self, client_ids: list[int]) -> None:
        """Before the clock starts."""

    def op(self, cid: int, i: int) -> Outcome:  # pragma: no cover - abstract
        raise NotImplementedError

    def teardown(self) -> None:
        """After the run (best effort)."""

    def report(self) -> dict[str, Any]:
        """As `Workload.report`."""
        return {}


@dataclass(frozen=True)
class LoadSpec:
    workload: str  # "module:Class"
    params: dict[str, Any]
    clients: int
    procs: int = 2
    duration_s: float = 10.0
    warmup_s: float = 1.0
    timeout_s: float = 10.0  # per HTTP request
    error_backoff_s: float = 0.01  # a client pauses this long after an error (no hot spin)


# -- the two workload shapes (targets fill in the requests) ----------------------------


class KVWorkload(Workload):
    """put, get or 50/50 mixed on `keyspace` preloaded keys (gets) and fresh keys (puts:
    a Dynamo put without a context on an existing key would add a sibling, so puts never
    overwrite). params: urls (client c starts on urls[c % len], moves on after a connection
    error), mix ("put" | "get" | "mixed"), keyspace, value_size, run (a tag that makes
    this run's put keys new)."""

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.urls: list[str] = list(params["urls"])
        self.mix: str = params.get("mix", "put")
        self.keyspace: int = int(params.get("keyspace", 1000))
        self.value = os.urandom(int(params.get("value_size", 256)))
        self.run_tag = str(params.get("run", "0"))
        self.node: dict[int, int] = {}
        self.session: Any = None

    async def setup(self, session: Any, client_ids: list[int]) -> None:
        self.session = session
        self.node = {c: c % len(self.urls) for c in client_ids}

    def url(self, cid: int) -> str:
        return self.urls[self.node.get(cid, 0)]

    def move_on(self, cid: int) -> None:
        """After a connection error: the client tries the next node, as clients do."""
        self.node[cid] = (self.node.get(cid, 0) + 1) % len(self.urls)

    @staticmethod
    def stored_key(j: int) -> bytes:
        return b"key-%08d" % j

    async def op(self, cid: int, i: int) -> Outcome:
        if self.mix == "get" or (self.mix == "mixed" and i % 2 == 0):
            j = (cid * 7919 + i * 104729) % self.keyspace
            await self.get(cid, self.stored_key(j))
            return Outcome("get")
        key = f"put-{self.run_tag}-{cid}-{i}".encode()
        await self.put(cid, key, self.value)
        return Outcome("put")

    async def put(self, cid: int, key: bytes, value: bytes) -> None:  # pragma: no cover
        raise NotImplementedError

    async def get(self, cid: int, key: bytes) -> None:  # pragma: no cover
        raise NotImplementedError


def preload(workload: str, params: dict[str, Any], keyspace: int, concurrency: int = 32,
            timeout_s: float = 30.0) -> int:  # fmt: skip
    """Write `stored_key(0..keyspace-1)` through the workload's own put (in this process,
    before any measured run); return how many puts failed after 3 tries each."""
    import aiohttp

    async def go() -> int:
        wl = load_class(workload)(**params)
        failed = 0
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                         timeout=timeout) as session:  # fmt: skip
            await wl.setup(session, list(range(concurrency)))

            async def filler(c: int) -> None:
                nonlocal failed
                for j in range(c, keyspace, concurrency):
                    for attempt in range(3):
                        try:
                            await wl.put(c, wl.stored_key(j), wl.value)
                            break
                        except Exception:
                            if attempt == 2:
                                failed += 1
                            await asyncio.sleep(0.1)

            await asyncio.gather(*(filler(c) for c in range(concurrency)))
        return failed

    return asyncio.run(go())


class LockWorkload(Workload):
    """Acquire + release cycles, each client on its own lock ("distinct") or all on one
    ("contended"). Each client holds one session (or lease) for the whole run and keeps it
    alive in the background as the systems' own client libraries do. The outcome's order
    key is the target's grant order (`order_means = "grant"`) or enqueue order
    ("enqueue"), for the FIFO check. params: urls, mode, ttl_ms, wait_ms, run, holder (the
    worker of client 0 also holds one lock through its own session for the whole run and
    reports whether it still held it at the end: the failover check)."""

    order_means = "grant"
    HOLDER = -1

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.urls: list[str] = list(params["urls"])
        self.mode: str = params.get("mode", "distinct")
        self.ttl_ms = int(params.get("ttl_ms", 10_000))
        self.wait_ms = int(params.get("wait_ms", 10_000))
        self.run_tag = str(params.get("run", "0"))
        self.session: Any = None
        self._keepalives: list[asyncio.Task[None]] = []
        self.holder_kept: bool | None = None

    def lock_name(self, cid: int) -> str:
        if self.mode == "contended":
            return f"bench-{self.run_tag}-one"
        return f"bench-{self.run_tag}-{cid}"

    async def setup(self, session: Any, client_ids: list[int]) -> None:
        self.session = session
        await self.connect()
        holder = [self.HOLDER] if self.params.get("holder") and 0 in client_ids else []
        for cid in [*client_ids, *holder]:
            await self.open_session(cid)
            self._keepalives.append(asyncio.create_task(self.keepalive(cid)))
        if holder:
            await self.acquire(self.HOLDER, self.held_name())
            self.holder_kept = False

    def held_name(self) -> str:
        return f"bench-{self.run_tag}-held"

    async def op(self, cid: int, i: int) -> Outcome:
        name = self.lock_name(cid)
        t0 = time.perf_counter()
        order = await self.acquire(cid, name)
        t1 = time.perf_counter()
        await self.release(cid, name)
        return Outcome("cycle", (("acquire", (t1 - t0) * 1000),), order)

    async def teardown(self) -> None:
        if self.holder_kept is not None:
            try:
                self.holder_kept = await self.still_holds(self.HOLDER, self.held_name())
            except Exception:
                self.holder_kept = False
        for t in self._keepalives:
            t.cancel()
        for cid in list(self.sessions()):
            with contextlib.suppress(Exception):
                await self.close_session(cid)

    def report(self) -> dict[str, Any]:
        return {} if self.holder_kept is None else {"holder_kept": self.holder_kept}

    async def connect(self) -> None:
        """Find the leader (or whatever the target needs before sessions)."""

    async def still_holds(self, cid: int, name: str) -> bool:  # pragma: no cover - abstract
        """Whether `cid`'s session still holds `name` (checked by the server)."""
        raise NotImplementedError

    def sessions(self) -> list[int]:  # pragma: no cover - abstract
        raise NotImplementedError

    async def open_session(self, cid: int) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    async def keepalive(self, cid: int) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    async def acquire(self, cid: int, name: str) -> float | None:  # pragma: no cover
        raise NotImplementedError

    async def release(self, cid: int, name: str) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    async def close_session(self, cid: int) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


# -- the worker process ----------------------------------------------------------------


def _cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


class _Recorder:
    """Per-worker records; times are seconds after the warm-up instant."""

    def __init__(self, warm_until: float) -> None:
        self.warm_until = warm_until
        self.ok: list[list[Any]] = []
        self.err: list[list[Any]] = []
        self.kinds: dict[str, int] = {}

    def success(self, cid: int, t0: float, t1: float, out: Outcome) -> None:
        if t1 >= self.warm_until:
            w = self.warm_until
            self.ok.append([round(t0 - w, 6), round(t1 - w, 6), out.label,
                            dict(out.parts) or None, out.order, cid])  # fmt: skip

    def failure(self, t0: float, t1: float, exc: BaseException) -> None:
        if t1 >= self.warm_until:
            kind = str(exc) if isinstance(exc, OpFailed) else type(exc).__name__
            k = self.kinds.setdefault(kind[:120], len(self.kinds))
            self.err.append([round(t0 - self.warm_until, 6), round(t1 - self.warm_until, 6), k])


async def _async_worker(spec: LoadSpec, wl: Workload, ids: list[int]) -> dict[str, Any]:
    import aiohttp

    loop = asyncio.get_running_loop()
    conn = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=spec.timeout_s)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session:
        await wl.setup(session, ids)
        print(json.dumps({"ready": True}), flush=True)
        go = json.loads(await loop.run_in_executor(None, sys.stdin.readline))
        warm_until, end = go["warm_until"], go["end"]
        rec = _Recorder(warm_until)
        cpu: dict[str, float] = {}

        async def client(cid: int) -> None:
            i = 0
            mono = time.monotonic
            while (t0 := mono()) < end:
                i += 1
                try:
                    out = await wl.op(cid, i)
                except Exception as exc:  # every failure is a figure, never a crash
                    rec.failure(t0, mono(), exc)
                    await asyncio.sleep(spec.error_backoff_s)
                else:
                    rec.success(cid, t0, mono(), out)

        async def cpu_sampler() -> None:
            await asyncio.sleep(max(0.0, warm_until - time.monotonic()))
            cpu["start"] = _cpu_seconds()
            await asyncio.sleep(max(0.0, end - time.monotonic()))
            cpu["end"] = _cpu_seconds()

        await asyncio.gather(cpu_sampler(), *(client(c) for c in ids))
        with contextlib.suppress(Exception):
            await wl.teardown()
    return {"ok": rec.ok, "err": rec.err, "kinds": list(rec.kinds),
            "cpu_s": cpu["end"] - cpu["start"], "stuck": 0, "extra": wl.report()}  # fmt: skip


def _thread_worker(spec: LoadSpec, wl: ThreadWorkload, ids: list[int]) -> dict[str, Any]:
    wl.setup(ids)
    print(json.dumps({"ready": True}), flush=True)
    go = json.loads(sys.stdin.readline())
    warm_until, end = go["warm_until"], go["end"]
    rec = _Recorder(warm_until)
    lock = threading.Lock()

    def client(cid: int) -> None:
        i = 0
        while (t0 := time.monotonic()) < end:
            i += 1
            try:
                out = wl.op(cid, i)
            except Exception as exc:
                with lock:
                    rec.failure(t0, time.monotonic(), exc)
                time.sleep(spec.error_backoff_s)
            else:
                with lock:
                    rec.success(cid, t0, time.monotonic(), out)

    threads = [threading.Thread(target=client, args=(c,), daemon=True) for c in ids]
    for t in threads:
        t.start()
    time.sleep(max(0.0, warm_until - time.monotonic()))
    c0 = _cpu_seconds()
    time.sleep(max(0.0, end - time.monotonic()))
    c1 = _cpu_seconds()
    deadline = time.monotonic() + spec.timeout_s + 5
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    stuck = sum(t.is_alive() for t in threads)
    with contextlib.suppress(Exception):
        wl.teardown()
    with lock:
        return {"ok": list(rec.ok), "err": list(rec.err), "kinds": list(rec.kinds),
                "cpu_s": c1 - c0, "stuck": stuck, "extra": wl.report()}  # fmt: skip


def load_class(path: str) -> type:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def worker_main() -> int:
    """One worker process: spec on the first stdin line, result on the last stdout line."""
    first = json.loads(sys.stdin.readline())
    spec = LoadSpec(**first["spec"])
    ids: list[int] = first["client_ids"]
    try:
        wl = load_class(spec.workload)(**spec.params)
        if wl.kind == "thread":
            result = _thread_worker(spec, wl, ids)
        else:
            result = asyncio.run(_async_worker(spec, wl, ids))
    except Exception as exc:
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
        raise
    print(json.dumps(result), flush=True)
    sys.stdout.flush()
    os._exit(0)  # kazoo may leave non-daemon threads behind


# -- the parent ------------------------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an already sorted list (None when empty)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


def latency_summary(values_ms: list[float]) -> dict[str, Any]:
    v = sorted(values_ms)
    return {"n": len(v), "p50_ms": percentile(v, 0.5), "p99_ms": percentile(v, 0.99),
            "max_ms": v[-1] if v else None}  # fmt: skip


def longest_gap(times: list[float], start: float, end: float) -> tuple[float, float]:
    """Longest stretch of [start, end] without a time in `times`: (length, where it began)."""
    best, at, prev = 0.0, start, start
    for t in sorted(x for x in times if start <= x <= end):
        if t - prev > best:
            best, at = t - prev, prev
        prev = t
    if end - prev > best:
        best, at = end - prev, prev
    return best, at


@dataclass
class LoadResult:
    """A run's figures. Times are seconds after the warm-up instant; `ok` and `err` keep
    the raw records ([t0, t1, label, parts, order, client] and [t0, t1, error kind]) for
    checks such as FIFO and failover."""

    target: str
    workload: str
    clients: int
    procs: int
    duration_s: float
    ops: int
    rate: float
    latency: dict[str, Any]
    labels: dict[str, dict[str, Any]]
    parts: dict[str, dict[str, Any]]
    errors: int
    error_kinds: dict[str, int]
    longest_gap_s: float
    longest_gap_at_s: float
    longest_client_gap_s: float  # the longest any one client went without a success
    client_cores: float
    server_cores: float
    server_cores_by_pid: dict[int, float]
    loadavg_before: tuple[float, float, float]
    loadavg_after: tuple[float, float, float]
    stuck_clients: int = 0
    events: dict[str, Any] = field(default_factory=dict)
    extra: list[dict[str, Any]] = field(default_factory=list)
    t0_monotonic: float = 0.0  # the warm-up instant on CLOCK_MONOTONIC (times are after it)
    ok: list[list[Any]] = field(default_factory=list, repr=False)
    err: list[list[Any]] = field(default_factory=list, repr=False)

    def as_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("ok")
        d.pop("err")
        d["server_cores_by_pid"] = {str(k): v for k, v in self.server_cores_by_pid.items()}
        return d


def _spawn(spec: LoadSpec, ids: list[int], errlog: Any) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.loadgen", "--worker"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=errlog,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdin is not None
    proc.stdin.write(json.dumps({"spec": asdict(spec), "client_ids": ids}) + "\n")
    proc.stdin.flush()
    return proc


def _read_line(proc: subprocess.Popen[str], what: str, errlog: Any) -> dict[str, Any]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    msg = json.loads(line) if line.strip() else {"error": "worker exited"}
    if "error" in msg:
        errlog.flush()
        errlog.seek(0)
        tail = errlog.read()[-2000:]
        raise RuntimeError(f"load generator worker failed during {what}: {msg['error']}\n{tail}")
    return msg


def run(
    spec: LoadSpec,
    *,
    target: str = "",
    server_pids: Callable[[], list[int]] | list[int] = (),  # type: ignore[assignment]
    events: list[tuple[float, str, Callable[[], Any]]] = (),  # type: ignore[assignment]
) -> LoadResult:
    """Run `spec` and return its figures. `events` are (seconds after warm-up, name, fn):
    each fn runs in the parent at that instant and its return value lands in
    `result.events[name]` (with the instant itself under `name + "_at_s"`)."""
    procs = max(1, min(spec.procs, spec.clients))
    groups = [list(range(p, spec.clients, procs)) for p in range(procs)]
    pid_source = server_pids if callable(server_pids) else (lambda: list(server_pids))
    workers: list[subprocess.Popen[str]] = []
    with tempfile.TemporaryFile("w+") as errlog:
        try:
            workers = [_spawn(spec, ids, errlog) for ids in groups]
            deadline = time.monotonic() + READY_TIMEOUT_S
            for w in workers:
                _read_line(w, "setup", errlog)
                if time.monotonic() > deadline:
                    raise RuntimeError("load generator workers not ready in time")
            warm_until = time.monotonic() + 0.2 + spec.warmup_s
            end = warm_until + spec.duration_s
            for w in workers:
                assert w.stdin is not None
                w.stdin.write(json.dumps({"warm_until": warm_until, "end": end}) + "\n")
                w.stdin.flush()
            load0 = loadavg()
            cpu_start: dict[int, float] = {}
            cpu_last: dict[int, float] = {}

            def sample(first: bool) -> None:
                for pid in pid_source():
                    with contextlib.suppress(OSError):
                        v = tree_cpu_seconds(pid)
                        if first or pid not in cpu_start:
                            cpu_start.setdefault(pid, v)
                        cpu_last[pid] = v

            time.sleep(max(0.0, warm_until - time.monotonic()))
            sample(True)
            fired: dict[str, Any] = {}
            pending = sorted(events, key=lambda e: e[0])
            while (now := time.monotonic()) < end:
                while pending and now >= warm_until + pending[0][0]:
                    _, name, fn = pending.pop(0)
                    fired[name + "_at_s"] = time.monotonic() - warm_until
                    fired[name] = fn()
                    now = time.monotonic()
                nxt = end if not pending else min(end, warm_until + pending[0][0])
                time.sleep(max(0.0, min(0.25, nxt - now)))
                sample(False)
            sample(False)
            load1 = loadavg()
            results = [_read_line(w, "the run", errlog) for w in workers]
        finally:
            for w in workers:
                with contextlib.suppress(Exception):
                    if w.poll() is None:
                        w.kill()
                    w.wait(5)
                for pipe in (w.stdin, w.stdout):
                    with contextlib.suppress(Exception):
                        pipe.close()  # type: ignore[union-attr]
    result = _merge(spec, target, procs, results, cpu_start, cpu_last, load0, load1, fired)
    result.t0_monotonic = warm_until
    return result


def _merge(spec: LoadSpec, target: str, procs: int, results: list[dict[str, Any]],
           cpu_start: dict[int, float], cpu_last: dict[int, float],
           load0: Any, load1: Any, fired: dict[str, Any]) -> LoadResult:  # fmt: skip
    dur = spec.duration_s
    ok = [r for res in results for r in res["ok"]]
    err = [[t0, t1, res["kinds"][k]] for res in results for t0, t1, k in res["err"]]
    in_window = [r for r in ok if r[1] <= dur]
    lat_all: list[float] = []
    by_label: dict[str, list[float]] = {}
    by_part: dict[str, list[float]] = {}
    for t0, t1, label, parts, _order, _cid in in_window:
        ms = (t1 - t0) * 1000
        lat_all.append(ms)
        by_label.setdefault(label, []).append(ms)
        for name, pms in (parts or {}).items():
            by_part.setdefault(name, []).append(pms)
    errs = [e for e in err if e[1] <= dur]
    gap, gap_at = longest_gap([r[1] for r in in_window], 0.0, dur)
    per_client: dict[int, list[float]] = {c: [] for c in range(spec.clients)}
    for r in in_window:
        per_client.setdefault(r[5], []).append(r[1])
    client_gap = max((longest_gap(ts, 0.0, dur)[0] for ts in per_client.values()), default=dur)
    labels = {k: latency_summary(v) | {"rate": len(v) / dur} for k, v in by_label.items()}
    by_pid = {pid: (cpu_last[pid] - cpu_start[pid]) / dur for pid in cpu_start}
    return LoadResult(
        target=target,
        workload=spec.workload,
        clients=spec.clients,
        procs=procs,
        duration_s=dur,
        ops=len(in_window),
        rate=len(in_window) / dur,
        latency=latency_summary(lat_all),
        labels=labels,
        parts={k: latency_summary(v) for k, v in by_part.items()},
        errors=len(errs),
        error_kinds=dict(Counter(e[2] for e in errs)),
        longest_gap_s=gap,
        longest_gap_at_s=gap_at,
        longest_client_gap_s=client_gap,
        client_cores=sum(r["cpu_s"] for r in results) / dur,
        server_cores=sum(by_pid.values()),
        server_cores_by_pid=by_pid,
        loadavg_before=tuple(load0),
        loadavg_after=tuple(load1),
        stuck_clients=sum(r["stuck"] for r in results),
        events=fired,
        extra=[r.get("extra", {}) for r in results],
        ok=ok,
        err=err,
    )


if __name__ == "__main__":
    if sys.argv[1:] == ["--worker"]:
        sys.exit(worker_main())
    print(__doc__)
    sys.exit(2)
