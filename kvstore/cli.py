"""The `kv` command: one entry point for users and operators.

Subcommands register themselves in `build_parser()`; each one is a function that takes
the parsed arguments and returns the process exit code.
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import version


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kv",
        description="ringlock: a replicated key-value store and lock service.",
    )
    parser.add_argument("--version", action="version", version=f"ringlock {version('ringlock')}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_demo_command(commands)
    return parser


# -- kv demo -------------------------------------------------------------------------------

def add_demo_command(commands: argparse._SubParsersAction) -> None:
    demo = commands.add_parser(
        "demo",
        help="exercise the storage engine: write, read, delete, scan, reopen, print stats",
        description=(
            "Open an LSM storage engine in a folder, write a few thousand keys, read some "
            "back, delete some, scan a range, close, reopen and check that everything "
            "recovered, then print what happened and the engine's stats. By default the "
            "folder is a fresh temporary directory that is removed afterwards; with --path "
            "the data is kept there (an existing engine folder is reused). Exits 1 with a "
            "message if any check fails."
        ),
    )
    demo.add_argument("--path", help="engine folder to use and keep (default: a temp dir)")
    demo.add_argument("--keys", type=int, default=5000, help="keys to write (default 5000)")
    demo.add_argument("--sync", choices=["always", "interval", "none"], default="interval",
                      help="write-ahead log sync policy (default interval)")
    demo.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    import tempfile

    if args.keys < 10:
        print("kv demo: --keys must be at least 10", file=sys.stderr)
        return 2
    if args.path:
        return _demo(args.path, args.keys, args.sync)
    with tempfile.TemporaryDirectory(prefix="ringlock-demo-") as folder:
        return _demo(folder, args.keys, args.sync)


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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
