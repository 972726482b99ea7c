"""`kv demo`: the README's main job, and the storage engine's own demo (`kv demo --storage`).

`kv demo` starts the local cluster in ./ringlock-cluster (or `--dir`) unless it already
runs, writes a value through one node and reads it back through another, shows two
concurrent writes becoming siblings and one write resolving them, then prints what to try
next. The cluster keeps running afterwards (`kv cluster down` stops it).

`kv demo --storage` opens an LSM engine in a folder, writes a few thousand keys, reads some
back, deletes some, scans a range, reopens and checks that everything recovered, then
prints the engine's stats (in a temporary directory, removed afterwards, unless
`--path` names a folder to use and keep).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kvstore import progress
from kvstore.cli_cluster import kv_command, start_cluster
from kvstore.client import Client
from kvstore.local_cluster import (
    DEFAULT_BASE_PORT,
    DEFAULT_DIR,
    DEFAULT_NODES,
    LocalCluster,
    serve_flags,
)


def register(commands: argparse._SubParsersAction) -> None:
    demo = commands.add_parser(
        "demo", help="start a local cluster, write and read through it, show next steps",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    demo.add_argument("--dir", default=DEFAULT_DIR,
                      help=f"the cluster's folder (default ./{DEFAULT_DIR})")
    demo.add_argument("--nodes", type=int, default=DEFAULT_NODES,
                      help=f"nodes, when it starts a new cluster (default {DEFAULT_NODES})")
    demo.add_argument("--base-port", type=int, default=DEFAULT_BASE_PORT,
                      help=f"port of node 1 of a new cluster (default {DEFAULT_BASE_PORT})")
    storage = demo.add_argument_group("storage engine demo (--storage)")
    storage.add_argument("--storage", action="store_true",
                         help="run the storage engine demo instead (no cluster)")
    storage.add_argument("--path", help="engine folder to use and keep (default: a "
                                        "temporary directory, removed afterwards)")
    storage.add_argument("--keys", type=int, help="keys to write (default 5000)")
    storage.add_argument("--sync", choices=["always", "interval", "none"],
                         help="write-ahead log sync policy (default interval)")
    demo.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    if args.storage or args.path or args.keys is not None or args.sync:
        return run_storage_demo(args)  # any storage option implies --storage
    cluster = LocalCluster(args.dir, nodes=args.nodes, base_port=args.base_port)
    states = cluster.status() if cluster.exists else []
    if states and all(s.healthy for s in states):
        print(f"using the running {cluster.size}-node cluster in {cluster.folder}")
    else:
        start_cluster(cluster, progress.choose(progress.flag(args), sys.stderr))
    return _cluster_demo(cluster)


def _show(value: bytes) -> str:
    return repr(value.decode("utf-8", "replace"))


def _cluster_demo(cluster: LocalCluster) -> int:
    first, last = cluster.names[0], cluster.names[-1]
    key, value = b"greeting", b"hello from ringlock"
    with Client([first]) as a, Client([last]) as b:
        a.put(key, value, a.get(key).context)  # replaces what an earlier run wrote
        print(f"  put greeting = {_show(value)} through {first}")
        got = b.get(key)
        if got.values != [value]:
            print(f"kv demo FAILED: read {got.values!r} through {last}", file=sys.stderr)
            return 1
        print(f"  get greeting through {last} -> {_show(got.value or b'')}")
        # Two clients that read the same version write concurrently: siblings, not a loss.
        a.put(b"colour", b"blue", a.get(b"colour").context)
        seen = a.get(b"colour").context
        a.put(b"colour", b"red", seen)
        b.put(b"colour", b"green", seen)
        both = a.get(b"colour")
        print(f"  two clients wrote 'red' and 'green' over the same read of 'colour': "
              f"{len(both.values)} siblings {sorted(v.decode() for v in both.values)}")
        a.put(b"colour", b"+".join(sorted(both.values)), both.context)
        merged = b.get(b"colour")
        if len(both.values) != 2 or merged.values != [b"green+red"]:
            print(f"kv demo FAILED: siblings {both.values!r}, then {merged.values!r}",
                  file=sys.stderr)
            return 1
        print(f"  a write with their context resolves them -> {_show(merged.value or b'')}")
    kv = kv_command()
    default = cluster.folder == Path(DEFAULT_DIR).resolve()
    where = "" if default else f" --dir {cluster.folder}"
    node = "" if default else f" --node {first}"  # else kv finds ./ringlock-cluster's nodes
    hints = [
        (f"{kv} put{node} mykey 'my value'", "write (any node; --node HOST:PORT picks one)"),
        (f"{kv} get{node} mykey", "read; --json shows siblings and the context"),
        (f"{kv} ring{node}", "who owns which partitions, who is up"),
        (f"{kv} cluster status{where}", "the node processes and their logs"),
        (f"curl -s localhost:{cluster.base_port}/kv/greeting", "the HTTP API "
                                                               "(docs/openapi.yaml)"),
        (f"open http://localhost:{cluster.base_port}/status", "the status page, in a browser "
                                                              "(docs/status.md)"),
    ]
    if cluster.lock_members and "--lock-id" in serve_flags():
        members = "" if default else " --members " + ",".join(
            cluster.names[:cluster.lock_members])
        hints.append((f"{kv} lock run{members} jobs -- sh -c 'echo $RINGLOCK_SEQUENCER'",
                      "run a command holding a lock (its sequencer fences writes)"))
    hints += [
        (f"{kv} cluster down{where}", f"stop the cluster (data stays in {cluster.folder})"),
    ]
    width = max(len(command) for command, _ in hints)
    print("demo OK\n\nNext, try:")
    for command, why in hints:
        print(f"  {command:<{width}}  # {why}")
    return 0


# -- kv demo --storage ---------------------------------------------------------------------

def run_storage_demo(args: argparse.Namespace) -> int:
    import tempfile

    keys = 5000 if args.keys is None else args.keys
    sync = args.sync or "interval"
    if keys < 10:
        print("kv demo: --keys must be at least 10", file=sys.stderr)
        return 2
    if args.path:
        return _demo(args.path, keys, sync)
    with tempfile.TemporaryDirectory(prefix="ringlock-demo-") as folder:
        return _demo(folder, keys, sync)


class DemoFailed(Exception):
    pass


def _demo(folder: str, n: int, sync: str) -> int:
    import random
    import time

    from kvstore.lsm import Engine, StorageError

    # Small memtable and tables so that even a short demo flushes and compacts.
    options = {"memtable_bytes": 256 * 1024, "table_file_bytes": 64 * 1024,
               "level1_bytes": 256 * 1024}
    rng = random.Random(7)
    keys = [b"user:%06d" % i for i in range(n)]
    values = {k: b"profile of %s, version %d" % (k, rng.randrange(1000)) for k in keys}

    def check(ok: bool, what: str) -> None:
        if not ok:
            raise DemoFailed(what)

    try:
        print(f"ringlock storage demo in {folder} (sync={sync})")
        with Engine.open(folder, sync=sync, **options) as db:
            started = time.perf_counter()
            for k in keys:
                db.put(k, values[k])
            took = time.perf_counter() - started
            print(f"  wrote {n} keys in {took:.2f} s ({n / took:,.0f} puts/s)")
            sample = rng.sample(keys, min(500, n))
            bad = [k for k in sample if db.get(k) != values[k]]
            check(not bad, f"read back wrong values for {bad[:3]}")
            print(f"  read back {len(sample)} random keys: all match")
            doomed = keys[::10]
            for k in doomed:
                db.delete(k)
                del values[k]
            check(all(db.get(k) is None for k in doomed), "a deleted key is still readable")
            lo, hi = keys[n // 5], keys[n // 5 + min(100, n // 2)]
            got = list(db.scan(lo, hi))
            want = sorted((k, v) for k, v in values.items() if lo <= k < hi)
            check(got == want, f"scan [{lo!r}, {hi!r}) returned {len(got)} pairs, "
                               f"expected {len(want)}")
            print(f"  deleted {len(doomed)} keys; scan [{lo.decode()}, {hi.decode()}) "
                  f"returned {len(got)} keys, as expected")
            first = db.stats()
        print(f"  first session: {first['flushes']} memtable flushes, "
              f"{first['compactions']} compactions, {first['log_syncs']} log fsyncs, "
              f"{first['stalls']} write stalls ({first['stall_seconds']:.3f} s)")
        with Engine.open(folder, sync=sync, **options) as db:
            recovered = dict(db.scan(b"user:", b"user;"))
            check(all(recovered.get(k) == v for k, v in values.items()),
                  "after reopen some written keys are missing or wrong")
            check(not any(k in recovered for k in doomed),
                  "after reopen a deleted key came back")
            print(f"  reopened: {len(values)} live keys recovered, {len(doomed)} deleted "
                  "keys stay deleted")
            db.compact_range()
            stats = db.stats()
        print(f"  reopen replayed {stats['recovered_records']} log records; after a full "
              f"compaction: files per level {stats['files_per_level']}, "
              f"{stats['table_bytes']:,} bytes in tables")
        print("demo OK")
        return 0
    except (DemoFailed, StorageError, OSError) as exc:
        print(f"kv demo FAILED: {exc}", file=sys.stderr)
        return 1

