"""Storage benchmark: ringlock's LSM engine beside sqlite3, lmdb and rocksdict (issue 3).

Run from the repository root:

    .venv/bin/python -m bench.storage --quick            # N = 100,000
    .venv/bin/python -m bench.storage                    # N = 1,000,000 (the issue's figures)
    .venv/bin/python -m bench.storage --only fillrandom,readrandom,ringlock,sqlite3
    .venv/bin/python -m bench.storage --profile fillrandom --quick
    .venv/bin/python -m bench.storage --json out.json

Theory of operation: the parent writes the data set's orders once, then for each workload
group (`GROUPS`) starts one child process per engine (`bench/storage_child.py`), each on
its own fresh directory, and drives them one workload at a time, engine after engine
(interleaved: A, B, C, A, B, C, never all of one engine first). After each engine's turn it
waits until that child's CPU goes quiet (its background flushes and compactions done) so
the next engine runs alone. Each child reports timings, CPU and peak RSS; the parent reaps
it with `os.wait4` for its whole-life rusage. See bench/README.md for the columns.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (
    MIB,
    busy_note,
    fsync_rate,
    human,
    loadavg,
    machine,
    peak_rss_bytes,
    ratio,
    tree_cpu_seconds,
    wait_idle,
)
from bench.storage_adapters import ENGINES, availability
from bench.storage_child import KEY_SIZE, VALUE_SIZE, write_orders

ROOT = Path(__file__).resolve().parent.parent
QUICK_NUM = 100_000

# (group, synced, workloads in the order they run on one database)
GROUPS: list[tuple[str, bool, list[str]]] = [
    ("seq", False, ["fillseq"]),
    (
        "random",
        False,
        ["fillrandom", "readrandom", "readmissing", "scan", "overwrite", "space", "deleterandom"],
    ),
    ("sync", True, ["sync1", "sync16"]),
]
WORKLOADS = [w for _g, _s, ws in GROUPS for w in ws]
TABLE_WORKLOADS = [w for w in WORKLOADS if w != "space"]
# What must have run on the same database before a workload means anything.
PREREQS = {
    "readrandom": ["fillrandom"],
    "readmissing": ["fillrandom"],
    "scan": ["fillrandom"],
    "overwrite": ["fillrandom"],
    "space": ["fillrandom", "overwrite"],
    "deleterandom": ["fillrandom"],
}
ANCHORS = ("sqlite3", "rocksdict", "lmdb")
# ringlock stats() fields shown in the report (all of them go to --json).
RINGLOCK_STATS = (
    "flushes",
    "compactions",
    "trivial_moves",
    "idle_compactions",
    "stalls",
    "slowdowns",
    "stall_seconds",
    "write_groups",
    "log_syncs",
    "files_per_level",
)


@dataclass
class ChildProc:
    engine: str
    group: str
    proc: subprocess.Popen
    hello: dict[str, Any] = field(default_factory=dict)
    alive: bool = True

    def send(self, message: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(json.dumps(message) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass
        return self.receive()

    def receive(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.alive = False
            return {"ok": False, "error": f"{self.engine} child exited unexpectedly"}
        return json.loads(line)

    def reap(self) -> dict[str, Any]:
        """Wait for the child and return its whole-life rusage."""
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(BrokenPipeError):
                    stream.close()
        _pid, status, usage = os.wait4(self.proc.pid, 0)
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        self.alive = False
        return {
            "exit_code": self.proc.returncode,
            "maxrss_bytes": usage.ru_maxrss * 1024,
            "cpu_user_s": usage.ru_utime,
            "cpu_sys_s": usage.ru_stime,
        }


def ops_per_cpu(result: dict[str, Any]) -> float | None:
    """Operations per CPU second of the engine's process (threads and workers included,
    and the background work it finished after the timed region, while settling): a rate
    that a busy machine depresses far less than ops per wall second."""
    cpu = result["cpu_user_s"] + result["cpu_sys_s"] + result.get("cpu_children_s", 0.0)
    cpu += result.get("settle_cpu_s", 0.0)
    if not result.get("ops") or cpu <= 0:
        return None
    return result["ops"] / cpu


def parse_only(tokens: str | None) -> tuple[list[str], list[str]]:
    """Split `--only a,b,c` into (engines, workloads); empty lists mean all."""
    engines: list[str] = []
    workloads: list[str] = []
    for token in (tokens or "").split(","):
        token = token.strip()
        if not token:
            continue
        if token in ENGINES:
            engines.append(token)
        elif token in WORKLOADS:
            workloads.append(token)
        elif token == "sync":
            workloads += ["sync1", "sync16"]
        else:
            raise SystemExit(
                f"--only: unknown name {token!r}; engines: {', '.join(ENGINES)}; "
                f"workloads: {', '.join(WORKLOADS)}, sync"
            )
    return engines, workloads


def plan(selected: list[str]) -> list[tuple[str, bool, list[str]]]:
    """The groups to run with their workloads, prerequisites added, in run order."""
    wanted = set(selected or WORKLOADS)
    for w in list(wanted):
        wanted.update(PREREQS.get(w, []))
    return [(g, s, [w for w in ws if w in wanted]) for g, s, ws in GROUPS if wanted & set(ws)]


class Runner:
    def __init__(self, args: argparse.Namespace, num: int, work: str) -> None:
        self.args = args
        self.num = num
        self.reads = args.reads or num
        self.work = work
        self.data_dir = os.path.join(work, "data")
        self.results: list[dict[str, Any]] = []
        self.children: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.profile_text = ""
        self.memtable_budget: int | None = None
        self.ringlock_options = dict(args.ringlock_option or [])

    def log(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def spawn(
        self, engine: str, group: str, synced: bool, first: str | None = None
    ) -> ChildProc | None:
        path = os.path.join(self.work, f"{group}-{engine}")
        options: dict[str, Any] = {"num": self.num}
        if engine == "ringlock":
            options = dict(self.ringlock_options)
        elif engine == "rocksdict":
            options["write_buffer"] = self.memtable_budget or 32 * MIB
        argv = [
            sys.executable,
            "-m",
            "bench.storage_child",
            "--engine",
            engine,
            "--path",
            path,
            "--data",
            self.data_dir,
            "--num",
            str(self.num),
            "--reads",
            str(self.reads),
            "--seed",
            str(self.args.seed),
            "--sync-seconds",
            str(self.args.sync_seconds),
            "--threads",
            str(self.args.threads),
            "--options",
            json.dumps(options),
        ]
        if synced:
            argv.append("--synced")
        if engine == "ringlock" and self.args.profile and self.args.profile == first:
            argv.append("--profile-threads-from-open")
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        proc = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        child = ChildProc(engine, group, proc)
        reply = child.receive()
        if not reply.get("ok"):
            message = f"{engine} ({group}): {reply.get('error')}"
            self.errors.append(message)
            self.log(f"  ! {message}")
            if reply.get("trace"):
                self.log(reply["trace"])
            self.children.append({"engine": engine, "group": group, **child.reap()})
            return None
        child.hello = reply["hello"]
        if engine == "ringlock":
            self.memtable_budget = child.hello["describe"].get("memtable_bytes")
        return child

    def run_group(self, group: str, synced: bool, workloads: list[str], engines: list[str]) -> None:
        spawned = (self.spawn(e, group, synced, workloads[0]) for e in engines)
        children = [c for c in spawned if c is not None]
        rounds = max(1, self.args.sync_rounds) if synced else 1
        for round_, workload in enumerate(workloads * rounds):
            for child in children:
                if not child.alive:
                    continue
                profile = self.args.profile == workload and child.engine == "ringlock"
                reply = child.send({"cmd": "run", "workload": workload, "profile": profile})
                if not reply.get("ok"):
                    message = f"{child.engine} {workload}: {reply.get('error')}"
                    self.errors.append(message)
                    self.log(f"  ! {message}")
                    if reply.get("trace"):
                        self.log(reply["trace"])
                    continue
                result = reply["result"]
                cpu_before_settle = tree_cpu_seconds(child.proc.pid)
                settle = wait_idle(child.proc.pid, self.args.settle_max) if child.alive else 0.0
                result["settle_cpu_s"] = tree_cpu_seconds(child.proc.pid) - cpu_before_settle
                result.update(
                    {
                        "engine": child.engine,
                        "group": group,
                        "workload": workload,
                        "settle_s": round(settle, 3),
                        "ops_per_cpu_s": ops_per_cpu(result),
                        "profiled": profile,
                        "round": round_ // len(workloads),
                    }
                )
                self.results.append(result)
                self.log(
                    f"  {workload:<12} {child.engine:<10} {human(result.get('ops_per_s')):>8} ops/s"
                    f"  cpu {result['cpu_user_s'] + result['cpu_sys_s']:.1f}s"
                    f"  settle {settle:.1f}s  load {result['loadavg_after'][0]:.2f}"
                    + ("" if result["check"] == "ok" else f"  {result['check']}")
                )
        for child in children:
            closed: dict[str, Any] = {}
            if child.alive:
                reply = child.send({"cmd": "exit"})
                if reply.get("ok"):
                    closed = reply["closed"]
                    self.profile_text += closed.pop("profile", "") or ""
                else:
                    self.errors.append(f"{child.engine} ({group}) close: {reply.get('error')}")
            self.children.append(
                {
                    "engine": child.engine,
                    "group": group,
                    "hello": child.hello,
                    **closed,
                    **child.reap(),
                }
            )

    def paired(self, workload: str, engine: str, other_workload: str, other: str) -> float | None:
        """Ratio of two rates: per round (the engines alternate within a round, so a round's
        rates saw the same disk and load), then the median over rounds."""
        key = "ops_per_s"
        mine = {r["round"]: r.get(key) for r in self.results
                if r["workload"] == workload and r["engine"] == engine}  # fmt: skip
        theirs = {r["round"]: r.get(key) for r in self.results
                  if r["workload"] == other_workload and r["engine"] == other}  # fmt: skip
        ratios = [q for n in mine if (q := ratio(mine[n], theirs.get(n))) is not None]
        return statistics.median(ratios) if ratios else None

    def value(self, workload: str, engine: str, key: str = "ops_per_s") -> Any:
        """`key` of the workload's result; for rates run in several rounds, the median."""
        rows = [r for r in self.results if r["workload"] == workload and r["engine"] == engine]
        if not rows:
            return None
        if key == "ops_per_s" and len(rows) > 1:
            rates = [r[key] for r in rows if r.get(key) is not None]
            return statistics.median(rates) if rates else None
        return rows[0].get(key)


