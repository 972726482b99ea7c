"""The phi accrual failure detector (Hayashibara, Défago, Yared, Katayama 2004), Cassandra's way.

Theory of operation

- A detector does not answer "up or down": it gives a suspicion level `phi` that grows
  with the time since the last heartbeat, scaled by how often heartbeats usually arrive.
  The caller picks the threshold (Hayashibara §3: phi = -log10(P_later(t))).
- Heartbeats here are gossip arrivals: a node's heartbeat counter rising in a gossip
  message we merged counts as one arrival, whichever peer relayed it.
- Cassandra's model (FailureDetector.java, ArrivalWindow): inter-arrival times are taken as
  exponentially distributed with the window's mean, so P_later(t) = e^(-t/mean) and
  `phi = (t / mean) * log10(e)`. A node is convicted when phi exceeds the threshold
  (Cassandra's default 8): that is after about 18.4 mean intervals of silence. Unlike the
  paper's normal model, this one cannot become over-confident when arrivals are very
  regular (a tiny variance would convict on the first late heartbeat): the right choice on
  a busy machine whose event loops stall now and then.
- The window keeps the last `window` intervals (Cassandra: 1000). An interval longer than
  `max_interval_s` is not recorded (a node that was down, or a stall, must not teach the
  detector that silence is normal); until the first interval arrives the mean is
  `initial_interval_s`.
- Floor on the mean (ours, not Cassandra's): a node's heartbeat rises once per gossip
  round, so arrivals cannot on average come faster than its rounds; but a few early
  arrivals relayed by different peers a millisecond apart can make a young window's mean
  tiny, and then a tenth of a second of silence convicts. `min_mean_s` (membership sets
  half the gossip interval) bounds how sure of itself a window may get.
- Local pauses (Cassandra's MAX_LOCAL_PAUSE check): when the observer itself was stalled
  (its own loop ran late), silence it saw says nothing about the others. `forgive(now)`
  counts as a heartbeat from everyone at `now`, so nobody is convicted for our pause; a node
  that really died is convicted one timeout later.
- Pure: time is a float of seconds passed in by the caller (the monotonic clock); the
  detector never reads a clock, sleeps or does I/O.

Tuning used by kvstore.membership: every node beats and gossips every 0.1 s, so on
loopback a live node's heartbeats arrive about every 0.1 s and a dead one is convicted at
threshold 8 after about 18.4 x 0.1 = 1.8 s of silence (never under 18.4 x min_mean_s =
0.9 s), with the pause guard against our own event-loop stalls under CI load.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

PHI_FACTOR = 1.0 / math.log(10.0)  # log10(e): phi = PHI_FACTOR * t / mean (Cassandra)


@dataclass(frozen=True, slots=True)
class DetectorConfig:
    threshold: float = 8.0  # Cassandra's phi_convict_threshold
    window: int = 1000  # intervals kept per node (Cassandra's SAMPLE_SIZE)
    initial_interval_s: float = 0.5  # the mean before any interval is known
    max_interval_s: float = 2.0  # longer gaps are not learnt from (Cassandra: 2 s)
    min_mean_s: float = 0.0  # the mean interval is never taken below this (see above)

    def __post_init__(self) -> None:
        if not self.threshold > 0:
            raise ValueError(f"threshold must be positive: {self.threshold!r}")
        if type(self.window) is not int or self.window < 1:
            raise ValueError(f"window must be a positive int: {self.window!r}")
        if not 0 < self.initial_interval_s <= self.max_interval_s:
            raise ValueError("need 0 < initial_interval_s <= max_interval_s")


class _ArrivalWindow:
    """The last heartbeat time and recent inter-arrival intervals of one node."""

    __slots__ = ("intervals", "last", "total")

    def __init__(self, now: float, window: int) -> None:
        self.last = now
        self.intervals: deque[float] = deque(maxlen=window)
        self.total = 0.0  # Invariant: total == sum(intervals)

    def add(self, now: float, max_interval: float) -> None:
        gap = now - self.last
        if gap < 0:
            return  # a time from the past (callers pass a monotonic clock): ignore it
        self.last = now
        if gap <= max_interval:
            if len(self.intervals) == self.intervals.maxlen:
                self.total -= self.intervals[0]
            self.intervals.append(gap)
            self.total += gap

    def mean(self, initial: float) -> float:
        if not self.intervals:
            return initial
        # Keep the mean positive: two arrivals in one clock tick give a zero interval.
        return max(self.total / len(self.intervals), 1e-6)


class PhiAccrualDetector:
    """Suspicion levels for a set of nodes, from heartbeat arrival times. O(1) per call."""

    def __init__(self, config: DetectorConfig | None = None) -> None:
        self.config = config or DetectorConfig()
        self._windows: dict[str, _ArrivalWindow] = {}

    def heartbeat(self, node: str, now: float) -> None:
        """Record that a heartbeat of `node` arrived at `now` (starts tracking it)."""
        w = self._windows.get(node)
        if w is None:
            self._windows[node] = _ArrivalWindow(now, self.config.window)
        else:
            w.add(now, self.config.max_interval_s)

    def phi(self, node: str, now: float) -> float:
        """The suspicion level of `node` at `now`; 0.0 for a node never heard of."""
        w = self._windows.get(node)
        if w is None:
            return 0.0
        silence = max(0.0, now - w.last)
        mean = max(w.mean(self.config.initial_interval_s), self.config.min_mean_s)
        return PHI_FACTOR * silence / mean

    def is_available(self, node: str, now: float) -> bool:
        """True unless phi(node, now) exceeds the threshold."""
        return self.phi(node, now) <= self.config.threshold

    def mean_interval(self, node: str) -> float | None:
        w = self._windows.get(node)
        return None if w is None else w.mean(self.config.initial_interval_s)

    def forgive(self, now: float) -> None:
        """The observer was paused: restart every node's silence at `now` (learns nothing)."""
        for w in self._windows.values():
            w.last = max(w.last, now)

    def forget(self, node: str) -> None:
        """Stop tracking `node` (it left the cluster)."""
        self._windows.pop(node, None)

    def tracked(self) -> set[str]:
        return set(self._windows)


class Liveness:
    """Up/down verdicts for a set of monitored nodes, from a detector (pure; time passed in).

    A node is up from when it is first monitored (its silence counts from then) until the
    detector convicts it at a `judge`, and up again at its next heartbeat. Verdicts change
    only in `judge` and `arrival`, so a reader between them sees a stable answer.
    """

    def __init__(self, config: DetectorConfig | None = None) -> None:
        self.detector = PhiAccrualDetector(config)
        self.up: set[str] = set()

    def monitor(self, nodes: set[str], now: float) -> None:
        """Monitor exactly `nodes`: start the new ones (as up), forget the others."""
        for node in nodes - self.detector.tracked():
            self.detector.heartbeat(node, now)
            self.up.add(node)
        for node in self.detector.tracked() - nodes:
            self.detector.forget(node)
            self.up.discard(node)

    def arrival(self, node: str, now: float) -> bool:
        """A heartbeat of `node` arrived; True if that brings it back up."""
        if node not in self.detector.tracked():
            return False
        self.detector.heartbeat(node, now)
        if node in self.up:
            return False
        self.up.add(node)
        return True

    def judge(self, now: float) -> list[str]:
        """Convict the up nodes whose phi passed the threshold; the newly down, sorted."""
        down = sorted(n for n in self.up if not self.detector.is_available(n, now))
        self.up.difference_update(down)
        return down
