"""Lock benchmark (issue 7): ringlock's lock service beside etcd 3.4 (leases + its lock API
through the HTTP gateway) and ZooKeeper 3.8 (kazoo's lock recipe), 3 members each, driven by
the same closed-loop load generator (bench/loadgen.py), interleaved, ratios printed.

    .venv/bin/python -m bench.lock --quick               # about 4 minutes
    .venv/bin/python -m bench.lock                       # the issue's figures (~15 minutes)
    .venv/bin/python -m bench.lock --targets ringlock --only distinct,failover --json out.json

Phases (`--only`, comma list; all by default):
- `distinct`: acquire+release cycles per second, each client on its own lock, at 1 and 64
  clients (`--clients`); acquire p50/p99 and cycle p99. Each client holds one session (etcd:
  one lease, ZooKeeper: one kazoo session) for the whole run, kept alive in the background.
- `contended`: all clients (`--contended-clients`, default 16) on one lock; cycles per second
  and the FIFO check: pairs of acquires where the later-queued one was granted first
  ("overtakes"), with the queueing order taken from the server when it reveals it
  (ZooKeeper's lock node sequence) or else from the client's send time, and the grant order
  from the server when it reveals it (ringlock's sequencer generation, etcd's revision) or
  else from the client's receive time; pairs closer than `--fifo-margin-ms` (50) on the
  client clock are not counted (requests on different connections may reach the server in
  either order, and a busy machine delays a client between its clock reading and its send,
  or between the grant and its receive). Both counts, at 0 ms and at the margin, are
  printed. etcd's and ZooKeeper's locks are FIFO by construction (each waiter waits for
  the key or sequence node just before its own), so their counts show the noise floor of
  this method; etcd's is measured exactly as ringlock's (server grant order, client send
  time).
- `keepalive`: `--sessions` (1,000) idle sessions with a 10 s TTL kept alive for
  `--keepalive-s`: ringlock's long-polling KeepAlive vs etcd leases renewed at TTL/3 (what
  etcd's session helper does). CPU of the leader, of all members, and of the client;
  each target's idle CPU (no sessions) measured just before.
- `failover`: 4 clients cycling on distinct locks (client timeout 0.5 s, then the next
  member) plus one session holding a lock; the leader is SIGKILLed 1 s into the run; the
  figure is the time from the signal until the first acquire *sent after it* succeeds; and
  whether the held lock was still held by its session at the end. The killed member is
  restarted between trials.

All three systems stay up for the whole run (their idle CPU, printed at the start, runs
beside every measurement); rounds alternate the target order (A B C, then C B A).
Stopped in `finally`: every process this benchmark started, anchors included.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import os
import resource
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sortedcontainers import SortedList

from bench._common import busy_note, loadavg, machine, ratio, tree_cpu_seconds
from bench.loadgen import LoadResult, LoadSpec, run

TARGETS = ("ringlock", "etcd", "zookeeper")
PHASES = ("distinct", "contended", "keepalive", "failover")
WORKLOADS = {
    "ringlock": "bench.ringlock_target:RinglockLock",
    "etcd": "bench.etcd_target:EtcdLock",
    "zookeeper": "bench.zk_target:ZkLock",
}
ORDER_MEANS = {"ringlock": "grant", "etcd": "grant", "zookeeper": "enqueue"}
TTL_MS = 10_000


# -- the clusters ----------------------------------------------------------------------


class Clusters:
    """The three 3-member systems; `stop()` stops whatever this process started."""

    def __init__(self, names: list[str], root: str) -> None:
        self.names = names
        self.root = root
        self.c: dict[str, Any] = {}

    def start(self) -> None:
        for name in self.names:
            if name == "ringlock":
                from bench.ringlock_target import LockCluster

                self.c[name] = LockCluster(os.path.join(self.root, "ringlock"))
            elif name == "etcd":
                from bench.etcd_target import EtcdCluster

                self.c[name] = EtcdCluster()
            else:
                from bench.zk_target import ZkCluster

                self.c[name] = ZkCluster()
            self.c[name].start()

    def ensure(self, name: str) -> None:
        """Restart a killed member and wait for a leader (each class knows how)."""
        self.c[name].start()

    def pids(self, name: str) -> list[int]:
        return self.c[name].pids()

    def params(self, name: str) -> dict[str, Any]:
        if name == "zookeeper":
            return {"hosts": self.c[name].hosts()}
        return {"urls": self.c[name].urls()}

    def leader_pid(self, name: str) -> int | None:
        c = self.c[name]
        if name == "ringlock":
            return c.leader_pid()
        if name == "etcd":
            url = c.leader_url()
            return c.pid_of(c.member_of(url)) if url else None
        member = c.leader()
        return c.pid_of(member) if member else None

    def stop(self) -> None:
        for name in reversed(list(self.c)):
            with contextlib.suppress(Exception):
                self.c[name].stop()


def idle_cores(pids: list[int], seconds: float) -> float:
    start = {p: tree_cpu_seconds(p) for p in pids}
    time.sleep(seconds)
    return sum(tree_cpu_seconds(p) - v for p, v in start.items()) / seconds


# -- the FIFO check --------------------------------------------------------------------


def overtakes(result: LoadResult, order_means: str, margin_s: float) -> int:
    """Pairs (A, B) where A queued before B but B was granted first; the client-clock side
    of the comparison needs a lead of more than `margin_s` (see the module docstring)."""
    items = []
    for t0, t1, _label, _parts, order, _cid in result.ok:
        if order is None:
            continue
        items.append((order, t1) if order_means == "enqueue" else (t0, order))
    m_enq = margin_s if order_means == "grant" else 0.0
    m_grant = margin_s if order_means == "enqueue" else 0.0
    items.sort()
    enq = [e for e, _ in items]
    seen: SortedList = SortedList()
    count = k = 0
    for e_b, g_b in items:
        limit = bisect.bisect_left(enq, e_b - m_enq) if m_enq else bisect.bisect_left(enq, e_b)
        while k < limit:
            seen.add(items[k][1])
            k += 1
        count += len(seen) - seen.bisect_right(g_b + m_grant)
    return count


# -- phases ----------------------------------------------------------------------------


def spec(name: str, cl: Clusters, args: argparse.Namespace, *, mode: str, clients: int,
         tag: str, duration: float, **extra: Any) -> LoadSpec:  # fmt: skip
    procs = args.zk_procs if name == "zookeeper" else args.procs
    timeout_s = extra.pop("timeout_s", 15.0)
    params = cl.params(name) | {"mode": mode, "ttl_ms": TTL_MS, "run": tag} | extra
    return LoadSpec(WORKLOADS[name], params, clients=clients, procs=procs,
                    duration_s=duration, warmup_s=args.warmup, timeout_s=timeout_s)


def show(r: LoadResult, extra: str = "") -> None:
    acq = r.parts.get("acquire", {})
    print(f"  {r.target:9} {r.clients:3} clients: {r.rate:7.0f} cycles/s  acquire p50 "
          f"{_ms(acq.get('p50_ms'))} p99 {_ms(acq.get('p99_ms'))}  cycle p99 "
          f"{_ms(r.latency['p99_ms'])}  errors {r.errors}  cpu client {r.client_cores:.2f} "
          f"servers {r.server_cores:.2f}{extra}", flush=True)  # fmt: skip


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:6.1f} ms"


def rotate(names: list[str], k: int) -> list[str]:
    return names if k % 2 == 0 else list(reversed(names))


def phase_load(cl: Clusters, args: argparse.Namespace, out: dict[str, Any], mode: str,
               clients_list: list[int]) -> None:  # fmt: skip
    for clients in clients_list:
        for rnd in range(args.rounds):
            for name in rotate(cl.names, rnd):
                cl.ensure(name)
                tag = f"{mode}{clients}r{rnd}-{int(time.time() * 1000)}"
                r = run(spec(name, cl, args, mode=mode, clients=clients, tag=tag,
                             duration=args.duration), target=name,
                        server_pids=lambda name=name: cl.pids(name))  # fmt: skip
                row = r.as_json() | {"phase": mode, "round": rnd}
                note = ""
                if mode == "contended":
                    row["overtakes_0ms"] = overtakes(r, ORDER_MEANS[name], 0.0)
                    row["overtakes_margin"] = overtakes(r, ORDER_MEANS[name],
                                                        args.fifo_margin_ms / 1000)  # fmt: skip
                    note = (f"  overtakes {row['overtakes_0ms']} "
                            f"(>{args.fifo_margin_ms:g} ms: {row['overtakes_margin']})")
                out["load"].append(row)
                show(r, note)


def phase_keepalive(cl: Clusters, args: argparse.Namespace, out: dict[str, Any]) -> None:
    for rnd in range(args.rounds):
        for name in rotate([n for n in cl.names if n in ("ringlock", "etcd")], rnd):
            cl.ensure(name)
            pids = cl.pids(name)
            leader = cl.leader_pid(name)
            idle = idle_cores(pids, 3.0)
            idle_leader = idle_cores([leader], 3.0) if leader else None
            marks: dict[str, tuple[float, dict[int, float], float]] = {}

            killed: dict[str, Any] = {}
            killer: list[threading.Timer] = []

            def mark(phase: str, pids: list[int] = pids, marks: dict[str, Any] = marks,
                     name: str = name, killed: dict[str, Any] = killed,
                     killer: list[threading.Timer] = killer) -> None:
                ru = resource.getrusage(resource.RUSAGE_SELF)
                cpu = {p: tree_cpu_seconds(p) for p in pids}
                marks[phase] = (time.monotonic(), cpu, ru.ru_utime + ru.ru_stime)
                if phase == "start" and args.keepalive_fault:
                    killer.append(threading.Timer(args.keepalive_fault_at, fault,
                                                  (cl, args, name, killed)))
                    killer[0].start()
                elif phase == "end" and killer:
                    killer[0].cancel()

            if name == "ringlock":
                from bench.ringlock_target import keepalive_sessions

                got = asyncio.run(keepalive_sessions(cl.c[name].urls(), args.sessions,
                                                     TTL_MS, args.keepalive_s, mark))  # fmt: skip
            else:
                from bench.etcd_target import keepalive_leases

                url = cl.c[name].leader_url()
                got = asyncio.run(keepalive_leases(url, args.sessions, TTL_MS // 1000,
                                                   args.keepalive_s, mark))
            if killer:
                killer[0].join()
            if killed.get("signal") == "kill":
                cl.ensure(name)  # restart the killed member before the next measurement
            (w0, c0, s0), (w1, c1, s1) = marks["start"], marks["end"]
            wall = w1 - w0
            row = got | {
                "phase": "keepalive", "target": name, "round": rnd, "seconds": wall,
                "ttl_ms": TTL_MS, "leader_pid": leader,
                "leader_cores": (c1[leader] - c0[leader]) / wall if leader in c1 else None,
                # a member killed in the window reads 0 at the end: count the survivors
                "members_cores": sum(c1[p] - c0[p] for p in c1 if c1[p] >= c0[p]) / wall,
                "client_cores": (s1 - s0) / wall,
                "idle_members_cores": idle, "idle_leader_cores": idle_leader,
                "fault": killed or None, "load": loadavg(),
            }  # fmt: skip
            out["keepalive"].append(row)
            renewals = row.get("keepalives", row.get("renewals"))
            lost = row.get("sessions_lost")
            moved = row.get("leader_before") != row.get("leader_after")
            how = {"kill": " (leader SIGKILLed)", "pause": " (leader paused)"}.get(
                killed.get("signal", ""), "")
            extra = "" if lost is None else (f", {lost} sessions lost"
                                             f"{', leader changed' if moved else ''}{how}"
                                             f"; load {row['load'][0]:.1f}")
            kinds = ", ".join(f"{k}: {v}" for k, v in row.get("failure_kinds", {}).items())
            if killed.get("signal") == "kill":
                row["leader_cores"] = float("nan")  # the first leader did not live through it
            print(f"  {name:9} {args.sessions} sessions: leader {row['leader_cores']:.3f} "
                  f"cores (idle {idle_leader:.3f}), members {row['members_cores']:.3f} "
                  f"(idle {idle:.3f}), client {row['client_cores']:.3f}; "
                  f"{renewals} renewals, {row['failures']} failed{extra}"
                  f"{f' ({kinds})' if kinds else ''}", flush=True)  # fmt: skip


def fault(cl: Clusters, args: argparse.Namespace, name: str, into: dict[str, Any]) -> None:
    """The keepalive window's fault: SIGKILL the leader, or pause it until it is deposed."""
    if args.keepalive_fault == "kill":
        into.update(cl.c[name].kill_leader(), signal="kill")
        return
    pid = cl.leader_pid(name)
    if pid is None:
        return
    into.update(signal="pause", pid=pid, at=time.monotonic())
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(args.pause_s)
    finally:
        os.kill(pid, signal.SIGCONT)