# -- report --------------------------------------------------------------------------------


def targets(runner: Runner) -> list[dict[str, Any]]:
    """Each target of issue 3 with its measured value and whether it was met."""
    v = runner.value
    rows: list[dict[str, Any]] = []

    def add(
        name: str,
        measured: float | None,
        op: str,
        threshold: float,
        why: str = "",
        per_cpu: float | None = None,
    ) -> None:
        if measured is None:
            status = "not measured" + (f" ({why})" if why else "")
        elif op == ">=":
            status = "met" if measured >= threshold else "MISSED"
        else:
            status = "met" if measured <= threshold else "MISSED"
        rows.append(
            {
                "target": name,
                "measured": measured,
                "op": op,
                "threshold": threshold,
                "status": status,
                "per_cpu": per_cpu,
            }
        )

    def cpu_ratio(workload: str, anchor: str) -> float | None:
        return ratio(v(workload, "ringlock", "ops_per_cpu_s"), v(workload, anchor, "ops_per_cpu_s"))

    for workload, anchor, threshold in [
        ("fillrandom", "sqlite3", 4.0),
        ("fillrandom", "rocksdict", 0.5),
        ("readrandom", "sqlite3", 1.0),
        ("readmissing", "sqlite3", 2.0),
        ("scan", "sqlite3", 1.0),
    ]:
        add(
            f"{workload} ringlock/{anchor}",
            runner.paired(workload, "ringlock", workload, anchor),
            ">=",
            threshold,
            per_cpu=cpu_ratio(workload, anchor),
        )
    add(
        "sync: 16 writers / 1 writer (ringlock, group commit)",
        runner.paired("sync16", "ringlock", "sync1", "ringlock"),
        ">=",
        5.0,
    )
    add(
        "sync: 1 writer ringlock/sqlite3 FULL",
        runner.paired("sync1", "ringlock", "sync1", "sqlite3"),
        ">=",
        0.9,
    )
    peaks = [
        p
        for p in (
            v("fillseq", "ringlock", "peak_rss_bytes"),
            v("fillrandom", "ringlock", "peak_rss_bytes"),
        )
        if p
    ]
    budget = runner.memtable_budget
    if peaks and budget:
        limit = 2 * budget + 100 * MIB
        add(
            f"peak RSS loading {runner.num:,} keys / (2 x memtable + 100 MiB = "
            f"{limit / MIB:.0f} MiB)",
            max(peaks) / limit,
            "<=",
            1.0,
        )
    else:
        add("peak RSS loading / (2 x memtable + 100 MiB)", None, "<=", 1.0)
    add(
        "disk after overwrite + compact_range / live data",
        v("space", "ringlock", "space_amplification"),
        "<=",
        1.3,
    )
    return rows


