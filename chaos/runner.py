"""One chaos run: start the cluster, drive the workload through the fault plan, check.

Theory of operation (Jepsen's test lifecycle). The runner starts a fresh cluster under the
run's folder, installs the firewall when the plan has network faults, and starts the
workload's clients (`concurrency` tasks, together at about `rate` operations per second).
It walks the plan: at each window's start the nemesis begins or ends a fault (in a worker
thread, since killing and restarting processes blocks); at `heal_at` it heals everything;
the clients go on through the recovery period and stop at the plan's end. Then the
workload's final reads, the checker, and the report. Every client operation and every
nemesis action is in `history.jsonl` as it happens; `results.json` has the verdict.

Layout of a run: `<store>/<workload>-<nemeses>/<YYYYmmddTHHMMSS>/` with `history.jsonl`,
`results.json`, `latency.png`, `rate.png`, `index.html`, and `cluster/` (node data and
logs).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from chaos import history, report
from chaos.cluster import ChaosCluster
from chaos.firewall import IptablesFirewall
from chaos.history import OpType
from chaos.nemesis import Nemesis
from chaos.network import NetworkFaults
from chaos.proxy import ProxyNetwork
from chaos.recorder import Recorder
from chaos.schedule import Plan, plan
from chaos.workloads import WORKLOADS
from chaos.workloads.base import Env

logger = logging.getLogger(__name__)

NEMESIS_PROCESS = -2
NETWORK_NEMESES = {"partition", "loss", "delay"}
NETS = ("auto", "iptables", "proxy")


@dataclass
class RunOptions:
    workload: str
    nemeses: list[str] = field(default_factory=list)
    nodes: int = 5
    lock_members: int = 3
    time_s: float = 60.0
    rate: float = 50.0
    concurrency: int = 8
    seed: int = 0
    store: str = "store"
    fault_s: float = 10.0
    quiet_s: float = 5.0
    recovery_s: float = 10.0
    op_timeout_s: float = 5.0
    unsafe: bool = False
    progress: bool = True
    net: str = "auto"  # iptables, proxy, or auto: iptables when usable, proxies when needed

    def check(self) -> None:
        if self.workload not in WORKLOADS:
            raise ValueError(f"unknown workload {self.workload!r}; known: "
                             f"{', '.join(sorted(WORKLOADS))}")
        if self.rate <= 0 or self.concurrency < 1 or self.time_s <= 0:
            raise ValueError("rate, concurrency and time must be positive")
        if self.net not in NETS:
            raise ValueError(f"--net is one of {', '.join(NETS)}")
        if self.workload in ("register", "lock", "election") and self.lock_members < 3:
            raise ValueError(f"the {self.workload} workload needs 3 or more lock members")


def run(opts: RunOptions) -> dict[str, Any]:
    """Run one test; returns the results (also written to results.json)."""
    opts.check()
    the_plan = plan(opts.nemeses, opts.time_s, seed=opts.seed, fault_s=opts.fault_s,
                    quiet_s=opts.quiet_s, recovery_s=opts.recovery_s)
    name = f"{opts.workload}-{'+'.join(opts.nemeses) or 'none'}" + ("-unsafe" * opts.unsafe)
    out = Path(opts.store) / name / time.strftime("%Y%m%dT%H%M%S")
    out.mkdir(parents=True, exist_ok=False)
    network = _network(opts)
    recorder = Recorder(out / "history.jsonl")
    started = time.monotonic()
    try:
        with ChaosCluster(out / "cluster", nodes=opts.nodes, lock_members=opts.lock_members,
                          proxies=network.proxies) as cluster:
            cluster.start()
            rng = random.Random(opts.seed)
            nemesis = Nemesis(cluster, network, random.Random(rng.random()))
            env = Env([n.name for n in cluster.nodes],
                      [n.name for n in cluster.nodes if n.lock_id], recorder,
                      random.Random(rng.random()), opts.op_timeout_s, opts.unsafe)
            faults = asyncio.run(_drive(opts, the_plan, nemesis, env))
    finally:
        recorder.close()
        if network.firewall is not None:
            network.firewall.close()
        if network.proxies is not None:
            network.proxies.close()
    ops = history.pair(history.read(out / "history.jsonl"))
    client_ops = [o for o in ops if o.process != NEMESIS_PROCESS]
    verdict = WORKLOADS[opts.workload](env).check(client_ops)
    results = {
        "valid": bool(verdict["valid"]), "workload": opts.workload, "nemeses": opts.nemeses,
        "unsafe": opts.unsafe, "seed": opts.seed, "options": asdict(opts),
        "duration_s": round(time.monotonic() - started, 1),
        "operations": {t.value: sum(o.type is t for o in client_ops)
                       for t in (OpType.OK, OpType.FAIL, OpType.INFO)} |
                      {"total": len(client_ops)},
        "faults": faults, "checker": verdict, "folder": str(out),
    }
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    report.write(out, client_ops, faults, results)
    return results


def _network(opts: RunOptions) -> NetworkFaults:
    """The firewall and/or link proxies this run's nemeses need (see chaos/network.py)."""
    wanted = NETWORK_NEMESES & set(opts.nemeses)
    if not wanted and opts.net == "auto":
        return NetworkFaults()
    why = IptablesFirewall.available()
    use_firewall = opts.net == "iptables" or (opts.net == "auto" and why is None
                                              and bool(wanted - {"delay"}))
    if use_firewall and why is not None:
        raise RuntimeError(f"--net iptables needs iptables as root: {why}")
    use_proxies = opts.net == "proxy" or "delay" in wanted or (
        opts.net == "auto" and why is not None and bool(wanted))
    if "loss" in wanted and not use_firewall:
        raise RuntimeError(f"the loss nemesis needs iptables as root ({why or 'not chosen'})")
    firewall = IptablesFirewall() if use_firewall else None
    if firewall is not None:
        firewall.setup()
    return NetworkFaults(firewall, ProxyNetwork() if use_proxies else None)