def phase_failover(cl: Clusters, args: argparse.Namespace, out: dict[str, Any]) -> None:
    for trial in range(args.trials):
        for name in rotate(cl.names, trial):
            cl.ensure(name)
            time.sleep(1.0)
            tag = f"fail{trial}-{int(time.time() * 1000)}"
            s = spec(name, cl, args, mode="distinct", clients=4, tag=tag,
                     duration=args.failover_s, holder=True, wait_ms=1000, timeout_s=0.5)
            r = run(LoadSpec(**{**s.__dict__, "procs": 1, "warmup_s": 0.5}), target=name,
                    server_pids=lambda name=name: cl.pids(name),
                    events=[(1.0, "kill", cl.c[name].kill_leader)])  # fmt: skip
            kill_at = r.events["kill"]["at"] - r.t0_monotonic
            after = [rec[1] for rec in r.ok if rec[0] >= kill_at]
            secs = min(after) - kill_at if after else None
            kept = [e["holder_kept"] for e in r.extra if "holder_kept" in e]
            errors_after = sum(1 for e in r.err if e[1] >= kill_at)
            row = {"phase": "failover", "target": name, "trial": trial, "seconds": secs,
                   "killed": r.events["kill"]["killed"], "holder_kept": kept[0] if kept else None,
                   "errors_after_kill": errors_after, "error_kinds": r.error_kinds,
                   "sessions_lost": sum(e.get("sessions_lost", 0) for e in r.extra),
                   "client_cores": r.client_cores, "server_cores": r.server_cores}  # fmt: skip
            out["failover"].append(row)
            shown = f"{secs:.2f} s" if secs is not None else f"none within {args.failover_s} s"
            print(f"  {name:9} failover {shown}; held lock kept: {row['holder_kept']}; "
                  f"{errors_after} errors after the kill "
                  f"({', '.join(f'{k}: {v}' for k, v in r.error_kinds.items()) or 'none'})",
                  flush=True)  # fmt: skip
            cl.ensure(name)


