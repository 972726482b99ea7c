"""`kv cluster up|down|status` (a local cluster of real processes), the membership
commands `kv cluster join|leave|remove|members` (sent to one node of any cluster over
/admin/v1/, kvstore/membership_http.py) and `kv serve`.

See kvstore/local_cluster.py for the folder layout and how nodes are started and stopped.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from kvstore import progress
from kvstore.local_cluster import (
    DEFAULT_BASE_PORT,
    DEFAULT_DIR,
    DEFAULT_HOST,
    DEFAULT_NODES,
    ClusterError,
    LocalCluster,
)

WAIT_S = 600.0  # `--wait` of join/leave/remove: a hand-off of much data takes a while
WAIT_POLL_S = 0.5


def kv_command() -> str:
    """How the user ran us, for the hints we print (`.venv/bin/kv` or plain `kv`)."""
    argv0 = sys.argv[0] if sys.argv else ""
    return argv0 if argv0.endswith("/kv") else "kv"


def add_cluster_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", default=DEFAULT_DIR,
                        help=f"the cluster's folder (default ./{DEFAULT_DIR})")


def register(commands: argparse._SubParsersAction) -> None:
    cluster = commands.add_parser(
        "cluster", help="run a local cluster of real node processes",
        description="A local cluster: real `kv serve` processes on one machine, data, logs "
                    "and pid files in one folder.")
    verbs = cluster.add_subparsers(dest="verb", metavar="VERB", required=True)
    up = verbs.add_parser("up", help="start the cluster (or its stopped nodes) and wait "
                                     "until it is ready")
    add_cluster_options(up)
    up.add_argument("--nodes", type=int, default=DEFAULT_NODES,
                    help=f"number of nodes for a new cluster (default {DEFAULT_NODES})")
    up.add_argument("--base-port", type=int, default=DEFAULT_BASE_PORT,
                    help=f"port of node 1; the others follow (default {DEFAULT_BASE_PORT})")
    up.add_argument("--host", default=DEFAULT_HOST, help=f"address (default {DEFAULT_HOST})")
    progress.add_arguments(up)
    up.set_defaults(func=run_up)
    down = verbs.add_parser("down", help="stop every node (SIGTERM, then SIGKILL)")
    add_cluster_options(down)
    down.set_defaults(func=run_down)
    status = verbs.add_parser("status", help="show each node's process and health; exits 3 "
                                             "unless every node is ready")
    add_cluster_options(status)
    status.set_defaults(func=run_status)
    _register_membership(verbs)


def _register_membership(verbs: argparse._SubParsersAction) -> None:
    """join, leave, remove, members: operator commands sent to one node (any cluster)."""
    from kvstore.cli_data import add_node_options

    join = verbs.add_parser("join", help="make the node (--node) join the cluster of SEED")
    join.add_argument("seed", metavar="SEED", help="a member of the cluster, HOST:PORT")
    leave = verbs.add_parser("leave", help="make the node (--node) hand its partitions off "
                                           "and leave the ring")
    remove = verbs.add_parser("remove", help="remove a dead member NODE from the ring "
                                             "(asked of a live node, --node)")
    remove.add_argument("dead", metavar="NODE", help="the dead member, HOST:PORT")
    members = verbs.add_parser("members", help="membership as the node (--node) sees it")
    for parser, func in ((join, run_join), (leave, run_leave), (remove, run_remove),
                         (members, run_members)):
        add_node_options(parser)
        parser.set_defaults(func=func)
    for parser in (join, leave, remove):
        parser.add_argument("--wait", action="store_true",
                            help="return once every live node acts on the new ring and has "
                                 "handed off what it owes (a bar of partitions transferred)")
        parser.add_argument("--wait-timeout", type=float, default=WAIT_S, metavar="SECONDS",
                            help=f"give up waiting after this long (default {WAIT_S:.0f})")
        progress.add_arguments(parser)


def run_up(args: argparse.Namespace) -> int:
    cluster = LocalCluster(args.dir, nodes=args.nodes, host=args.host,
                           base_port=args.base_port)
    asked = (args.nodes, args.host, args.base_port)
    if cluster.exists and asked != (cluster.size, cluster.host, cluster.base_port):
        print(f"note: the cluster in {cluster.folder} has {cluster.size} nodes from "
              f"{cluster.names[0]}; that layout is kept (remove the folder for a new one)",
              file=sys.stderr)
    start_cluster(cluster, progress.choose(progress.flag(args), sys.stderr))
    kv = kv_command()
    print(f"cluster ready: {', '.join(cluster.names)}\n"
          f"  try: {kv} put hello world && {kv} get hello\n"
          f"  see: {kv} cluster status, {kv} ring; stop: {kv} cluster down"
          + ("" if args.dir == DEFAULT_DIR else f" --dir {args.dir}"))
    return 0


def start_cluster(cluster: LocalCluster, mode: progress.Mode = progress.Mode.OFF) -> None:
    """Start `cluster` printing progress lines on stdout and, as `mode` says, a bar per
    stage on stderr (nodes started, joined, ring formed, lock leader); raises ClusterError
    (the CLI prints it)."""
    again = "restarting" if cluster.exists else "starting"
    print(f"{again} a {cluster.size}-node cluster in {cluster.folder}", flush=True)
    bars: dict[str, progress.Progress] = {}

    def count(stage: str, done: int, total: int) -> None:
        if stage not in bars:
            bars[stage] = progress.Progress(stage, mode=mode, total=total, unit="nodes",
                                            rate=False)
        bars[stage].set(done, total)
        if done == total:  # a stage that is done stays done: its final line now
            bars[stage].close()

    def line(text: str) -> None:
        (next(iter(bars.values())).write if bars else print)(text)

    try:
        cluster.up(progress=line, count=count)
    except BaseException:
        print(f"(nodes that did start keep running: `{kv_command()} cluster down --dir "
              f"{cluster.folder}` stops them)", file=sys.stderr)
        raise
    finally:
        for bar in bars.values():
            bar.close()


def run_down(args: argparse.Namespace) -> int:
    cluster = LocalCluster(args.dir)
    if not cluster.exists:
        print(f"kv cluster down: no cluster in {cluster.folder}", file=sys.stderr)
        return 1
    stopped = cluster.down(progress=lambda line: print(line, flush=True))
    print(f"stopped {stopped} node{'s' * (stopped != 1)}; data and logs stay in "
          f"{cluster.folder}")
    return 0


def run_status(args: argparse.Namespace) -> int:
    cluster = LocalCluster(args.dir)
    if not cluster.exists:
        print(f"kv cluster status: no cluster in {cluster.folder} (start one with "
              f"`{kv_command()} cluster up`)", file=sys.stderr)
        return 1
    states = cluster.status()
    ready = sum(s.healthy for s in states)
    print(f"cluster in {cluster.folder}: {ready} of {len(states)} nodes ready")
    for s in states:
        pid = f"pid {s.pid}" if s.pid else "-"
        what = "ready" if s.healthy else ("starting or not answering" if s.pid else "stopped")
        print(f"  node{s.index:<3} {s.name:<22} {pid:<11} {what}")
    return 0 if ready == len(states) else 3


def _admin(args: argparse.Namespace, op: str, body: dict | None = None) -> dict:
    from kvstore.cli_data import client_for

    with client_for(args) as kv:
        return kv.admin(op, body)


def _print_members(doc: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(doc))
        return
    print(f"{doc.get('node')}: {doc.get('status')}, ring version {doc.get('ring_version')}, "
          f"claimant {doc.get('claimant')}, converged {doc.get('converged')}")
    for name, m in sorted((doc.get("members") or {}).items()):
        role = "member" if m.get("member") else "not a member"
        health = "up" if m.get("alive") else "DOWN"
        print(f"  {name:<24} {health:<5} {m.get('status', '?'):<9} {role:<13} "
              f"{m.get('partitions', 0):>5} partitions")


def run_join(args: argparse.Namespace) -> int:
    doc = _admin(args, "join", {"seed": args.seed})
    _print_members(_wait_transfers(args, doc["node"]) if args.wait else doc, args.json)
    return 0


def run_leave(args: argparse.Namespace) -> int:
    doc = _admin(args, "leave")
    if args.wait:
        _print_members(_wait_transfers(args, doc["node"], leaving=doc["node"]), args.json)
        return 0
    print(json.dumps(doc) if args.json else f"{doc.get('node')} is leaving (ring version "
          f"{doc.get('ring_version')}); `kv cluster members` shows when it has left")
    return 0


def run_remove(args: argparse.Namespace) -> int:
    doc = _admin(args, "remove", {"node": args.dead})
    _print_members(_wait_transfers(args, doc["node"]) if args.wait else doc, args.json)
    return 0


def _members_of(args: argparse.Namespace, node: str) -> dict | None:
    """GET /admin/v1/members of `node` (with the command's client options), None if it
    does not answer."""
    from kvstore.cli_data import client_for
    from kvstore.errors import RinglockError

    try:
        with client_for(argparse.Namespace(**{**vars(args), "node": [node]})) as kv:
            return kv.admin("members")
    except RinglockError:
        return None


def _settled(docs: dict[str, dict | None], leaving: str | None) -> bool:
    """Every polled node answered, all act on one ring, none owes a push, and the leaving
    node (if any) says it has left."""
    answered = [d for d in docs.values() if d is not None]
    if len(answered) < len(docs) or len({d["ring_version"] for d in answered}) != 1:
        return False
    for d in answered:
        t = d.get("transfers") or {}
        if not d["converged"] or t.get("pending") or t.get("base_version") is not None:
            return False
    return leaving is None or (docs.get(leaving) or {}).get("status") == "left"


def _wait_transfers(args: argparse.Namespace, asked: str, leaving: str | None = None) -> dict:
    """Follow the hand-off after a membership change until `_settled`: a bar of the
    partitions transferred, summed over the live nodes (their `transfers` status,
    kvstore/transfer.py). The asked node's final status."""
    mode = progress.choose(progress.flag(args), sys.stderr, json_output=args.json)
    deadline = time.monotonic() + args.wait_timeout
    with progress.Progress("partitions transferred", mode=mode, unit="partitions",
                           rate=False) as bar:
        while True:
            view = _members_of(args, asked)
            names = {asked} | ({leaving} if leaving else set())
            if view is not None:
                names |= {n for n, m in view["members"].items() if m["member"] and m["alive"]}
            docs = {name: _members_of(args, name) for name in sorted(names)}
            stats = [(d.get("transfers") or {}) for d in docs.values() if d]
            owed = sum(t.get("partitions_owed", 0) for t in stats)
            bar.set(sum(t.get("partitions_done", 0) for t in stats), owed)
            if view is not None and _settled(docs, leaving):
                return view
            if time.monotonic() > deadline:
                raise ClusterError(f"the hand-off did not finish in {args.wait_timeout:.0f} s "
                                   f"({bar.n:.0f} of {owed} partitions transferred); "
                                   f"`kv cluster members --node NODE` shows each node's state")
            time.sleep(WAIT_POLL_S)


def run_members(args: argparse.Namespace) -> int:
    _print_members(_admin(args, "members"), args.json)
    return 0


# -- kv serve ------------------------------------------------------------------------------

def register_serve(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser(
        "serve", help="run one node (flags or a TOML config)",
        description="Run one node of the store in the foreground: it serves the public "
                    "API, the internal replica API and gossip on one port. It prints "
                    "`ringlock node NAME ready` on stderr once it serves requests; SIGTERM "
                    "or Ctrl-C stops it cleanly.")
    try:
        from kvstore import config
    except ImportError:
        serve.set_defaults(func=_no_serve)
        return
    config.add_arguments(serve)
    serve.set_defaults(func=run_serve)


def _no_serve(args: argparse.Namespace) -> int:
    print("kv serve: this build has no node process yet (kvstore/config.py is missing)",
          file=sys.stderr)
    return 1


def run_serve(args: argparse.Namespace) -> int:
    from kvstore import config, node

    try:
        settings = config.from_args(args)
    except config.ConfigError as exc:
        print(f"kv serve: {exc}", file=sys.stderr)
        return 2
    return int(node.main(settings) or 0)
