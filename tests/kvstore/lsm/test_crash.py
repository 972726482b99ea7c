"""Crash safety (DESIGN.md "Promises: Storage"): after kill -9 at any moment the engine
reopens with every acknowledged synced write, and every batch is all or nothing.

Two ways to crash: a real child process killed with SIGKILL at random moments (the OS
keeps what was written, so this proves recovery of the log, manifest and tables as a
process crash leaves them), and FaultInjectionFileSystem, which drops everything not
fsynced at a chosen file-system step of a flush or a compaction (a power loss)."""

from __future__ import annotations

import contextlib
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kvstore.lsm import Engine, StorageError, WriteBatch
from kvstore.lsm.filesystem import FaultInjectionFileSystem

from .crash_child import value_for

ROOT = Path(__file__).resolve().parents[3]
BATCH_KEY = re.compile(rb"^(\d+)b(\d+)\.(\d+)of(\d+)$")


def check_batches(contents: dict[bytes, bytes]) -> None:
    """Every batch present is present whole, with the right values."""
    groups: dict[tuple[bytes, bytes], set[int]] = {}
    sizes: dict[tuple[bytes, bytes], int] = {}
    for key, value in contents.items():
        assert value == value_for(key), key
        m = BATCH_KEY.match(key)
        if m:
            ident = (m.group(1), m.group(2))
            groups.setdefault(ident, set()).add(int(m.group(3)))
            sizes[ident] = int(m.group(4))
    for ident, members in groups.items():
        assert members == set(range(sizes[ident])), f"batch {ident} is half-present"


