"""Issue 6's benchmark: Merkle-tree anti-entropy against a naive full comparison.

    .venv/bin/python -m bench.aae                  # 100,000 keys, 1% differing
    .venv/bin/python -m bench.aae --keys 20000 --p99-seconds 5

Two real node processes (`kv serve`, N=2, so each replicates every partition). Both get
the same `--keys` keys (values of `--value-bytes`) through the internal merge_many op;
then `--differ` (1%) of the keys get a newer version on one replica only (half on each),
again through the internal op, so no hint or read repair is involved. Then, side by side
on the same data (fresh divergence of other keys before each run):

- tree: `POST /admin/v1/aae/exchange {"mode": "tree", "limited": false}` on node 1 (the
  node's real exchange: descent over the trees, keys of differing segments, repair);
- naive: the same call with `"mode": "full"`: every key of every partition is sent with
  its clock, the responder compares them with its own, the repair is the same.

The engines are first left to settle (flushes and compactions of the load done), the
trees' inner hashes are computed once (a warm-up exchange with nothing to repair), and
`--rounds` tree/naive pairs run interleaved; the lower medians are compared (with 2
rounds, each mode's faster run; every run's time is printed beside it).

Time to converge = the admin call's wall time (it returns once both replicas merged);
both replicas are then checked key by key. Bytes = request plus reply bodies of every
exchange call, both directions (HTTP headers, ~200 B per call, are not counted; the
number of calls is printed). Differing-entry bytes = for each differing key, its key
plus the encoded newer state (what a perfect protocol would have to move).

Foreground p99: `--clients` closed-loop clients doing 50/50 GET/PUT on the keys through
the public API for `--p99-seconds`, alternately with anti-entropy paused and with its
scheduler running at the default rate (keys_per_s, bytes_per_s unchanged; interval 1 s)
while it repairs a fresh 2% divergence; windows in the order paused, running, running,
paused, latencies pooled per condition.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import statistics
import tempfile
import time
import urllib.request

import aiohttp
import msgpack

from bench._common import busy_note, loadavg
from bench.ringlock_target import StoreCluster, http_json
from kvstore import vclock
from kvstore.vclock import SiblingSet, VersionVector

BATCH = 2000


def internal(node: str, op: str, fields: dict, timeout: float = 300.0) -> dict:
    req = urllib.request.Request(f"http://{node}/internal/v1/{op}",
                                 msgpack.packb(fields, use_bin_type=True),
                                 {"Content-Type": "application/x-msgpack"}, method="POST")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return msgpack.unpackb(r.read(), raw=False)


def merge_many(node: str, items: list[tuple[bytes, SiblingSet]]) -> None:
    for i in range(0, len(items), BATCH):
        internal(node, "merge_many",
                 {"items": [[k, vclock.encode(s)] for k, s in items[i:i + BATCH]]})


def admin(node: str, path: str, body: dict, timeout: float = 600.0) -> dict:
    status, reply = http_json("POST", f"http://{node}/admin/v1/aae/{path}", body, timeout)
    if status != 200:
        raise RuntimeError(f"{path} on {node}: {status} {reply}")
    return reply


def diverge(names: list[str], states: dict[bytes, SiblingSet], keys: list[bytes],
            rnd: random.Random, value_bytes: int) -> int:
    """Give each key a newer version on one replica (alternating); the bytes of the
    differing entries (key + encoded newer state)."""
    per_node: dict[str, list] = {n: [] for n in names}
    size = 0
    for i, key in enumerate(keys):
        node = names[i % 2]
        state = vclock.update(states[key], states[key].clock, node, rnd.randbytes(value_bytes),
                              timestamp=time.time_ns())
        states[key] = state
        per_node[node].append((key, state))
        size += len(key) + len(vclock.encode(state))
    for node, items in per_node.items():
        merge_many(node, items)
    return size


def check_converged(names: list[str], states: dict[bytes, SiblingSet],
                    keys: list[bytes]) -> None:
    for key in keys:
        copies = [vclock.decode(internal(n, "get", {"key": key})["state"]) for n in names]
        if copies[0] != copies[1] or copies[0] != states[key]:
            raise RuntimeError(f"not converged on {key!r}")


def run_exchange(names: list[str], mode: str) -> tuple[float, dict]:
    started = time.monotonic()
    reply = admin(names[0], "exchange", {"peer": names[1], "mode": mode, "limited": False})
    return time.monotonic() - started, reply["exchanges"][0]


async def foreground(names: list[str], keys: list[bytes], seconds: float, clients: int,
                     value_bytes: int) -> list[float]:
    latencies: list[float] = []
    stop = time.monotonic() + seconds
    rnd = random.Random(7)

    async def client(cid: int, session: aiohttp.ClientSession) -> None:
        base = f"http://{names[cid % len(names)]}/kv/"
        while time.monotonic() < stop:
            key = rnd.choice(keys).decode()
            t = time.perf_counter()
            if rnd.random() < 0.5:
                async with session.get(base + key) as r:
                    await r.read()
            else:
                async with session.put(base + key, data=rnd.randbytes(value_bytes)) as r:
                    await r.read()
            latencies.append(time.perf_counter() - t)

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(client(c, session) for c in range(clients)))
    return latencies


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98] if len(values) > 1 else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--differ", type=float, default=0.01, help="fraction of keys (0.01)")
    ap.add_argument("--value-bytes", type=int, default=100)
    ap.add_argument("--p99-seconds", type=float, default=10.0)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2, help="tree/naive pairs (median)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--dir", default=None)
    args = ap.parse_args()
    rnd = random.Random(args.seed)
    root = args.dir or tempfile.mkdtemp(prefix="bench-aae-")
    load_before = loadavg()[0]
    cluster = StoreCluster(root, nodes=2, n=2, r=1, w=1)
    try:
        cluster.start()
        names = cluster.names
        for n in names:
            admin(n, "schedule", {"enabled": False})
        keys = [b"key%07d" % i for i in range(args.keys)]
        states = {k: vclock.update(SiblingSet(), VersionVector(), names[0],
                                   rnd.randbytes(args.value_bytes), timestamp=1) for k in keys}
        t = time.monotonic()
        for n in names:
            merge_many(n, list(states.items()))
        print(f"loaded {args.keys} keys into both replicas in {time.monotonic() - t:.1f} s")
        settle(names)
        run_exchange(names, "tree")  # warm-up: hashes the trees' inner nodes once
        count = max(1, int(args.keys * args.differ))
        pool = iter(rnd.sample(keys, (2 * args.rounds + 2) * count))
        rows: dict[str, list] = {"tree": [], "full": []}
        for _ in range(args.rounds):  # interleaved, so drifting load hits both alike
            for mode in ("tree", "full"):
                chosen = [next(pool) for _ in range(count)]
                entry_bytes = diverge(names, states, chosen, rnd, args.value_bytes)
                settle(names)
                elapsed, result = run_exchange(names, mode)
                check_converged(names, states, chosen)
                rows[mode].append((elapsed, result, entry_bytes))
                print(f"{mode}: {elapsed:.2f} s, {result}")
        again = run_exchange(names, "tree")[1]
        print(f"tree exchange after convergence: {again['differing_partitions']} partitions "
              f"differ, {again['bytes_sent'] + again['bytes_received']} bytes")
        quiet, busy = [], []
        for window, running in enumerate((False, True, True, False)):  # ABBA
            for n in names:
                admin(n, "schedule", {"enabled": running, "interval_s": 1.0})
            if running and window == 1:
                diverge(names, states, [next(pool) for _ in range(2 * count)], rnd,
                        args.value_bytes)
            (busy if running else quiet).extend(asyncio.run(foreground(
                names, keys, args.p99_seconds, args.clients, args.value_bytes)))
        repaired = sum(http_json("GET", f"http://{n}/admin/v1/aae")[1]["totals"]
                       ["keys_repaired"] for n in names)
        print(f"foreground windows done; aae repaired {repaired} keys in all")
        report(args, rows, quiet, busy, load_before)
    finally:
        cluster.stop()
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)


def settle(names: list[str], timeout: float = 180.0) -> None:
    """Until both engines' shapes (files and bytes per level) hold still for 2 s: the
    load's flushes and compactions are done and do not run into a measurement."""
    def shape() -> list:
        out = []
        for n in names:
            engine = internal(n, "status", {})["replica"]["engine"]
            out.append((engine["files_per_level"], engine["bytes_per_level"],
                        engine["immutable_memtable"]))
        return out
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        now = shape()
        if now == last:
            return
        last = now
        time.sleep(2.0)


