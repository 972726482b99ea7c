"""`kv aae status|exchange|rebuild`: the operator's view of anti-entropy.

    kv aae status [--node HOST:PORT] [--json]
        per partition this node replicates: tree age, last exchange (how long ago, with
        whom), keys repaired; then the totals (exchanges, keys repaired, bytes, durations)
    kv aae exchange [--node HOST:PORT] [--peer HOST:PORT] [--partition P ...] [--full]
                    [--unlimited] [--json]
        exchange now (default: with every live replica, every shared partition), and
        print what each exchange found and repaired

    kv aae status --watch [--interval S]
        first follow the node until every tree is ready and every partition it shares has
        been exchanged again since the watch began (bars on stderr: trees ready, partitions
        exchanged; kvstore/progress.py), then print the status
    kv aae rebuild [--partition P ...] [--wait]
        queue tree rebuilds (default: every partition holding keys); with --wait follow
        them (a bar of trees rebuilt) until none is pending

Progress shows on a terminal; --progress forces it (log-style lines elsewhere),
--no-progress turns it off; never on stdout. A wait longer than --timeout fails (exit 1).

They call GET /admin/v1/aae and POST /admin/v1/aae/exchange|rebuild (antientropy/api.py) over
plain HTTP (no aiohttp import, so `kv` starts fast). `register(subcommands)` adds them
to a `kv` parser; `python -m antientropy.cli aae ...` runs them alone. Errors print one
line and exit 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request

from antientropy.errors import AntiEntropyError
from kvstore import progress


def register(commands: argparse._SubParsersAction) -> None:
    aae = commands.add_parser("aae", help="anti-entropy: status, exchange or rebuild now",
                              description="Merkle-tree anti-entropy between replicas.")
    verbs = aae.add_subparsers(dest="verb", metavar="VERB", required=True)
    status = verbs.add_parser("status", help="per partition: tree age, last exchange, keys "
                                             "repaired; totals")
    exchange = verbs.add_parser("exchange", help="exchange with the other replicas now")
    exchange.add_argument("--peer", metavar="HOST:PORT", help="only with this replica")
    exchange.add_argument("--partition", type=int, action="append", metavar="P",
                          help="only this partition (repeatable)")
    exchange.add_argument("--full", action="store_true",
                          help="naive full comparison (every key and clock), no trees")
    exchange.add_argument("--unlimited", action="store_true",
                          help="ignore the rate limit (keys and bytes per second)")
    status.add_argument("--watch", action="store_true",
                        help="follow tree rebuilds and exchanges until all are done, then "
                             "print the status")
    rebuild = verbs.add_parser("rebuild", help="rebuild Merkle trees now (--wait: follow)")
    rebuild.add_argument("--partition", type=int, action="append", metavar="P",
                         help="only this partition (repeatable; default: all with keys)")
    rebuild.add_argument("--wait", action="store_true",
                         help="return once every queued tree is rebuilt")
    for parser in (status, rebuild):
        parser.add_argument("--interval", type=float, default=0.5, metavar="SECONDS",
                            help="how often to ask the node while following (default 0.5)")
        progress.add_arguments(parser)
    for parser, func in ((status, run_status), (exchange, run_exchange),
                         (rebuild, run_rebuild)):
        parser.add_argument("--node", default=None, metavar="HOST:PORT",
                            help="node to ask (default: $KV_NODES's first, else "
                                 "127.0.0.1:7001)")
        parser.add_argument("--timeout", type=float, default=600.0, metavar="SECONDS")
        parser.add_argument("--json", action="store_true", help="print one JSON object")
        parser.set_defaults(func=func)


def _node(args: argparse.Namespace) -> str:
    if args.node:
        return args.node
    from kvstore.cli_data import default_nodes

    return default_nodes()[0]


def _call(args: argparse.Namespace, method: str, path: str, body: dict | None = None) -> dict:
    from kvstore.tls import TLSError, client_setup  # kv --cacert/--cert/--key (docs/tls.md)

    node = _node(args)
    try:
        scheme, context = client_setup([node], *(getattr(args, k, None)
                                                 for k in ("tls_ca", "tls_cert", "tls_key")))
    except TLSError as exc:
        raise AntiEntropyError(str(exc)) from None
    node = node.split("://", 1)[-1]
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"{scheme}://{node}{path}", data, method=method,
                                 headers={"Content-Type": "application/json"})
    if getattr(args, "token", None):  # kv --token (docs/auth.md)
        req.add_header("Authorization", f"Bearer {args.token}")
    try:
        with urllib.request.urlopen(req, timeout=args.timeout, context=context) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read()).get("message")
        except ValueError:
            message = None
        raise AntiEntropyError(f"{node}: HTTP {exc.code}: {message or exc.reason}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise AntiEntropyError(f"{node}: {getattr(exc, 'reason', exc)}") from None


def _ago(at: float | None) -> str:
    return "never" if at is None else f"{max(0.0, time.time() - at):.1f} s ago"


def _mode(args: argparse.Namespace) -> progress.Mode:
    return progress.choose(progress.flag(args), sys.stderr, json_output=args.json)


def _follow(args: argparse.Namespace, step) -> dict:
    """Call `step(status)` on the node's status every --interval seconds until it returns
    True; the last status. Fails after --timeout seconds."""
    deadline = time.monotonic() + args.timeout
    while True:
        doc = _call(args, "GET", "/admin/v1/aae")
        if step(doc):
            return doc
        if time.monotonic() > deadline:
            raise AntiEntropyError(f"{_node(args)}: not done after {args.timeout:.0f} s "
                                   f"(trees pending: {doc['trees']['pending']})")
        time.sleep(args.interval)


def _watch(args: argparse.Namespace) -> dict:
    """Until every tree is ready and every shared partition was exchanged since we began."""
    first = _call(args, "GET", "/admin/v1/aae")
    before = {p: row["last_exchange"] for p, row in first["partitions"].items()}
    mode = _mode(args)
    with progress.Progress("trees ready", mode=mode, unit="trees", rate=False) as trees, \
            progress.Progress("partitions exchanged", mode=mode, unit="partitions",
                              rate=False) as exchanged:
        def step(doc: dict) -> bool:
            t, rows = doc["trees"], doc["partitions"]
            trees.set(t["ready"], t["ready"] + t["pending"])
            done = sum(row["last_exchange"] is not None
                       and row["last_exchange"] != before.get(p) for p, row in rows.items())
            exchanged.set(done, len(rows))
            if done < len(rows) and not doc["settings"]["enabled"]:
                raise AntiEntropyError(f"{doc['node']}: exchanges are paused (`POST "
                                       "/admin/v1/aae/schedule {\"enabled\": true}` resumes "
                                       "them); nothing to wait for")
            return t["pending"] == 0 and done == len(rows)

        return _follow(args, step)


def run_status(args: argparse.Namespace) -> int:
    doc = _watch(args) if args.watch else _call(args, "GET", "/admin/v1/aae")
    if args.json:
        print(json.dumps(doc))
        return 0
    s, t, trees = doc["settings"], doc["totals"], doc["trees"]
    print(f"{doc['node']}: exchanges {'on' if s['enabled'] else 'PAUSED'} every "
          f"{s['interval_s']} s, at most {s['keys_per_s']:.0f} keys/s and "
          f"{s['bytes_per_s']:.0f} B/s; trees ready {trees['ready']}, pending "
          f"{trees['pending']}, rebuilt {trees['rebuilds']}")
    print(f"{'partition':>9}  {'tree age':>10}  {'last exchange':>15}  {'with':<22} repaired")
    for p, row in sorted(doc["partitions"].items(), key=lambda kv: int(kv[0])):
        age = "rebuilding" if row["tree_age_s"] is None else f"{row['tree_age_s']:.0f} s"
        print(f"{p:>9}  {age:>10}  {_ago(row['last_exchange']):>15}  "
              f"{row['last_peer'] or '-':<22} {row['keys_repaired']}")
    mean = t["duration_total_s"] / t["exchanges"] if t["exchanges"] else 0.0
    print(f"totals: {t['exchanges']} exchanges ({t['failures']} failed), "
          f"{t['keys_repaired']} keys repaired, {t['bytes_sent']} bytes sent, "
          f"{t['bytes_received']} received; duration mean {mean:.3f} s, max "
          f"{t['duration_max_s']:.3f} s")
    return 0


def run_exchange(args: argparse.Namespace) -> int:
    body: dict = {"mode": "full" if args.full else "tree", "limited": not args.unlimited}
    if args.peer:
        body["peer"] = args.peer
    if args.partition:
        body["partitions"] = args.partition
    doc = _call(args, "POST", "/admin/v1/aae/exchange", body)
    if args.json:
        print(json.dumps(doc))
        return 0
    if not doc["exchanges"]:
        print("no live replica shares a partition with this node")
    for r in doc["exchanges"]:
        print(f"with {r['peer']}: {r['partitions']} partitions compared "
              f"({len(r['skipped'])} skipped), {r['differing_partitions']} differed in "
              f"{r['differing_segments']} segments; repaired {r['repaired_here']} keys "
              f"here, {r['repaired_there']} there; {r['bytes_sent'] + r['bytes_received']} "
              f"bytes in {r['calls']} calls, {r['duration_s']:.3f} s")
    return 0


def run_rebuild(args: argparse.Namespace) -> int:
    body = {"partitions": args.partition} if args.partition else {}
    queued = _call(args, "POST", "/admin/v1/aae/rebuild", body)["queued"]
    if not args.wait:
        print(json.dumps({"queued": queued}) if args.json else
              f"{len(queued)} trees queued for rebuild (`kv aae rebuild --wait` follows them)")
        return 0
    total = len(queued)
    with progress.Progress("trees rebuilt", mode=_mode(args), total=total, unit="trees",
                           rate=False) as bar:
        def step(doc: dict) -> bool:
            nonlocal total
            pending = doc["trees"]["pending"]
            total = max(total, pending)
            bar.set(total - pending, total)
            return pending == 0

        doc = _follow(args, step)
    print(json.dumps({"rebuilt": total, "trees": doc["trees"]}) if args.json else
          f"{total} trees rebuilt; {doc['trees']['ready']} ready, rebuilds so far "
          f"{doc['trees']['rebuilds']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kv")
    progress.add_arguments(parser, top=True)
    register(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except AntiEntropyError as exc:
        print(f"kv aae {args.verb}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
