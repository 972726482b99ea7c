"""The child process of the storage benchmark: one engine, one workload group, commands on stdin.

Why a child per engine and group: peak RSS (VmHWM; see _common.peak_rss_bytes) and CPU
can then be attributed to one engine, and an engine's background threads cannot disturb
another engine's run.

Protocol (JSON lines): the child opens its engine and answers `{"ok": true, "hello": ...}`
(or `{"ok": false, "error": ...}`), then for each `{"cmd": "run", "workload": W,
"profile": bool}` answers `{"ok": true, "result": {...}}`, and for `{"cmd": "exit"}` closes
the engine and answers `{"ok": true, "closed": {...}}` (with the profile text if one ran).
Anything the engine prints goes to stderr: the protocol has stdout to itself.

The data (same in every child, derived from the seed; see `keys_for`, `value_for`):
key i is `b"%016d" % i` (16 bytes); a missing key is `b"%015d." % i` (sorts among the
present keys, equals none of them); the value of key i in round r is 100 bytes of a
1 MiB random buffer at an offset fixed by (i, r), so it is incompressible and checkable.
The orders of fillrandom, overwrite and deleterandom are permutations that the parent
writes once to `orders.bin` (uint32), so the child never holds a million Python ints.
"""

from __future__ import annotations

import argparse
import array
import contextlib
import cProfile
import io
import json
import os
import pstats
import random
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

from bench._common import (
    CpuTimes,
    current_rss_bytes,
    directory_bytes,
    loadavg,
    peak_rss_bytes,
    ru_maxrss_bytes,
)
from bench.storage_adapters import EngineUnavailable, open_adapter

CHUNK = 1000  # keys per timed call; also sqlite3's and lmdb's writes per transaction
KEY_SIZE = 16
VALUE_SIZE = 100
BUFFER_SIZE = 1 << 20
SCAN_START = b"0"  # below every key
SCAN_END = b"A"  # above every key (keys are ASCII digits and '.')
ORDERS = ("fillrandom", "overwrite", "deleterandom")  # permutations in orders.bin, in order
SAMPLE = 200  # keys checked after each workload (outside the timed region)


def key_for(i: int) -> bytes:
    return b"%016d" % i


def missing_key_for(i: int) -> bytes:
    return b"%015d." % i


class Data:
    """The generated data set of one run (identical in every child)."""

    def __init__(self, data_dir: str, num: int, seed: int) -> None:
        self.data_dir = data_dir
        self.num = num
        self.seed = seed
        self.buffer = random.Random(seed).randbytes(BUFFER_SIZE)

    def value_for(self, i: int, round_: int) -> bytes:
        offset = (i * 131 + round_ * 7919) % (BUFFER_SIZE - VALUE_SIZE)
        return self.buffer[offset : offset + VALUE_SIZE]

    def order(self, name: str) -> array.array:
        """The permutation of range(num) used by workload `name`."""
        result = array.array("I")
        with open(os.path.join(self.data_dir, "orders.bin"), "rb") as f:
            f.seek(ORDERS.index(name) * self.num * result.itemsize)
            result.fromfile(f, self.num)
        return result


def write_orders(data_dir: str, num: int, seed: int) -> None:
    """Write the permutations the children read (run once by the parent).

    Shuffled in place in a 4-byte array, not a list of ints: a child's ru_maxrss starts
    at its parent's peak RSS, so the parent must stay small too.
    """
    with open(os.path.join(data_dir, "orders.bin"), "wb") as f:
        for index, _name in enumerate(ORDERS):
            order = array.array("I", range(num))
            random.Random(seed * 1000 + index).shuffle(order)  # type: ignore[arg-type]
            order.tofile(f)