def _median(runs: list) -> tuple:
    return sorted(runs, key=lambda run: run[0])[(len(runs) - 1) // 2]


def report(args, rows: dict, quiet: list[float], busy: list[float], load_before: float) -> None:
    (t_tree, r_tree, e_tree), (t_full, r_full, e_full) = (_median(rows["tree"]),
                                                          _median(rows["full"]))
    b_tree = r_tree["bytes_sent"] + r_tree["bytes_received"]
    b_full = r_full["bytes_sent"] + r_full["bytes_received"]
    print()
    print(f"anti-entropy, {args.keys} keys, {args.differ:.1%} differing, values of "
          f"{args.value_bytes} B; {busy_note(max(load_before, loadavg()[0]))}")
    print("| measure | tree exchange | naive full comparison | ratio | target |")
    print("|---|---|---|---|---|")
    runs = {m: ", ".join(f"{r[0]:.2f}" for r in rows[m]) for m in rows}
    print(f"| time to converge (lower median of {args.rounds}) | {t_tree:.2f} s ({runs['tree']}) | "
          f"{t_full:.2f} s ({runs['full']}) | {t_tree / t_full:.3f} | <= 0.2 |")
    print(f"| bytes exchanged | {b_tree:,} | {b_full:,} | naive/tree {b_full / b_tree:.1f}x "
          f"| >= 20x |")
    print(f"| bytes / differing entries | {b_tree / e_tree:.2f} | {b_full / e_full:.2f} | "
          f"| tree <= 3 |")
    print(f"| differing entries (bytes) | {e_tree:,} | {e_full:,} | | |")
    print(f"| calls | {r_tree['calls']} | {r_full['calls']} | | |")
    print(f"| keys repaired | {r_tree['repaired_here'] + r_tree['repaired_there']} | "
          f"{r_full['repaired_here'] + r_full['repaired_there']} | | |")
    q, b = p99(quiet) * 1000, p99(busy) * 1000
    print(f"| foreground p99 (ms), aae paused / running | {q:.1f} ({len(quiet)} ops) | "
          f"{b:.1f} ({len(busy)} ops) | {b / q:.2f} | <= 1.5 |")


if __name__ == "__main__":
    main()
