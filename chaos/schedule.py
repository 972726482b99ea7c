"""When faults happen: a seeded plan of fault windows and quiet windows, ending in a heal.

Theory of operation (Jepsen's generators on an explicit model of time). A run of `duration`
seconds alternates a quiet window and a fault window, each of a random length around the
configured means, until the time is used; the fault of each window is drawn from the
nemeses the user asked for, round robin after a seeded shuffle so that every nemesis gets
its turn even in a short run. After the last window come the final heal (every fault
lifted, every paused or killed node resumed or restarted) and a recovery period in which
the workload goes on and is checked like the rest. Everything is a pure function of the
seed, so a failing run replays; targets (which node, which leader) are chosen by the
nemesis at the window's start, because they depend on the cluster's state then.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

NEMESES = ("partition", "kill", "pause", "clock", "loss", "delay", "torn-tail")


@dataclass(frozen=True, slots=True)
class Window:
    start: float  # seconds from the start of the run
    end: float
    fault: str | None  # None: a quiet window


@dataclass(frozen=True, slots=True)
class Plan:
    windows: tuple[Window, ...]
    heal_at: float  # every fault lifted
    end: float  # end of the recovery period: the run stops

    def fault_at(self, t: float) -> str | None:
        for w in self.windows:
            if w.start <= t < w.end:
                return w.fault
        return None


def plan(nemeses: list[str], duration: float, *, seed: int, fault_s: float = 10.0,
         quiet_s: float = 5.0, recovery_s: float = 10.0) -> Plan:
    """Windows for a run of `duration` seconds plus `recovery_s` after the final heal."""
    unknown = sorted(set(nemeses) - set(NEMESES))
    if unknown:
        raise ValueError(f"unknown nemesis {', '.join(unknown)}; known: {', '.join(NEMESES)}")
    if duration <= 0 or fault_s <= 0 or quiet_s <= 0 or recovery_s < 0:
        raise ValueError("durations must be positive (recovery may be 0)")
    rng = random.Random(seed)
    order = rng.sample(nemeses, len(nemeses)) if nemeses else []
    windows: list[Window] = []
    t, i = 0.0, 0
    if not order:
        return Plan((Window(0.0, duration, None),), duration, duration + recovery_s)
    while t < duration:
        quiet = min(duration, t + quiet_s * rng.uniform(0.5, 1.5))
        windows.append(Window(t, quiet, None))
        t = quiet
        if t >= duration:
            continue
        end = min(duration, t + fault_s * rng.uniform(0.5, 1.5))
        windows.append(Window(t, end, order[i % len(order)]))
        i += 1
        t = end
    return Plan(tuple(windows), duration, duration + recovery_s)