async def _drive(opts: RunOptions, the_plan: Plan, nemesis: Nemesis,
                 env: Env) -> list[dict[str, Any]]:
    workload = WORKLOADS[opts.workload](env)
    await workload.open()
    stop = asyncio.Event()
    pause_s = opts.concurrency / opts.rate
    clients = [asyncio.create_task(workload.client(p, stop, pause_s))
               for p in range(opts.concurrency)]
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    faults: list[dict[str, Any]] = []
    active: dict[str, Any] | None = None
    status = {"fault": "quiet"}
    ticker = asyncio.create_task(_progress(opts, env.recorder, t0, status))

    async def act(kind: str | None) -> str:
        env.recorder.add(OpType.INVOKE, NEMESIS_PROCESS, "nemesis", None, kind or "end")
        if kind is None:
            line = await asyncio.to_thread(nemesis.end)
        else:
            line = await asyncio.to_thread(nemesis.begin, kind)
        env.recorder.add(OpType.OK, NEMESIS_PROCESS, "nemesis", None, line)
        return line

    try:
        for w in the_plan.windows:
            await asyncio.sleep(max(0.0, t0 + w.start - loop.time()))
            if active is not None:
                _close(active, loop.time() - t0)
                await act(None)
                active = None
            if w.fault is not None:
                active = {"kind": w.fault, "start": loop.time() - t0,
                          "start_ns": time.monotonic_ns(), "end": None, "end_ns": None}
                active["what"] = await act(w.fault)
                faults.append(active)
                status["fault"] = active["what"]
            else:
                status["fault"] = "quiet"
        await asyncio.sleep(max(0.0, t0 + the_plan.heal_at - loop.time()))
        if active is not None:
            _close(active, loop.time() - t0)
        env.recorder.add(OpType.INVOKE, NEMESIS_PROCESS, "nemesis", None, "heal")
        line = await asyncio.to_thread(nemesis.heal_all)
        env.recorder.add(OpType.OK, NEMESIS_PROCESS, "nemesis", None, line)
        status["fault"] = "recovery"
        await asyncio.sleep(max(0.0, t0 + the_plan.end - loop.time()))
    finally:
        stop.set()
        _done, pending = await asyncio.wait(clients, timeout=3 * opts.op_timeout_s)
        for t in pending:
            t.cancel()
        outcomes = await asyncio.gather(*clients, return_exceptions=True)
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
    crashed = [(p, o) for p, o in enumerate(outcomes)
               if isinstance(o, BaseException) and not isinstance(o, asyncio.CancelledError)]
    status["fault"] = "final reads"
    await workload.final()
    await workload.close()
    if crashed:  # a harness bug, not a verdict on the system: say so loudly
        p, exc = crashed[0]
        raise RuntimeError(f"{len(crashed)} client(s) crashed; client {p}: "
                           f"{type(exc).__name__}: {exc}") from exc
    return faults


def _close(fault: dict[str, Any], at: float) -> None:
    fault["end"], fault["end_ns"] = at, time.monotonic_ns()


async def _progress(opts: RunOptions, recorder: Recorder, t0: float,
                    status: dict[str, str]) -> None:
    loop = asyncio.get_running_loop()
    while True:
        c = recorder.counts
        line = (f"t={loop.time() - t0:5.1f}s ops={c[OpType.INVOKE]} ok={c[OpType.OK]}"
                f" fail={c[OpType.FAIL]} info={c[OpType.INFO]} | {status['fault']}")
        if opts.progress:
            sys.stderr.write("\r" + line[:150].ljust(150))
            sys.stderr.flush()
        logger.debug(line)
        await asyncio.sleep(1.0)