# -- summary ---------------------------------------------------------------------------


def _mean(rows: list[dict[str, Any]], key: str) -> float | None:
    vals = [r[key] for r in rows if r.get(key) is not None]
    return statistics.mean(vals) if vals else None


def _part(rows: list[dict[str, Any]], q: str) -> float | None:
    vals = [r["parts"]["acquire"][q] for r in rows if "acquire" in r["parts"]
            and r["parts"]["acquire"][q] is not None]  # fmt: skip
    return statistics.median(vals) if vals else None


def summarize(out: dict[str, Any], names: list[str]) -> list[tuple[str, str, str]]:
    """Print the tables; return the target lines (text, measured, verdict)."""
    agg: dict[tuple[str, int, str], dict[str, Any]] = {}
    rows = out["load"]
    if rows:
        print("\n| phase | clients | target | cycles/s | acquire p50 ms | acquire p99 ms | "
              "cycle p99 ms | errors | client CPU | server CPU | overtakes (0 / margin) |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
    for phase in ("distinct", "contended"):
        for c in sorted({r["clients"] for r in rows if r["phase"] == phase}):
            for n in names:
                rs = [r for r in rows if r["phase"] == phase and r["clients"] == c
                      and r["target"] == n]  # fmt: skip
                if not rs:
                    continue
                a = {"rate": _mean(rs, "rate"), "p50": _part(rs, "p50_ms"),
                     "p99": _part(rs, "p99_ms"),
                     "cycle_p99": statistics.median(r["latency"]["p99_ms"] or 0 for r in rs),
                     "errors": sum(r["errors"] for r in rs),
                     "client": _mean(rs, "client_cores"), "server": _mean(rs, "server_cores"),
                     "per_cpu": _mean([{"v": r["rate"] / r["server_cores"]} for r in rs
                                       if r["server_cores"] > 0], "v"),
                     "ot0": sum(r.get("overtakes_0ms", 0) for r in rs),
                     "otm": sum(r.get("overtakes_margin", 0) for r in rs)}  # fmt: skip
                agg[(phase, c, n)] = a
                ot = f"{a['ot0']} / {a['otm']}" if phase == "contended" else ""
                print(f"| {phase} | {c} | {n} | {a['rate']:.0f} | {_f(a['p50'])} | "
                      f"{_f(a['p99'])} | {a['cycle_p99']:.1f} | {a['errors']} | "
                      f"{a['client']:.2f} | {a['server']:.2f} | {ot} |")  # fmt: skip
    if rows and len(names) > 1:
        print("\n| phase | clients | ringlock / anchor | cycles/s ratio | acquire p99 ratio | "
              "cycles per server CPU-s ratio |")
        print("|---|---|---|---|---|---|")
        for (phase, c, n), a in sorted(agg.items()):
            mine = agg.get((phase, c, "ringlock"))
            if n == "ringlock" or not mine:
                continue
            print(f"| {phase} | {c} | {n} | {_x(ratio(mine['rate'], a['rate']))} | "
                  f"{_x(ratio(mine['p99'], a['p99']))} | "
                  f"{_x(ratio(mine['per_cpu'], a['per_cpu']))} |")
    ka: dict[str, dict[str, Any]] = {}
    if out["keepalive"]:
        print("\n| keepalive | sessions | TTL s | leader CPU | leader idle | members CPU | "
              "members idle | client CPU | renewals/s |")
        print("|---|---|---|---|---|---|---|---|---|")
        for n in names:
            rs = [r for r in out["keepalive"] if r["target"] == n]
            if not rs:
                continue
            k = {key: _mean(rs, key) for key in ("leader_cores", "idle_leader_cores",
                                                  "members_cores", "idle_members_cores",
                                                  "client_cores", "seconds")}  # fmt: skip
            ren = statistics.mean(r.get("keepalives", r.get("renewals", 0)) / r["seconds"]
                                  for r in rs)  # fmt: skip
            ka[n] = k
            print(f"| {n} | {rs[0]['sessions']} | {TTL_MS // 1000} | {k['leader_cores']:.3f} |"
                  f" {k['idle_leader_cores']:.3f} | {k['members_cores']:.3f} | "
                  f"{k['idle_members_cores']:.3f} | {k['client_cores']:.3f} | {ren:.0f} |")
    fo: dict[str, list[float]] = {}
    if out["failover"]:
        print("\n| failover | trials | median s | min s | max s | no success | held lock kept |"
              " errors after kill |")
        print("|---|---|---|---|---|---|---|---|")
        for n in names:
            rs = [r for r in out["failover"] if r["target"] == n]
            if not rs:
                continue
            secs = [r["seconds"] for r in rs if r["seconds"] is not None]
            fo[n] = secs
            kept = sum(1 for r in rs if r["holder_kept"])
            med = f"{statistics.median(secs):.2f}" if secs else "-"
            print(f"| {n} | {len(rs)} | {med} | {_f(min(secs, default=None))} | "
                  f"{_f(max(secs, default=None))} | {len(rs) - len(secs)} | {kept} / {len(rs)} |"
                  f" {sum(r['errors_after_kill'] for r in rs)} |")
    return targets(agg, ka, fo, out)


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}" if v < 10 else f"{v:.1f}"


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def targets(agg: dict[tuple[str, int, str], dict[str, Any]], ka: dict[str, dict[str, Any]],
            fo: dict[str, list[float]], out: dict[str, Any]) -> list[tuple[str, str, str]]:
    lines: list[tuple[str, str, str]] = []

    def verdict(ok: bool | None) -> str:
        return "[not measured]" if ok is None else "[met]" if ok else "[MISSED]"

    def both(key: tuple[str, int], anchor: str) -> tuple[Any, Any]:
        return agg.get((*key, "ringlock")), agg.get((*key, anchor))

    for c in sorted({k[1] for k in agg if k[0] == "distinct"}):
        a, b = both(("distinct", c), "etcd")
        r = ratio(a["rate"], b["rate"]) if a and b else None
        lines.append((f"distinct locks, {c} clients: cycles/s >= 1.0x etcd", _x(r),
                      verdict(None if r is None else r >= 1.0)))  # fmt: skip
        if c >= 64:
            p = ratio(a["p99"], b["p99"]) if a and b else None
            lines.append((f"distinct locks, {c} clients: acquire p99 <= etcd's", _x(p),
                          verdict(None if p is None else p <= 1.0)))  # fmt: skip
    for c in sorted({k[1] for k in agg if k[0] == "contended"}):
        a, b = both(("contended", c), "zookeeper")
        r = ratio(a["rate"], b["rate"]) if a and b else None
        lines.append((f"one contended lock, {c} clients: cycles/s >= 1.0x ZooKeeper", _x(r),
                      verdict(None if r is None else r >= 1.0)))  # fmt: skip
        if a:
            e = agg.get(("contended", c, "etcd"))
            floors = [f"{n} {x['otm']}" for n, x in (("etcd", e), ("ZooKeeper", b)) if x]
            floor = f" (FIFO by construction: {', '.join(floors)})" if floors else ""
            lines.append(("one contended lock: FIFO (no overtake beyond the margin)",
                          f"{a['otm']} overtakes{floor}", verdict(a["otm"] == 0)))  # fmt: skip
    if "ringlock" in ka:
        e = ka.get("etcd")
        r = ratio(ka["ringlock"]["leader_cores"], e["leader_cores"]) if e else None
        lines.append(("keepalive: leader CPU for the sessions <= etcd's for as many leases",
                      _x(r), verdict(None if r is None else r <= 1.0)))  # fmt: skip
        rs = [r for r in out["keepalive"] if r["target"] == "ringlock"]
        lost = sum(r.get("sessions_lost") or 0 for r in rs)
        moved = sum(1 for r in rs if r.get("leader_before") != r.get("leader_after"))
        lines.append(("keepalive: no idle session lost (leader changes during the window: "
                      f"{moved} of {len(rs)})", f"{lost} lost", verdict(lost == 0)))
        if e:
            m = ratio(ka["ringlock"]["members_cores"] - ka["ringlock"]["idle_members_cores"],
                      e["members_cores"] - e["idle_members_cores"])
            lines.append(("keepalive (for context): all members' CPU above idle vs etcd's",
                          _x(m), "[info]"))  # fmt: skip
    if fo.get("ringlock"):
        mine = statistics.median(fo["ringlock"])
        zk = statistics.median(fo["zookeeper"]) if fo.get("zookeeper") else None
        lines.append(("failover: median time to the next acquire <= ZooKeeper's",
                      f"{mine:.2f} s vs {_f(zk)} s",
                      verdict(None if zk is None else mine <= zk)))  # fmt: skip
        rs = [r for r in out["failover"] if r["target"] == "ringlock"]
        lines.append(("failover: the held lock survives every leader kill",
                      f"{sum(1 for r in rs if r['holder_kept'])} / {len(rs)}",
                      verdict(all(r["holder_kept"] for r in rs))))  # fmt: skip
    return lines