def test_sigkill_at_random_moments_loses_no_acknowledged_write(tmp_path: Path) -> None:
    folder = tmp_path / "db"
    present: set[bytes] = set()  # acknowledged puts not deleted since
    deleted: set[bytes] = set()  # acknowledged deletes
    whole_batches: list[tuple[int, int, int]] = []
    rounds = 50
    rng = random.Random(20261123)
    for round_ in range(rounds):
        seed = rng.randrange(2**32)
        child = subprocess.Popen(
            [sys.executable, "-m", "tests.kvstore.lsm.crash_child", str(folder), str(seed),
             str(round_)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        try:
            assert child.stdout is not None
            first = child.stdout.readline()
            assert first == b"ready\n", (first, child.stderr.read() if child.stderr else b"")
            time.sleep(rng.uniform(0.0, 0.25))
        finally:
            child.send_signal(signal.SIGKILL)
            out, err = child.communicate()
        assert child.returncode == -signal.SIGKILL, err.decode()
        for line in out.splitlines():
            parts = line.split(b" ")
            if parts[0] == b"P" and len(parts) == 2:
                present.add(parts[1])
            elif parts[0] == b"d" and len(parts) == 2:  # unacknowledged delete: unknown
                present.discard(parts[1])
            elif parts[0] == b"D" and len(parts) == 2:
                present.discard(parts[1])
                deleted.add(parts[1])
            elif parts[0] == b"B" and len(parts) == 3:
                whole_batches.append((round_, int(parts[1]), int(parts[2])))
        with Engine.open(str(folder), sync="always") as db:
            contents = dict(db.scan())
        missing = [k for k in present if k not in contents]
        assert not missing, f"round {round_} (seed {seed}) lost acknowledged puts {missing[:5]}"
        resurrected = [k for k in deleted if k in contents]
        assert not resurrected, f"round {round_}: deleted keys came back {resurrected[:5]}"
        for r, n, size in whole_batches:
            for j in range(size):
                assert b"%db%d.%dof%d" % (r, n, j, size) in contents, (r, n, size)
        check_batches(contents)
    assert len(present) > 50 and whole_batches  # the children really wrote


# -- power loss at chosen file-system steps of flushes and compactions ---------------------

TINY = {
    "memtable_bytes": 2 * 1024,
    "memtable_entry_overhead": 32,
    "table_file_bytes": 1024,
    "level1_bytes": 2 * 1024,
    "level_size_ratio": 2,
    "l0_compaction_trigger": 2,
    "block_size": 128,
}


class PowerCut(OSError):
    pass


class CrashAtStep(FaultInjectionFileSystem):
    """Counts the durable-state steps (create, sync, sync_dir, rename, remove) made by
    threads whose name starts with `thread_prefix`; at step number `crash_at` the power
    goes: everything not yet durable is dropped and every later step fails."""

    def __init__(self, thread_prefix: str, crash_at: int) -> None:
        super().__init__()
        self.thread_prefix = thread_prefix
        self.crash_at = crash_at
        self.steps = 0
        self.dead = False
        self.crashed_in = ""
        self._step_lock = threading.Lock()

    def _step(self) -> None:
        with self._step_lock:
            if self.dead:
                raise PowerCut(5, "power is off")
            if not threading.current_thread().name.startswith(self.thread_prefix):
                return
            if self.steps == self.crash_at:
                self.dead = True
                self.crashed_in = threading.current_thread().name
                self.crash()
                raise PowerCut(5, "power cut")
            self.steps += 1

    def open_writable(self, path):
        self._step()
        return super().open_writable(path)

    def rename(self, src, dst):
        self._step()
        super().rename(src, dst)

    def remove(self, path):
        self._step()
        super().remove(path)

    def sync_dir(self, d):
        self._step()
        super().sync_dir(d)

    def _synced_to(self, node, size):
        self._step()  # a cut here drops the bytes this sync would have made durable
        super()._synced_to(node, size)


def run_until_power_cut(folder: Path, fs: CrashAtStep) -> tuple[list[list[bytes]], int]:
    """Write batches of 3 keys with sync="always" until a write fails; returns the
    batches written (acknowledged ones first) and how many were acknowledged."""
    batches: list[list[bytes]] = []
    acked = 0
    try:
        db = Engine.open(str(folder), sync="always", fs=fs, **TINY)
    except OSError:
        return batches, 0
    try:
        for n in range(90):
            keys = [b"%03db%d.%dof3" % (n, n, j) for j in range(3)]
            batches.append(keys)
            batch = WriteBatch()
            for k in keys:
                batch.put(k, value_for(k))
            db.write(batch)
            acked += 1
            if n % 30 == 29:
                db.compact_range()
    except (OSError, StorageError):
        pass  # the power cut itself, or the engine refusing writes after a failed one
    finally:
        with contextlib.suppress(Exception):
            db.close()
    return batches, acked


# Steps per thread in one run of the workload: about 60 in the flush thread, 15 in the
# compaction thread, 200 in the main thread (log syncs, memtable switches, compact_range).
CUTS = ([("lsm-flush", n) for n in range(0, 60, 3)]
        + [("lsm-compact", n) for n in range(18)]
        + [("MainThread", n) for n in range(1, 200, 12)])


@pytest.mark.parametrize(("thread", "crash_at"), CUTS)
def test_power_cut_during_flush_or_compaction_reopens_consistently(
        tmp_path: Path, thread: str, crash_at: int) -> None:
    fs = CrashAtStep(thread, crash_at)
    batches, acked = run_until_power_cut(tmp_path, fs)
    if not fs.dead:
        fs.crash()  # the run ended before step `crash_at`: cut the power at the end
    with Engine.open(str(tmp_path), sync="always", **TINY) as db:
        contents = dict(db.scan())
        db.check()
    for n in range(acked):
        for k in batches[n]:
            assert k in contents, f"acknowledged batch {n} lost (cut in {fs.crashed_in})"
    check_batches(contents)
    assert set(contents) <= {k for b in batches for k in b}


WORKER_CHILD = """
import sys, time
from kvstore.lsm import Engine
db = Engine.open(sys.argv[1], sync="none", memtable_bytes=4096, table_file_bytes=2048,
                 compaction_process=True)
for i in range(3000):
    db.put(b"k%06d" % i, b"v" * 20)
db.compact_range()
print(" ".join(str(pid) for pid in db._executor._processes), flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return not any(line.startswith("State:") and "Z" in line for line in f)
    except FileNotFoundError:
        return False


def test_the_compaction_worker_does_not_outlive_a_killed_engine(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", WORKER_CHILD, str(tmp_path)],
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        pids = [int(p) for p in line.split()]
        assert pids, child.stderr.read() if child.stderr else b""
        assert all(_alive(pid) for pid in pids)
    finally:
        child.send_signal(signal.SIGKILL)
        child.communicate()
    for _ in range(300):  # the worker's watchdog polls every 0.2 s
        if not any(_alive(pid) for pid in pids):
            break
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in pids), f"worker {pids} outlived its engine"
    with Engine.open(str(tmp_path), sync="none") as db:  # and the folder reopens whole
        assert len(list(db.scan())) == 3000


UNGUARDED_SCRIPT = """
import sys
from kvstore.lsm import Engine
# No `if __name__ == "__main__"` guard: a spawned worker re-runs this file and fails.
db = Engine.open(sys.argv[1], sync="none", memtable_bytes=4096, table_file_bytes=2048,
                 compaction_process=True)
for i in range(2000):
    db.put(b"k%06d" % i, b"v" * 20)
db.compact_range()
assert len(list(db.scan())) == 2000
assert db._process_failed
db.close()
print("done")
"""


def test_a_script_without_main_guard_falls_back_to_thread_compaction(tmp_path) -> None:
    script = tmp_path / "unguarded.py"
    script.write_text(UNGUARDED_SCRIPT)
    out = subprocess.run([sys.executable, str(script), str(tmp_path / "db")], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("done")
    assert "compacting in a thread from now on" in out.stderr