class Child:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.data = Data(args.data, args.num, args.seed)
        self.adapter: Any = None
        self.round = 0  # which value round is live (0 after a fill, 1 after overwrite)
        self.deleted = False
        self.profiles: list[tuple[str, cProfile.Profile, threading.Thread | None]] = []
        self.main_profile: cProfile.Profile | None = None  # on only inside timed regions

    # -- timed loops ------------------------------------------------------------------------

    def _chunks(
        self, indices: Any, make: Callable[[Any], tuple], op: Callable[..., Any]
    ) -> tuple[float, int, int]:
        """Run `op(*make(chunk))` over `indices` in chunks; time only `op`."""
        elapsed = 0.0
        total = 0
        found = 0
        perf = time.perf_counter
        prof = self.main_profile
        for start in range(0, len(indices), CHUNK):
            chunk = indices[start : start + CHUNK]
            call_args = make(chunk)
            if prof is not None:
                prof.enable()
            t0 = perf()
            result = op(*call_args)
            elapsed += perf() - t0
            if prof is not None:
                prof.disable()
            total += len(chunk)
            if isinstance(result, int):
                found += result
        return elapsed, total, found

    def _fill(self, indices: Any, round_: int) -> tuple[float, int, int]:
        value_for = self.data.value_for

        def make(chunk: Any) -> tuple:
            return [key_for(i) for i in chunk], [value_for(i, round_) for i in chunk]

        return self._chunks(indices, make, self.adapter.put_chunk)

    def _reads(self, make_key: Callable[[int], bytes], salt: int) -> tuple[float, int, int]:
        rng = random.Random(self.data.seed * 1000 + salt)
        num = self.data.num
        indices = range(self.args.reads)

        def make(chunk: Any) -> tuple:
            return ([make_key(rng.randrange(num)) for _ in chunk],)

        return self._chunks(indices, make, self.adapter.get_chunk)

    def _check_sample(self, present: bool) -> str:
        rng = random.Random(self.data.seed + 7)
        for _ in range(min(SAMPLE, self.data.num)):
            i = rng.randrange(self.data.num)
            got = self.adapter.get_one(key_for(i))
            want = self.data.value_for(i, self.round) if present else None
            if got != want:
                return f"WRONG: key {key_for(i)!r} read {got!r:.40}, expected {want!r:.40}"
        return "ok"

    # -- workloads --------------------------------------------------------------------------

    def run(self, workload: str) -> dict[str, Any]:
        num = self.data.num
        extra: dict[str, Any] = {}
        expected: int | None = None
        if workload == "fillseq":
            elapsed, ops, found = self._fill(range(num), 0)
            check = self._check_sample(present=True)
        elif workload in ("fillrandom", "overwrite"):
            self.round = 0 if workload == "fillrandom" else 1
            elapsed, ops, found = self._fill(self.data.order(workload), self.round)
            check = self._check_sample(present=True)
        elif workload == "readrandom":
            elapsed, ops, found = self._reads(key_for, 11)
            expected = 0 if self.deleted else ops
            check = "ok" if found == expected else f"WRONG: found {found} of {ops} keys"
        elif workload == "readmissing":
            elapsed, ops, found = self._reads(missing_key_for, 13)
            expected = 0
            check = "ok" if found == 0 else f"WRONG: found {found} keys never written"
        elif workload == "scan":
            with self._profiling():
                t0 = time.perf_counter()
                found = self.adapter.scan(SCAN_START, SCAN_END)
                elapsed = time.perf_counter() - t0
            ops = found
            expected = 0 if self.deleted else num
            check = "ok" if found == expected else f"WRONG: scan saw {found}, expected {expected}"
        elif workload == "deleterandom":
            order = self.data.order("deleterandom")
            elapsed, ops, found = self._chunks(
                order, lambda chunk: ([key_for(i) for i in chunk],), self.adapter.delete_chunk
            )
            self.deleted = True
            check = self._check_sample(present=False)
        elif workload == "space":
            return self._space()
        elif workload in ("sync1", "sync16"):
            threads = 1 if workload == "sync1" else self.args.threads
            elapsed, ops, extra = self._synced(threads)
            found = ops
            check = self._check_synced(threads, extra["per_thread"])
        else:
            raise ValueError(f"unknown workload {workload!r}")
        return {
            "ops": ops,
            "seconds": round(elapsed, 6),
            "ops_per_s": ops / elapsed if elapsed > 0 else None,
            "found": found,
            "expected_found": expected,
            "check": check,
            **extra,
        }

    def _space(self) -> dict[str, Any]:
        """Settle and fully compact, then compare the files on disk with the live data."""
        before = directory_bytes(self.args.path)
        with self._profiling():
            t0 = time.perf_counter()
            self.adapter.settle()
            self.adapter.compact()
            compact_s = time.perf_counter() - t0
        after = directory_bytes(self.args.path)
        live = 0 if self.deleted else self.data.num * (KEY_SIZE + VALUE_SIZE)
        return {
            "ops": 0,
            "seconds": round(compact_s, 6),
            "ops_per_s": None,
            "disk_bytes_before_compact": before,
            "disk_bytes": after,
            "live_bytes": live,
            "space_amplification": after / live if live else None,
            "check": "ok",
        }

    def _synced(self, threads: int) -> tuple[float, int, dict[str, Any]]:
        """`threads` writers, each writing durably until the deadline."""
        seconds = self.args.sync_seconds
        counts = [0] * threads
        errors: list[str] = []
        barrier = threading.Barrier(threads + 1)
        value = self.data.value_for(0, 0)
        deadline = [0.0]

        def writer(t: int) -> None:
            put, close = self.adapter.durable_writer()
            try:
                barrier.wait()
                perf = time.perf_counter
                end = deadline[0]
                n = 0
                while perf() < end:
                    put(b"w%02d%013d" % (t, n), value)
                    n += 1
                counts[t] = n
            except Exception as exc:
                errors.append(f"writer {t}: {exc!r}")
            finally:
                close()

        workers = [threading.Thread(target=writer, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        deadline[0] = time.perf_counter() + seconds
        t0 = time.perf_counter()
        barrier.wait()
        for w in workers:
            w.join()
        elapsed = time.perf_counter() - t0
        if errors:
            raise RuntimeError("; ".join(errors))
        return elapsed, sum(counts), {"threads": threads, "per_thread": counts}

    def _check_synced(self, threads: int, counts: list[int]) -> str:
        value = self.data.value_for(0, 0)
        for t in range(threads):
            if counts[t]:
                key = b"w%02d%013d" % (t, counts[t] - 1)
                got = self.adapter.get_one(key)
                if got != value:
                    return f"WRONG: last durable write {key!r} read back as {got!r:.40}"
        return "ok"

    # -- profiling --------------------------------------------------------------------------

    @contextlib.contextmanager
    def _profiling(self) -> Iterator[None]:
        """Profile this thread inside the block if a profiled workload is running."""
        prof = self.main_profile
        if prof is None:
            yield
            return
        prof.enable()
        try:
            yield
        finally:
            prof.disable()

    def profile_new_threads(self) -> None:
        """Profile every thread started from now on, for its whole life."""

        def hook(_frame: Any, _event: str, _arg: Any) -> None:
            # CPU time, not wall time: a background thread mostly waits for work, and its
            # waiting costs the writer nothing (the main thread's profile stays wall time,
            # since a stall there is exactly what throughput pays for).
            prof = cProfile.Profile(time.thread_time)
            thread = threading.current_thread()
            self.profiles.append((thread.name, prof, thread))
            prof.enable()  # replaces this hook for the new thread

        threading.setprofile(hook)

    def profiled(self, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Run `fn` with cProfile on in the timed regions of this thread (key and value
        generation stay out) and in every thread started meanwhile (or since the engine
        opened, with --profile-threads-from-open), for its whole life."""
        main = cProfile.Profile()
        self.profiles.append(("main", main, None))
        self.profile_new_threads()
        self.main_profile = main
        try:
            return fn()
        finally:
            self.main_profile = None
            threading.setprofile(None)  # type: ignore[arg-type]

    def profile_report(self) -> str:
        """Top entries of the merged profile; call only after the engine is closed."""
        if not self.profiles:
            return ""
        stats: pstats.Stats | None = None
        used, skipped = [], []
        for name, prof, thread in self.profiles:
            if thread is not None and thread.is_alive():
                skipped.append(name)  # reading a live thread's profiler is unsafe
                continue
            used.append(name)
            if stats is None:
                stats = pstats.Stats(prof, stream=io.StringIO())
            else:
                stats.add(prof)
        assert stats is not None
        out = io.StringIO()
        out.write(f"threads profiled: {', '.join(used)}\n")
        if skipped:
            out.write(f"threads still running at close, not included: {', '.join(skipped)}\n")
        stats.stream = out  # type: ignore[attr-defined]
        out.write("\n== top 25 by cumulative time ==\n")
        stats.sort_stats("cumulative").print_stats(25)
        out.write("\n== top 25 by total (own) time ==\n")
        stats.sort_stats("tottime").print_stats(25)
        out.write("\n== own time as a share of the profiled time ==\n")
        total = stats.total_tt or 1.0  # type: ignore[attr-defined]
        entries = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)  # type: ignore[attr-defined]
        for (filename, line, func), (_cc, calls, tottime, cumtime, _callers) in entries[:15]:
            where = f"{os.path.basename(filename)}:{line}({func})" if line else func
            out.write(
                f"  {100 * tottime / total:5.1f}% own  {100 * cumtime / total:5.1f}% cum"
                f"  {calls:>9}  {where}\n"
            )
        return out.getvalue()


def run_child(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench.storage_child")
    parser.add_argument("--engine", required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--num", type=int, required=True)
    parser.add_argument("--reads", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--synced", action="store_true")
    parser.add_argument("--sync-seconds", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--options", default="{}")
    parser.add_argument("--profile-threads-from-open", action="store_true")
    args = parser.parse_args(argv)

    # The protocol owns the real stdout; stray prints from engines go to stderr.
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def send(message: dict[str, Any]) -> None:
        proto.write(json.dumps(message, default=repr) + "\n")
        proto.flush()

    child = Child(args)
    rss_base = current_rss_bytes()
    if args.profile_threads_from_open:  # the engine's background threads start at open
        child.profile_new_threads()
    try:
        t0 = time.perf_counter()
        child.adapter = open_adapter(
            args.engine, args.path, synced=args.synced, options=json.loads(args.options)
        )
        open_s = time.perf_counter() - t0
    except EngineUnavailable as exc:
        send({"ok": False, "error": str(exc)})
        return 2
    except Exception as exc:
        send({"ok": False, "error": f"open failed: {exc!r}", "trace": traceback.format_exc()})
        return 2
    hello = {"describe": child.adapter.describe(), "rss_base_bytes": rss_base, "open_s": open_s}
    send({"ok": True, "hello": hello})

    for line in sys.stdin:
        command = json.loads(line)
        if command["cmd"] == "exit":
            t0 = time.perf_counter()
            try:
                child.adapter.close()
            except Exception as exc:
                send({"ok": False, "error": f"close failed: {exc!r}"})
                return 1
            send(
                {
                    "ok": True,
                    "closed": {
                        "close_s": time.perf_counter() - t0,
                        "peak_rss_bytes": peak_rss_bytes(),
                        "profile": child.profile_report(),
                    },
                }
            )
            return 0
        workload = command["workload"]
        before_cpu = CpuTimes.now()
        load_before = loadavg()
        wall0 = time.perf_counter()
        try:
            if command.get("profile"):
                result = child.profiled(lambda w=workload: child.run(w))
            else:
                result = child.run(workload)
        except Exception as exc:
            send(
                {
                    "ok": False,
                    "error": f"{workload} failed: {exc!r}",
                    "trace": traceback.format_exc(),
                }
            )
            continue
        result.update(CpuTimes.now().since(before_cpu))
        result.update(
            {
                "wall_s": round(time.perf_counter() - wall0, 6),
                "loadavg_before": load_before,
                "loadavg_after": loadavg(),
                "peak_rss_bytes": peak_rss_bytes(),
                "ru_maxrss_bytes": ru_maxrss_bytes(),
                "rss_bytes": current_rss_bytes(),
                "engine_stats": child.adapter.stats(),
            }
        )
        send({"ok": True, "result": result})
    return 0


if __name__ == "__main__":
    sys.exit(run_child(sys.argv[1:]))
