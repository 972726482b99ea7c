"""The nemesis: turns a fault window of the plan into actions on the cluster and network.

Each `begin(kind)` picks its targets with the run's seeded `random.Random` (and, for
"isolate the leader", the lock service's leader at that moment), applies the fault and
returns one line for the history's annotations and the progress display; `end()` undoes
the fault in progress and returns its line too. `heal_all()` is the final heal: every link
restored, every paused node resumed, every stopped node started, every skewed clock set
back, whatever happened before (it is also safe after a crash of the harness's own logic).

Faults that take one node down never take more than one at a time, so a cluster of 3 or
more always keeps a majority of the lock service and W=2 of the store's replicas, and the
checkers' verdicts are about the promises, not about an impossible availability.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Protocol

from chaos import grudge as g
from chaos.cluster import ChaosCluster, Node

logger = logging.getLogger(__name__)

MAX_SKEW_S = 30.0


class Network(Protocol):
    def drop(self, links: list[tuple[str, str]], probability: float = 1.0) -> None: ...

    def delay(self, links: list[tuple[str, str]], delay_s: float) -> None: ...

    def heal(self) -> None: ...


class Nemesis:
    def __init__(self, cluster: ChaosCluster, network: Network, rng: random.Random) -> None:
        self.cluster, self.network, self.rng = cluster, network, rng
        self._undo: Callable[[], str] | None = None

    @property
    def hosts(self) -> list[str]:
        return [n.host for n in self.cluster.nodes]

    def begin(self, kind: str) -> str:
        """Start a fault of `kind` (see chaos/schedule.NEMESES); a line saying what it did."""
        if self._undo is not None:
            self.end()
        action = getattr(self, "_" + kind.replace("-", "_"), None)
        if action is None:
            raise ValueError(f"unknown nemesis {kind!r}")
        line = action()
        logger.info("nemesis: %s", line)
        return line

    def end(self) -> str:
        """Undo the fault in progress (nothing if none)."""
        undo, self._undo = self._undo, None
        line = undo() if undo else "quiet"
        logger.info("nemesis: %s", line)
        return line

    def heal_all(self) -> str:
        self._undo = None
        self.network.heal()
        for n in self.cluster.nodes:
            self.cluster.resume(n)
            if n.skew_s or not n.running:
                self.cluster.restart(n, skew_s=0.0)
        self.cluster.wait_healthy(self.cluster.nodes)
        return "healed: links restored, every node running, clocks true"

    def _pick(self) -> Node:
        return self.rng.choice(self.cluster.nodes)

    # -- the faults ------------------------------------------------------------------------

    def _partition(self) -> str:
        shapes = ["halves", "isolate", "isolate-leader", "bridge"]
        if len(self.hosts) >= 4:
            shapes.append("majorities-ring")
        shape = self.rng.choice(shapes)
        if shape == "halves":
            grudge = g.halves(self.hosts, self.rng)
        elif shape == "bridge":
            grudge = g.bridge(self.hosts, self.rng)
        elif shape == "majorities-ring":
            grudge = g.majorities_ring(self.hosts, self.rng)
        else:
            leader = self.cluster.lock_leader() if shape == "isolate-leader" else None
            target = leader or self._pick()
            grudge = g.isolate(self.hosts, target.host)
        self.network.drop(g.dropped_links(grudge))
        self._undo = self._heal_network
        return f"partition {shape}: {g.describe(grudge)}"

    def _heal_network(self) -> str:
        self.network.heal()
        return "partition healed"

    def _loss(self) -> str:
        probability = self.rng.choice([0.1, 0.3, 0.5])
        a, b = self.rng.sample(self.hosts, 2)
        self.network.drop([(a, b), (b, a)], probability)
        self._undo = self._heal_network
        return f"lossy link {a}<->{b}: {probability:.0%} of packets lost"

    def _kill(self) -> str:
        node = self._pick()
        self.cluster.kill(node)

        def undo() -> str:
            self.cluster.restart(node)
            return f"restarted {node.name}"

        self._undo = undo
        return f"SIGKILL {node.name}"

    def _torn_tail(self) -> str:
        node = self._pick()
        self.cluster.kill(node)
        torn = self.cluster.tear_tail(node, self.rng)

        def undo() -> str:
            self.cluster.restart(node)
            return f"restarted {node.name} on its torn logs"

        self._undo = undo
        return f"SIGKILL {node.name} and tear its log tails: {'; '.join(torn) or 'no logs'}"

    def _pause(self) -> str:
        node = self._pick()
        self.cluster.pause(node)

        def undo() -> str:
            self.cluster.resume(node)
            return f"SIGCONT {node.name}"

        self._undo = undo
        return f"SIGSTOP {node.name}"

    def _clock(self) -> str:
        node = self._pick()
        skew = round(self.rng.uniform(1.0, MAX_SKEW_S) * self.rng.choice([-1, 1]), 1)
        self.cluster.restart(node, skew_s=skew)

        def undo() -> str:
            self.cluster.restart(node, skew_s=0.0)
            return f"clock of {node.name} set right"

        self._undo = undo
        return f"clock of {node.name} skewed by {skew:+.1f} s (restarted under libfaketime)"

    def _delay(self) -> str:
        node = self._pick()
        delay_s = self.rng.choice([0.05, 0.2, 0.5])
        others = [h for h in self.hosts if h != node.host]
        self.network.delay([(node.host, h) for h in others] + [(h, node.host) for h in others],
                           delay_s)
        self._undo = self._heal_network
        return f"slow links: every link of {node.name} delayed {delay_s * 1000:.0f} ms each way"