def render(runner: Runner, engines: list[str]) -> str:
    v = runner.value
    lines: list[str] = []
    others = [a for a in ANCHORS if a in engines]
    header = ["workload", *engines, *(f"rl/{a}" for a in others)]
    table: list[list[str]] = [header]
    for workload in TABLE_WORKLOADS:
        if not any(r["workload"] == workload for r in runner.results):
            continue
        row = [workload]
        for engine in engines:
            cell = human(v(workload, engine))
            check = v(workload, engine, "check")
            if check not in (None, "ok"):
                cell += " WRONG"
            row.append(cell)
        for anchor in others:
            r = runner.paired(workload, "ringlock", workload, anchor)
            row.append("-" if r is None else f"{r:.2f}x")
        table.append(row)
    if any(r["workload"] == "sync16" for r in runner.results):
        row = ["sync16/sync1"]
        for engine in engines:
            r = runner.paired("sync16", engine, "sync1", engine)
            row.append("-" if r is None else f"{r:.2f}x")
        table.append(row + ["" for _ in others])
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for index, row in enumerate(table):
        lines.append(
            "  ".join(
                c.rjust(w) if i else c.ljust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append(
        "(ops/s; scan counts keys scanned; sync rows are durable writes, "
        f"{runner.args.threads} threads for sync16: medians over {runner.args.sync_rounds} "
        "rounds, and their ratios are medians of the per-round ratios)"
    )
    if others and "ringlock" in engines:
        lines.append("")
        lines.append(
            "the same ratios per CPU second of each engine's process (robust to a busy machine; "
            "meaningless for I/O-bound synced writes)"
        )
        for workload in TABLE_WORKLOADS:
            cells = []
            for anchor in others:
                r = ratio(
                    v(workload, "ringlock", "ops_per_cpu_s"), v(workload, anchor, "ops_per_cpu_s")
                )
                if r is not None:
                    cells.append(f"rl/{anchor} {r:.2f}x")
            if cells and not workload.startswith("sync"):
                lines.append(f"  {workload:<12} " + "  ".join(cells))

    lines.append("")
    lines.append("memory and space (per engine)")
    for engine in engines:
        parts = []
        for workload in ("fillseq", "fillrandom"):
            peak = v(workload, engine, "peak_rss_bytes")
            if peak:
                parts.append(f"peak RSS after {workload} {peak / MIB:.0f} MiB")
        base = next(
            (
                c["hello"].get("rss_base_bytes")
                for c in runner.children
                if c["engine"] == engine and c.get("hello")
            ),
            None,
        )
        if base:
            parts.append(f"harness baseline {base / MIB:.0f} MiB")
        amp = v("space", engine, "space_amplification")
        if amp:
            parts.append(
                f"disk after overwrite+compact {v('space', engine, 'disk_bytes') / MIB:.0f}"
                f" MiB = {amp:.2f}x live"
            )
        if engine == "ringlock" and runner.memtable_budget:
            parts.append(f"memtable budget {runner.memtable_budget / MIB:.0f} MiB")
        if parts:
            lines.append(f"  {engine:<10} " + "; ".join(parts))

    stat_rows = [r for r in runner.results if r["engine"] == "ringlock" and r.get("engine_stats")]
    if stat_rows:
        lines.append("")
        lines.append("ringlock stats() after each workload (cumulative per child)")
        for r in stat_rows:
            st = r["engine_stats"]
            shown = " ".join(f"{k}={st[k]}" for k in RINGLOCK_STATS if k in st)
            lines.append(f"  {r['workload']:<12} {shown}")

    lines.append("")
    lines.append("CPU seconds in the child (process user+sys / main thread) and load average")
    for r in runner.results:
        cpu = r["cpu_user_s"] + r["cpu_sys_s"]
        lines.append(
            f"  {r['workload']:<12} {r['engine']:<10} wall {r['wall_s']:7.2f}s  "
            f"timed {r['seconds']:7.2f}s  cpu {cpu:7.2f}s / {r['cpu_main_thread_s']:7.2f}s  "
            + (f"+ workers {r['cpu_children_s']:.2f}s  " if r.get("cpu_children_s") else "")
            + f"settle {r['settle_s']:5.1f}s ({r.get('settle_cpu_s', 0):.1f}s cpu)  "
            f"load {r['loadavg_before'][0]:.2f}->"
            f"{r['loadavg_after'][0]:.2f}"
        )

    if runner.args.profile:
        return "\n".join(lines)
    lines.append("")
    lines.append("targets (issue 3)")
    for t in targets(runner):
        measured = "-" if t["measured"] is None else f"{t['measured']:.2f}"
        line = f"  [{t['status']}] {t['target']}: {measured} (target {t['op']} {t['threshold']})"
        if t["per_cpu"] is not None:
            line += f"; per CPU second {t['per_cpu']:.2f}"
            if (t["per_cpu"] >= t["threshold"]) != (t["status"] == "met"):
                line += " (would be the other way: wall time and CPU disagree)"
        lines.append(line)
    if runner.num != 1_000_000:
        lines.append(f"  note: N = {runner.num:,}; the issue's targets are stated for 1,000,000")
    for error in runner.errors:
        lines.append(f"  error: {error}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.storage", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--num", type=int, default=1_000_000, help="keys (default 1,000,000)")
    parser.add_argument("--quick", action="store_true", help=f"N = {QUICK_NUM:,}")
    parser.add_argument("--reads", type=int, default=0, help="reads per read workload (N)")
    parser.add_argument("--only", help="comma list of workloads and/or engines to run")
    parser.add_argument("--json", dest="json_out", help="write the raw figures here")
    parser.add_argument("--profile", choices=WORKLOADS, help="profile ringlock's WORKLOAD")
    parser.add_argument(
        "--sync-seconds", type=float, default=5.0, help="seconds per synced-write run (default 5)"
    )
    parser.add_argument("--threads", type=int, default=16, help="writers in sync16")
    parser.add_argument(
        "--sync-rounds",
        type=int,
        default=3,
        help="alternate the synced runs this many times and report the median (default 3)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--settle-max",
        type=float,
        default=120.0,
        help="max seconds to wait for an engine's background work",
    )
    parser.add_argument("--dir", help="work directory (default: a new one under $TMPDIR)")
    parser.add_argument("--keep", action="store_true", help="keep the databases afterwards")
    parser.add_argument(
        "--ringlock-option",
        action="append",
        type=_option,
        metavar="NAME=VALUE",
        help="pass an option to Engine.open",
    )
    args = parser.parse_args(argv)

    num = QUICK_NUM if args.quick else args.num
    engines, workloads = parse_only(args.only)
    if args.profile:
        engines, workloads = ["ringlock"], [args.profile]
    engines = [e for e in ENGINES if e in (engines or ENGINES)]
    runnable = []
    unavailable: list[str] = []
    for engine in engines:
        reason = availability(engine)
        if reason is None:
            runnable.append(engine)
        else:
            unavailable.append(f"{engine}: {reason}")
            print(f"{engine}: {reason}", file=sys.stderr)
    ringlock_missing = "ringlock" in engines and "ringlock" not in runnable

    work = args.dir or tempfile.mkdtemp(prefix="ringlock-bench-storage-")
    os.makedirs(os.path.join(work, "data"), exist_ok=True)
    runner = Runner(args, num, work)
    runner.errors += unavailable
    started = time.time()
    meta: dict[str, Any] = {
        "machine": machine(),
        "num": num,
        "reads": runner.reads,
        "key_bytes": KEY_SIZE,
        "value_bytes": VALUE_SIZE,
        "engines": runnable,
        "args": {k: v for k, v in vars(args).items() if k != "ringlock_option"},
        "ringlock_options": runner.ringlock_options,
    }
    try:
        write_orders(runner.data_dir, num, args.seed)
        meta["fsync_per_s"] = fsync_rate(work)
        print(
            f"storage benchmark: N={num:,} reads={runner.reads:,} engines={','.join(runnable)}"
            f"  {busy_note(loadavg()[0])}  raw fsync {meta['fsync_per_s']:.0f}/s",
            file=sys.stderr,
        )
        for group, synced, group_workloads in plan(workloads):
            runner.run_group(group, synced, group_workloads, runnable)
        meta["fsync_per_s_end"] = fsync_rate(work)
    finally:
        if not args.keep and not args.dir:
            shutil.rmtree(work, ignore_errors=True)
    load_end = loadavg()
    usage = os.times()
    meta.update(
        {
            "elapsed_s": time.time() - started,
            "loadavg_end": load_end,
            "parent_cpu_s": usage.user + usage.system,
            "children_cpu_s": usage.children_user + usage.children_system,
            "memtable_budget_bytes": runner.memtable_budget,
            "parent_peak_rss_bytes": peak_rss_bytes(),
        }
    )
    loads = [meta["machine"]["loadavg"][0], load_end[0]]
    loads += [r["loadavg_after"][0] for r in runner.results]
    meta["loadavg_max"] = max(loads)

    print(
        f"\nstorage benchmark, N = {num:,} keys of {KEY_SIZE} B with {VALUE_SIZE} B values, "
        f"{runner.reads:,} reads per read workload"
    )
    print(
        f"1-min load average: start {loads[0]:.2f}, max {max(loads):.2f}, end {loads[1]:.2f} "
        f"({busy_note(max(loads))}); raw 4 KiB write+fsync {meta['fsync_per_s']:.0f}/s at "
        f"start, {meta.get('fsync_per_s_end', 0):.0f}/s at end; run took "
        f"{meta['elapsed_s']:.0f}s"
    )
    print(render(runner, engines))
    if runner.profile_text:
        print(f"\n== cProfile of ringlock {args.profile} (N = {num:,}) ==")
        profiled = [r for r in runner.results if r.get("profiled")]
        for r in profiled:
            print(
                f"{r['workload']}: {human(r['ops_per_s'])} ops/s under the profiler; process CPU "
                f"{r['cpu_user_s'] + r['cpu_sys_s']:.2f}s, main thread "
                f"{r['cpu_main_thread_s']:.2f}s"
            )
        print(runner.profile_text)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(
                {
                    "meta": meta,
                    "results": runner.results,
                    "children": runner.children,
                    "targets": targets(runner),
                    "errors": runner.errors,
                },
                f,
                indent=2,
                default=repr,
            )
    if ringlock_missing:
        return 2
    return 1 if any(r["check"] != "ok" for r in runner.results) else 0


def _option(text: str) -> tuple[str, Any]:
    name, sep, raw = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        value: Any = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return name, value


if __name__ == "__main__":
    sys.exit(main())
