"""`kv-chaos`: run a Jepsen-style test against a real local cluster, or check a saved history.

    kv-chaos run --workload register|set|lock|election
                 --nemesis partition,kill,pause,clock,loss,delay,torn-tail
                 --nodes 5 --time 60 --rate 50 --seed S [--store DIR] [--unsafe]
                 [--net auto|iptables|proxy]
    kv-chaos check --workload W FOLDER      (re-run the checker on FOLDER/history.jsonl)

Exit status: 0 when the history is valid, 1 when the checker found a violation, 2 for a
usage error or a run that could not be carried out (the message says why).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
from pathlib import Path

from chaos import history
from chaos.recorder import Recorder
from chaos.runner import NEMESIS_PROCESS, RunOptions, run
from chaos.schedule import NEMESES
from chaos.workloads import WORKLOADS
from chaos.workloads.base import Env


def _nemeses(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip() and n.strip() != "none"]
    unknown = sorted(set(names) - set(NEMESES))
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown nemesis {', '.join(unknown)} (known: {', '.join(NEMESES)})")
    return names


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kv-chaos", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run one test and check it")
    r.add_argument("--workload", required=True, choices=sorted(WORKLOADS))
    r.add_argument("--nemesis", type=_nemeses, default=[], metavar="N1,N2",
                   help=f"faults to inject: {', '.join(NEMESES)} (default: none)")
    r.add_argument("--nodes", type=int, default=5)
    r.add_argument("--lock-members", type=int, default=3)
    r.add_argument("--time", type=float, default=60.0, help="seconds of faults (default 60)")
    r.add_argument("--recovery", type=float, default=10.0, help="seconds after the heal")
    r.add_argument("--fault-window", type=float, default=10.0)
    r.add_argument("--quiet-window", type=float, default=5.0)
    r.add_argument("--rate", type=float, default=50.0, help="operations per second")
    r.add_argument("--concurrency", type=int, default=8, help="client processes")
    r.add_argument("--seed", type=int, default=None)
    r.add_argument("--store", default="store", help="where runs are kept (default ./store)")
    r.add_argument("--unsafe", action="store_true",
                   help="negative control: the workload breaks a rule; the check must fail")
    r.add_argument("--net", choices=("auto", "iptables", "proxy"), default="auto",
                   help="how network faults are made (default auto: iptables when root, "
                        "link proxies for delay or without root)")
    r.add_argument("--no-progress", action="store_true")
    c = sub.add_parser("check", help="check the history of an earlier run again")
    c.add_argument("--workload", required=True, choices=sorted(WORKLOADS))
    c.add_argument("folder", type=Path)
    p.add_argument("--log-level", default="WARNING")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "check":
        return _check(args)
    seed = args.seed if args.seed is not None else random.randrange(2**31)
    opts = RunOptions(args.workload, args.nemesis, nodes=args.nodes,
                      lock_members=args.lock_members, time_s=args.time, rate=args.rate,
                      concurrency=args.concurrency, seed=seed, store=args.store,
                      fault_s=args.fault_window, quiet_s=args.quiet_window,
                      recovery_s=args.recovery, unsafe=args.unsafe,
                      progress=not args.no_progress, net=args.net)
    try:
        results = run(opts)
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"\nkv-chaos: {exc}", file=sys.stderr)
        return 2
    ops = results["operations"]
    print(f"\n{results['workload']} under {', '.join(results['nemeses']) or 'no faults'}: "
          f"{'VALID' if results['valid'] else 'INVALID'}; {ops['total']} operations "
          f"({ops['ok']} ok, {ops['fail']} fail, {ops['info']} info), "
          f"{len(results['faults'])} faults; seed {results['seed']}")
    print(f"report: {results['folder']}/index.html")
    return 0 if results["valid"] else 1


def _check(args: argparse.Namespace) -> int:
    try:
        ops = history.pair(history.read(args.folder / "history.jsonl"))
    except (OSError, history.HistoryError) as exc:
        print(f"kv-chaos: {exc}", file=sys.stderr)
        return 2
    env = Env([], [], Recorder(), random.Random(0))
    verdict = WORKLOADS[args.workload](env).check(
        [o for o in ops if o.process != NEMESIS_PROCESS])
    print(json.dumps(verdict, indent=2, default=str))
    return 0 if verdict["valid"] else 1


if __name__ == "__main__":
    sys.exit(main())