# -- main ------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.lock", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="3 s runs, 1 round, 1 failover trial, 10 s keepalive window")
    p.add_argument("--targets", default=",".join(TARGETS), help="comma list of " +
                   ", ".join(TARGETS))  # fmt: skip
    p.add_argument("--only", default=",".join(PHASES), help="comma list of " + ", ".join(PHASES))
    p.add_argument("--clients", default="1,64", help="client counts of `distinct`")
    p.add_argument("--contended-clients", type=int, default=16)
    p.add_argument("--duration", type=float, help="seconds per load run (10; quick 3)")
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--rounds", type=int, help="interleaved rounds per cell (2; quick 1)")
    p.add_argument("--procs", type=int, default=2, help="load generator processes")
    p.add_argument("--zk-procs", type=int, default=4, help="processes for kazoo's threads")
    p.add_argument("--sessions", type=int, default=1000)
    p.add_argument("--keepalive-s", type=float, help="keepalive window (30; quick 10)")
    p.add_argument("--keepalive-fault", choices=("kill", "pause"),
                   help="during the keepalive window: SIGKILL the leader (restarted after the "
                        "window), or pause it (SIGSTOP, SIGCONT `--pause-s` later) so that it "
                        "is deposed while alive; default: neither")
    p.add_argument("--keepalive-fault-at", type=float, default=5.0,
                   help="seconds into the keepalive window of the fault (5)")
    p.add_argument("--pause-s", type=float, default=1.5, help="length of a pause fault")
    p.add_argument("--trials", type=int, help="failover trials per target (5; quick 1)")
    p.add_argument("--failover-s", type=float, default=8.0, help="length of a failover run")
    p.add_argument("--fifo-margin-ms", type=float, default=50.0)
    p.add_argument("--dir", help="work directory (default: a new one under $TMPDIR)")
    p.add_argument("--json", dest="json_out", help="write the raw figures here")
    p.add_argument("--summarize", metavar="FILE.json", help="print the tables of a saved run")
    args = p.parse_args(argv)
    q = args.quick
    args.duration = args.duration or (3.0 if q else 10.0)
    args.rounds = args.rounds or (1 if q else 2)
    args.keepalive_s = args.keepalive_s or (10.0 if q else 30.0)
    args.trials = args.trials or (1 if q else 5)
    args.target_list = [t for t in args.targets.split(",") if t]
    args.phase_list = [x for x in args.only.split(",") if x]
    for t in args.target_list:
        if t not in TARGETS:
            p.error(f"unknown target {t!r}")
    for x in args.phase_list:
        if x not in PHASES:
            p.error(f"unknown phase {x!r}")
    args.clients_list = [int(c) for c in args.clients.split(",") if c]
    return args


