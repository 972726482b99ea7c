"""KV benchmark (issue 5): ringlock's store (3 and 5 `kv serve` nodes, N=3 R=2 W=2) beside a
3-member etcd 3.4 (through its HTTP gateway), driven by the same closed-loop load generator
(bench/loadgen.py), interleaved, ratios printed.

    .venv/bin/python -m bench.kv --quick                 # about 5 minutes
    .venv/bin/python -m bench.kv                         # the issue's figures (~30 minutes)
    .venv/bin/python -m bench.kv --configs 3n-interval --clients 64 --workloads put,get
    .venv/bin/python -m bench.kv --targets ringlock --json out.json   # no anchor

What runs:
- Workloads (`--workloads`): `put` (each put a new key: a Dynamo put without a context on
  an existing key would add a sibling, so neither system overwrites), `get` (uniformly
  spread over `--keyspace` keys written before the runs; etcd's reads are linearizable, its
  default; ringlock's are R=2 quorum reads), `mixed` (alternating get and put, 50/50).
  Values are `--value-size` (256) random bytes; clients (`--clients`, 16 and 64) spread
  over the nodes/members, each moving to the next one after a connection error.
- ringlock configurations (`--configs`): `3n-interval`, `3n-always`, `5n-interval`,
  `5n-always` (nodes and the LSM sync policy; `interval` is the default). Each
  configuration is a fresh cluster; within it every cell (workload x clients) runs
  ringlock and etcd back to back, `--rounds` times, alternating which goes first. Ratios
  are taken against the etcd figures of the same block. The 5-node / 3-node comparison is
  printed raw and normalised by etcd (each block's ringlock/etcd ratio), which cancels the
  machine's load drifting between blocks.
- The kill run (`--kill-s` seconds, off with `--no-kill`): a fresh 3-node cluster under
  the mixed workload at 16 clients; one node is SIGKILLed a third of the way in. Printed:
  the longest stretch without any successful operation (goal: under one failure-detection
  timeout, about 1.8 s with the membership defaults), errors by kind, and throughput
  before and after the kill.

CPU of the load generator (its worker processes) and of the servers (each node or member
with its descendants) is printed beside every figure, in cores. Every process this
benchmark starts is stopped in `finally` (etcd only if it was not already running).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import busy_note, loadavg, machine, ratio, tree_cpu_seconds
from bench.loadgen import LoadResult, LoadSpec, preload, run

CONFIGS = {  # name -> (nodes, sync policy)
    "3n-interval": (3, "interval"),
    "3n-always": (3, "always"),
    "5n-interval": (5, "interval"),
    "5n-always": (5, "always"),
}
WORKLOADS = ("put", "get", "mixed")
RINGLOCK_KV = "bench.ringlock_target:RinglockKV"
ETCD_KV = "bench.etcd_target:EtcdKV"
FAILURE_DETECTION_S = 1.8  # phi 8 at 0.1 s gossip rounds (kvstore/failure_detector.py)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.kv", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="3 s runs, 1 round, 3 configurations, "
                   "1,000 keys, 10 s kill run")  # fmt: skip
    p.add_argument("--targets", default="ringlock,etcd", help="ringlock and/or etcd")
    p.add_argument("--configs", help="comma list of " + ", ".join(CONFIGS) + " (all; quick: "
                   "3n-interval,3n-always,5n-interval)")  # fmt: skip
    p.add_argument("--workloads", default=",".join(WORKLOADS))
    p.add_argument("--clients", default="16,64")
    p.add_argument("--duration", type=float, help="seconds per run (10; quick 3)")
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--rounds", type=int, help="interleaved rounds per cell (2; quick 1)")
    p.add_argument("--keyspace", type=int, help="keys written before the runs (10,000; "
                   "quick 1,000)")  # fmt: skip
    p.add_argument("--value-size", type=int, default=256)
    p.add_argument("--procs", type=int, default=2, help="load generator processes")
    p.add_argument("--kill-s", type=float, help="length of the kill run (20; quick 10)")
    p.add_argument("--no-kill", action="store_true", help="skip the kill run")
    p.add_argument("--dir", help="work directory (default: a new one under $TMPDIR)")
    p.add_argument("--json", dest="json_out", help="write the raw figures here")
    p.add_argument("--summarize", metavar="FILE.json", help="print the tables of a saved run")
    args = p.parse_args(argv)
    q = args.quick
    args.duration = args.duration or (3.0 if q else 10.0)
    args.rounds = args.rounds or (1 if q else 2)
    args.keyspace = args.keyspace or (1000 if q else 10_000)
    args.kill_s = args.kill_s or (10.0 if q else 20.0)
    default_configs = "3n-interval,3n-always,5n-interval" if q else ",".join(CONFIGS)
    args.config_list = [c for c in (args.configs or default_configs).split(",") if c]
    args.target_list = [t for t in args.targets.split(",") if t]
    args.workload_list = [w for w in args.workloads.split(",") if w]
    args.clients_list = [int(c) for c in args.clients.split(",") if c]
    for c in args.config_list:
        if c not in CONFIGS:
            p.error(f"unknown configuration {c!r}")
    for t in args.target_list:
        if t not in ("ringlock", "etcd"):
            p.error(f"unknown target {t!r}")
    for w in args.workload_list:
        if w not in WORKLOADS:
            p.error(f"unknown workload {w!r}")
    return args


def show(r: LoadResult, label: str) -> None:
    lat = r.latency
    print(f"  {label:16} {r.workload_mix:5} {r.clients:3} clients: {r.rate:7.0f} ops/s  "
          f"p50 {_ms(lat['p50_ms'])}  p99 {_ms(lat['p99_ms'])}  errors {r.errors}  "
          f"cpu client {r.client_cores:.2f} servers {r.server_cores:.2f}", flush=True)


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:6.1f} ms"


def cell(workload: str, urls: list[str], args: argparse.Namespace, mix: str, clients: int,
         tag: str, duration: float) -> LoadSpec:  # fmt: skip
    params = {"urls": urls, "mix": mix, "keyspace": args.keyspace,
              "value_size": args.value_size, "run": tag}  # fmt: skip
    return LoadSpec(workload, params, clients=clients, procs=args.procs, duration_s=duration,
                    warmup_s=args.warmup, timeout_s=10.0)  # fmt: skip


def run_cell(label: str, workload: str, urls: list[str], pids: Any, args: argparse.Namespace,
             mix: str, clients: int) -> LoadResult:  # fmt: skip
    tag = f"{label}-{mix}{clients}-{int(time.time() * 1000)}"
    r = run(cell(workload, urls, args, mix, clients, tag, args.duration), target=label,
            server_pids=pids)  # fmt: skip
    r.workload_mix = mix  # type: ignore[attr-defined]
    show(r, label)
    return r


def row_of(r: LoadResult, **extra: Any) -> dict[str, Any]:
    return r.as_json() | {"mix": r.workload_mix} | extra  # type: ignore[attr-defined]


def block(config: str, etcd: Any, args: argparse.Namespace, root: str,
          out: dict[str, Any]) -> None:  # fmt: skip
    """One ringlock configuration, every cell interleaved with etcd."""
    from bench.ringlock_target import StoreCluster

    nodes, sync = CONFIGS[config]
    cluster = None
    try:
        if "ringlock" in args.target_list:
            cluster = StoreCluster(os.path.join(root, config), nodes, sync=sync)
            t0 = time.monotonic()
            cluster.start()
            failed = preload(RINGLOCK_KV, {"urls": cluster.urls(),
                                           "value_size": args.value_size}, args.keyspace)
            print(f"\n{config}: {nodes} nodes up and {args.keyspace} keys written in "
                  f"{time.monotonic() - t0:.1f} s ({failed} failed)", flush=True)
        else:
            print(f"\n{config} (etcd only):", flush=True)
        sides: list[tuple[str, str, list[str], Any]] = []
        if cluster is not None:
            sides.append((f"ringlock {config}", RINGLOCK_KV, cluster.urls(), cluster.pids))
        if etcd is not None:
            sides.append(("etcd", ETCD_KV, etcd.urls(), etcd.pids))
        for mix in args.workload_list:
            for clients in args.clients_list:
                for rnd in range(args.rounds):
                    for label, wl, urls, pids in (sides if rnd % 2 == 0 else sides[::-1]):
                        r = run_cell(label, wl, urls, pids, args, mix, clients)
                        out["load"].append(row_of(r, config=config, round=rnd,
                                                  system=label.split()[0]))  # fmt: skip
        if cluster is not None:
            notes = cluster.health_notes()
            out.setdefault("node_notes", {})[config] = notes
            print(f"  ({config} nodes logged {notes['stalls']} event-loop stalls and "
                  f"{notes['convictions']} down convictions during the block)", flush=True)
    finally:
        if cluster is not None:
            cluster.stop()


def kill_run(args: argparse.Namespace, root: str, out: dict[str, Any]) -> None:
    from bench.ringlock_target import StoreCluster

    cluster = StoreCluster(os.path.join(root, "kill"), 3, sync="interval")
    try:
        cluster.start()
        preload(RINGLOCK_KV, {"urls": cluster.urls(), "value_size": args.value_size},
                args.keyspace)  # fmt: skip
        at = args.kill_s / 3
        tag = f"kill-{int(time.time() * 1000)}"
        r = run(cell(RINGLOCK_KV, cluster.urls(), args, "mixed", 16, tag, args.kill_s),
                target="ringlock kill", server_pids=cluster.pids,
                events=[(at, "kill", lambda: cluster.kill(2))])  # fmt: skip
        kill_at = r.events["kill"]["at"] - r.t0_monotonic
        before = sum(1 for rec in r.ok if rec[1] < kill_at)
        after = sum(1 for rec in r.ok if kill_at <= rec[1] <= args.kill_s)
        row = {"killed": r.events["kill"]["killed"], "kill_at_s": kill_at,
               "longest_gap_s": r.longest_gap_s, "longest_gap_at_s": r.longest_gap_at_s,
               "longest_client_gap_s": r.longest_client_gap_s,
               "errors": r.errors, "error_kinds": r.error_kinds, "ops": r.ops,
               "rate_before": before / kill_at if kill_at > 0 else None,
               "rate_after": after / (args.kill_s - kill_at),
               "failure_detection_s": FAILURE_DETECTION_S,
               "client_cores": r.client_cores, "server_cores": r.server_cores,
               "stuck_clients": r.stuck_clients}  # fmt: skip
        row |= cluster.health_notes()
        out["kill"] = row
        kinds = ", ".join(f"{k}: {v}" for k, v in r.error_kinds.items()) or "none"
        print(f"  node {row['killed']} SIGKILLed at {kill_at:.2f} s: longest gap between "
              f"successes {r.longest_gap_s * 1000:.0f} ms (from {r.longest_gap_at_s:.2f} s), "
              f"of one client {r.longest_client_gap_s * 1000:.0f} ms; "
              f"errors {r.errors} ({kinds}); {row['rate_before']:.0f} ops/s before, "
              f"{row['rate_after']:.0f} after", flush=True)  # fmt: skip
    finally:
        cluster.stop()


# -- summary ---------------------------------------------------------------------------


def _agg(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    if not rows:
        return None
    return {"rate": statistics.mean(r["rate"] for r in rows),
            "p50": statistics.median(r["latency"]["p50_ms"] or 0 for r in rows),
            "p99": statistics.median(r["latency"]["p99_ms"] or 0 for r in rows),
            "errors": sum(r["errors"] for r in rows),
            "client": statistics.mean(r["client_cores"] for r in rows),
            "server": statistics.mean(r["server_cores"] for r in rows),
            # operations per CPU-second of the servers: steadier than ops/s when other
            # work shares the cores, since it does not depend on the share a server got
            "per_cpu": statistics.mean(r["rate"] / r["server_cores"] for r in rows
                                       if r["server_cores"] > 0) if any(
                r["server_cores"] > 0 for r in rows) else None}  # fmt: skip


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def summarize(out: dict[str, Any], args: argparse.Namespace) -> list[tuple[str, str, str]]:
    rows = out["load"]
    cells: dict[tuple[str, str, int], dict[str, Any]] = {}
    if rows:
        print("\n| config | workload | clients | ringlock ops/s | p50 ms | p99 ms | etcd ops/s "
              "| p50 ms | p99 ms | ops ratio | p99 ratio | errors rl/etcd | client CPU "
              "rl/etcd | server CPU rl/etcd | ops per server CPU-s rl/etcd (ratio) |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for config in args.config_list:
        for mix in args.workload_list:
            for c in args.clients_list:
                sel = [r for r in rows if (r["config"], r["mix"], r["clients"]) == (config, mix, c)]
                a = _agg([r for r in sel if r["system"] == "ringlock"])
                b = _agg([r for r in sel if r["system"] == "etcd"])
                if not a and not b:
                    continue
                cells[(config, mix, c)] = {"rl": a, "etcd": b}
                ra = ratio(a and a["rate"], b and b["rate"])
                rp = ratio(a and a["p99"], b and b["p99"])
                rc = ratio(a and a["per_cpu"], b and b["per_cpu"])

                def f(d: dict[str, Any] | None, k: str, fmt: str = ".0f") -> str:
                    return "-" if d is None or d[k] is None else format(d[k], fmt)

                print(f"| {config} | {mix} | {c} | {f(a, 'rate')} | {f(a, 'p50', '.1f')} | "
                      f"{f(a, 'p99', '.1f')} | {f(b, 'rate')} | {f(b, 'p50', '.1f')} | "
                      f"{f(b, 'p99', '.1f')} | {_x(ra)} | {_x(rp)} | {f(a, 'errors')}/"
                      f"{f(b, 'errors')} | {f(a, 'client', '.2f')}/{f(b, 'client', '.2f')} | "
                      f"{f(a, 'server', '.2f')}/{f(b, 'server', '.2f')} | "
                      f"{f(a, 'per_cpu')}/{f(b, 'per_cpu')} ({_x(rc)}) |")  # fmt: skip
    scale = []
    for sync in ("interval", "always"):
        for mix in args.workload_list:
            for c in args.clients_list:
                three = cells.get((f"3n-{sync}", mix, c))
                five = cells.get((f"5n-{sync}", mix, c))
                if not (three and five and three["rl"] and five["rl"]):
                    continue
                raw = ratio(five["rl"]["rate"], three["rl"]["rate"])
                norm = None
                if three["etcd"] and five["etcd"]:
                    norm = ratio(ratio(five["rl"]["rate"], five["etcd"]["rate"]),
                                 ratio(three["rl"]["rate"], three["etcd"]["rate"]))
                scale.append((sync, mix, c, raw, norm))
    if scale:
        print("\n| sync | workload | clients | 5 nodes / 3 nodes | normalised by etcd |")
        print("|---|---|---|---|---|")
        for sync, mix, c, raw, norm in scale:
            print(f"| {sync} | {mix} | {c} | {_x(raw)} | {_x(norm)} |")
    if out.get("kill"):
        k = out["kill"]
        print("\n| kill run | killed at s | longest gap ms | one client's longest gap ms | "
              "errors | ops/s before | after |")
        print("|---|---|---|---|---|---|---|")
        print(f"| 3 nodes, mixed, 16 clients | {k['kill_at_s']:.2f} | "
              f"{k['longest_gap_s'] * 1000:.0f} | {k['longest_client_gap_s'] * 1000:.0f} | "
              f"{k['errors']} | {k['rate_before']:.0f} | {k['rate_after']:.0f} |")  # fmt: skip
    return targets(cells, scale, out, args)


def targets(cells: dict[tuple[str, str, int], dict[str, Any]], scale: list[Any],
            out: dict[str, Any], args: argparse.Namespace) -> list[tuple[str, str, str]]:
    lines: list[tuple[str, str, str]] = []

    def verdict(ok: bool | None) -> str:
        return "[not measured]" if ok is None else "[met]" if ok else "[MISSED]"

    for sync in ("interval", "always"):
        for mix, goal in (("put", 1.0), ("get", 1.5)):
            cellv = cells.get((f"3n-{sync}", mix, 64))
            a, b = (cellv["rl"], cellv["etcd"]) if cellv else (None, None)
            r = ratio(a and a["rate"], b and b["rate"])
            p = ratio(a and a["p99"], b and b["p99"])
            lines.append((f"3 nodes, sync {sync}, 64 clients: {mix} >= {goal:.1f}x etcd",
                          _x(r), verdict(None if r is None else r >= goal)))  # fmt: skip
            lines.append((f"3 nodes, sync {sync}, 64 clients: {mix} p99 <= etcd's",
                          _x(p), verdict(None if p is None else p <= 1.0)))  # fmt: skip
    for sync, mix, c, raw, norm in scale:
        v = norm if norm is not None else raw
        lines.append((f"5 nodes >= 3 nodes, sync {sync}, {mix}, {c} clients",
                      f"{_x(raw)} raw, {_x(norm)} normalised", verdict(v >= 1.0)))  # fmt: skip
    k = out.get("kill")
    if k:
        lines.append(("one of 3 nodes SIGKILLed: longest gap < one failure-detection timeout "
                      f"({FAILURE_DETECTION_S} s)", f"{k['longest_gap_s']:.2f} s, "
                      f"{k['errors']} errors", verdict(k["longest_gap_s"] < FAILURE_DETECTION_S)))
    return lines


# -- main ------------------------------------------------------------------------------


def resummarize(path: str) -> int:
    with open(path) as f:
        out = json.load(f)
    saved = argparse.Namespace(**out["meta"]["args"])
    lines = summarize(out, saved)
    print("\ntargets (issue 5):")
    for t, m, v in lines:
        print(f"  {v:15} {t}: {m}")
    load0, load1 = out["meta"]["loadavg"], out["meta"]["loadavg_end"]
    print(f"\nmachine: {busy_note(load0[0])} at start, {busy_note(load1[0])} at end")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.summarize:
        return resummarize(args.summarize)
    root = args.dir or tempfile.mkdtemp(prefix="bench-kv-")
    out: dict[str, Any] = {"meta": machine() | {"args": {k: v for k, v in vars(args).items()}},
                           "load": [], "kill": None, "errors": []}  # fmt: skip
    load0 = loadavg()
    print(f"kv benchmark: {', '.join(args.target_list)}; configs {', '.join(args.config_list)};"
          f" {args.value_size}-byte values, N=3 R=2 W=2; {busy_note(load0[0])}", flush=True)
    etcd = None
    try:
        if "etcd" in args.target_list:
            from bench.etcd_target import EtcdCluster

            etcd = EtcdCluster()
            etcd.start()
            t0 = time.monotonic()
            failed = preload(ETCD_KV, {"urls": etcd.urls(), "value_size": args.value_size},
                             args.keyspace)  # fmt: skip
            idle = sum(tree_cpu_seconds(p) for p in etcd.pids())
            time.sleep(2.0)
            idle = (sum(tree_cpu_seconds(p) for p in etcd.pids()) - idle) / 2.0
            out["etcd_idle_cores"] = idle
            print(f"etcd: 3 members, {args.keyspace} keys written in "
                  f"{time.monotonic() - t0:.1f} s ({failed} failed); idle CPU {idle:.3f} "
                  "cores (it runs beside every ringlock block)", flush=True)  # fmt: skip
        for config in args.config_list:
            try:
                block(config, etcd, args, root, out)
            except Exception as exc:
                traceback.print_exc()
                out["errors"].append(f"{config}: {type(exc).__name__}: {exc}")
        if "ringlock" in args.target_list and not args.no_kill:
            print("\nkill run:", flush=True)
            try:
                kill_run(args, root, out)
            except Exception as exc:
                traceback.print_exc()
                out["errors"].append(f"kill run: {type(exc).__name__}: {exc}")
    finally:
        if etcd is not None:
            with contextlib.suppress(Exception):
                etcd.stop()
        if not args.dir:
            shutil.rmtree(root, ignore_errors=True)
    out["meta"]["loadavg_end"] = loadavg()
    lines = summarize(out, args)
    out["targets"] = [{"target": t, "measured": m, "verdict": v} for t, m, v in lines]
    print("\ntargets (issue 5):")
    for t, m, v in lines:
        print(f"  {v:15} {t}: {m}")
    print(f"\nmachine: {busy_note(load0[0])} at start, "
          f"{busy_note(out['meta']['loadavg_end'][0])} at end")
    for e in out["errors"]:
        print(f"ERROR {e}")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(out, f, indent=1, default=str)
    return 1 if out["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
