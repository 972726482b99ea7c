"""Measurement helpers shared by the benchmarks: load, CPU, memory, child rusage, formatting.

Everything here reads the real machine (`/proc`, `os.getloadavg`, `os.wait4`); nothing is
simulated. Figures on the shared 2-core machines move a lot from run to run, so every
benchmark records the load average and CPU times beside its figures.
"""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import time
from dataclasses import dataclass

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
MIB = 1024 * 1024


def loadavg() -> tuple[float, float, float]:
    """The 1, 5 and 15 minute load averages."""
    return os.getloadavg()


def machine() -> dict[str, object]:
    """What the figures were measured on."""
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "loadavg": loadavg(),
    }


def busy_note(load1: float) -> str:
    """Say plainly when the machine was busy (other engineers' tests share the cores)."""
    cpus = os.cpu_count() or 1
    if load1 >= cpus:
        return f"BUSY: load {load1:.2f} on {cpus} cores; absolute figures are depressed"
    if load1 >= cpus / 2:
        return f"partly busy: load {load1:.2f} on {cpus} cores"
    return f"quiet: load {load1:.2f} on {cpus} cores"


@dataclass(frozen=True)
class CpuTimes:
    """At one instant: process CPU seconds (all threads), this thread's CPU seconds, and
    the CPU seconds of its child processes (reaped ones plus live descendants)."""

    user: float
    system: float
    thread: float
    children: float

    @classmethod
    def now(cls) -> CpuTimes:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
        live = tree_cpu_seconds(os.getpid()) - process_cpu_seconds(os.getpid())
        children = reaped.ru_utime + reaped.ru_stime + live
        return cls(usage.ru_utime, usage.ru_stime, time.thread_time(), children)

    def since(self, earlier: CpuTimes) -> dict[str, float]:
        return {
            "cpu_user_s": round(self.user - earlier.user, 4),
            "cpu_sys_s": round(self.system - earlier.system, 4),
            "cpu_main_thread_s": round(self.thread - earlier.thread, 4),
            "cpu_children_s": round(max(0.0, self.children - earlier.children), 4),
        }


def peak_rss_bytes() -> int:
    """This process's own peak resident set size so far (VmHWM of its address space).

    Not `ru_maxrss`: Linux carries the parent's high-water mark into a child across
    fork + exec, so a child's ru_maxrss is never below its parent's peak (see
    `ru_maxrss_bytes`). VmHWM belongs to the address space created by exec.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return ru_maxrss_bytes()


def ru_maxrss_bytes() -> int:
    """getrusage(RUSAGE_SELF).ru_maxrss in bytes (KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def current_rss_bytes() -> int:
    """This process's resident set size now."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE_SIZE


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds consumed so far by process `pid` (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        data = f.read()
    # The command name (field 2) may contain spaces; fields after it are plain numbers.
    fields = data[data.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def descendants(pid: int) -> list[int]:
    """The live descendants of `pid` (children, grandchildren, ...), from /proc."""
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            tids = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{parent}/task/{tid}/children") as f:
                    kids = [int(k) for k in f.read().split()]
            except OSError:
                continue
            found += kids
            todo += kids
    return found


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of `pid` plus its live descendants (e.g. an engine's worker processes)."""
    total = 0.0
    for p in [pid, *descendants(pid)]:
        with contextlib.suppress(OSError):  # it may have exited meanwhile
            total += process_cpu_seconds(p)
    return total


def wait_idle(pid: int, max_seconds: float, *, window: float = 0.5, busy: float = 0.05) -> float:
    """Wait until `pid` and its descendants use under `busy` of a core over `window`
    seconds; return the seconds waited.

    Used between engines so that one engine's background flushes and compactions (in
    threads or worker processes) do not run while the next engine is being measured.
    Gives up after `max_seconds`.
    """
    start = time.monotonic()
    before = tree_cpu_seconds(pid)
    while time.monotonic() - start < max_seconds:
        time.sleep(window)
        after = tree_cpu_seconds(pid)
        if after - before < busy * window:
            break
        before = after
    return time.monotonic() - start


def directory_bytes(path: str) -> int:
    """Bytes the files under `path` occupy: apparent size, or allocated size if sparse."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.stat(os.path.join(root, name))
            except FileNotFoundError:
                continue
            total += min(st.st_size, st.st_blocks * 512)
    return total


def fsync_rate(directory: str, count: int = 100) -> float:
    """Raw 4 KiB write + fsync operations per second on the disk holding `directory`."""
    path = os.path.join(directory, "fsync-probe")
    block = b"\0" * 4096
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        start = time.perf_counter()
        for _ in range(count):
            os.write(fd, block)
            os.fsync(fd)
        elapsed = time.perf_counter() - start
    finally:
        os.close(fd)
        os.remove(path)
    return count / elapsed


def human(value: float | None) -> str:
    """Ops per second in a short form: 812, 23.4k, 1.23M."""
    if value is None:
        return "-"
    if value >= 1e6:
        return f"{value / 1e6:.2f}M"
    if value >= 1e4:
        return f"{value / 1e3:.1f}k"
    if value >= 1e3:
        return f"{value / 1e3:.2f}k"
    return f"{value:.0f}"


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either side is missing."""
    if a is None or b is None or b == 0:
        return None
    return a / b