def report(out: dict[str, Any], names: list[str]) -> None:
    lines = summarize(out, names)
    out["targets"] = [{"target": t, "measured": m, "verdict": v} for t, m, v in lines]
    print("\ntargets (issue 7):")
    for t, m, v in lines:
        print(f"  {v:15} {t}: {m}")
    print(f"\nmachine: {busy_note(out['meta']['loadavg'][0])} at start, "
          f"{busy_note(out['meta']['loadavg_end'][0])} at end")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.summarize:
        with open(args.summarize) as f:
            saved = json.load(f)
        report(saved, [t for t in TARGETS if t in saved["meta"]["args"]["target_list"]])
        return 0
    names = [t for t in TARGETS if t in args.target_list]
    root = args.dir or tempfile.mkdtemp(prefix="bench-lock-")
    out: dict[str, Any] = {"meta": machine() | {"args": vars(args).copy()},
                           "load": [], "keepalive": [], "failover": [], "errors": []}  # fmt: skip
    load0 = loadavg()
    print(f"lock benchmark: targets {', '.join(names)}; {busy_note(load0[0])}", flush=True)
    cl = Clusters(names, root)
    try:
        cl.start()
        idle = {n: idle_cores(cl.pids(n), 2.0) for n in names}
        out["idle_cores"] = idle
        print("idle CPU of each system (cores, all members): "
              + ", ".join(f"{n} {v:.3f}" for n, v in idle.items()), flush=True)  # fmt: skip
        for phase in args.phase_list:
            print(f"\n{phase}:", flush=True)
            try:
                if phase == "distinct":
                    phase_load(cl, args, out, "distinct", args.clients_list)
                elif phase == "contended":
                    phase_load(cl, args, out, "contended", [args.contended_clients])
                elif phase == "keepalive":
                    phase_keepalive(cl, args, out)
                else:
                    phase_failover(cl, args, out)
            except Exception as exc:  # one broken phase must not hide the others' figures
                traceback.print_exc()
                out["errors"].append(f"{phase}: {type(exc).__name__}: {exc}")
    finally:
        cl.stop()
        if not args.dir:
            shutil.rmtree(root, ignore_errors=True)
    out["meta"]["loadavg_end"] = loadavg()
    report(out, names)
    for e in out["errors"]:
        print(f"ERROR {e}")
    if args.json_out:
        out["meta"]["args"] = {k: v for k, v in out["meta"]["args"].items()
                               if isinstance(v, (int, float, str, list, type(None)))}  # fmt: skip
        with open(args.json_out, "w") as f:
            json.dump(out, f, indent=1, default=str)
    return 1 if out["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
