"""The Raft safety properties, checked incrementally on a simulated cluster (tests/raft/sim.py)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from raft import Entry, Role

if TYPE_CHECKING:
    from tests.raft.sim import SimNode


class Checker:
    """Raft's safety properties (Figure 3), checked incrementally so every step can afford it.

    - Election safety: at most one leader per term.
    - Log matching: an entry with a given (index, term) has the same data and the same
      preceding term on every node that persists it; by induction logs that share an entry
      share the whole prefix.
    - Leader completeness: a node that becomes leader of term T holds every entry that was
      committed in a term before T. An entry's commit term is seen exactly when a leader's
      commit index passes it, and bounded above by the term of any node applying it.
    - State machine safety: every node applies the same entry at each index, and its state
      digest after index i is the same everywhere.
    - ReadIndex: a read's index is >= every commit index known anywhere when it was asked.
    - `RaftCore.check()` (the log's applied <= committed <= last, progress match < next).
    """

    def __init__(self) -> None:
        self.leaders: dict[int, int] = {}
        self.committed: dict[int, tuple[int, int]] = {}  # index -> (entry term, commit term)
        self.leader_commit_seen: dict[int, int] = {}
        self.entries: dict[tuple[int, int], tuple[bytes, int, int | None]] = {}
        self.applied: dict[int, tuple[int, bytes]] = {}
        self.digests: dict[int, int] = {}
        self.reads: dict[bytes, int] = {}
        self.released: dict[bytes, int] = {}

    def after_step(self, node: SimNode) -> None:
        core = node.core
        core.check()
        if core.role == Role.LEADER:
            holder = self.leaders.setdefault(core.term, node.id)
            if holder != node.id:
                raise AssertionError(f"two leaders in term {core.term}: {holder} and {node.id}")
            seen = self.leader_commit_seen.get(node.id, 0)
            if core.committed > seen:
                for i in range(max(seen + 1, core.log.first_index), core.committed + 1):
                    self._committed_in(i, core.log.term(i) or 0, core.term)
                self.leader_commit_seen[node.id] = core.committed

    def _committed_in(self, index: int, entry_term: int, term: int) -> None:
        old = self.committed.get(index)
        if old is None:
            self.committed[index] = (entry_term, term)
            return
        assert old[0] == entry_term, f"committed entry {index} has terms {old[0]}, {entry_term}"
        if term < old[1]:
            self.committed[index] = (entry_term, term)

    def became_leader(self, node: SimNode) -> None:
        log, term = node.core.log, node.core.term
        for index, (entry_term, commit_term) in self.committed.items():
            if index > log.snap_index and commit_term < term:
                got = log.term(index)
                assert got == entry_term, (
                    f"leader {node.id} (term {term}) lacks entry {index}/{entry_term} "
                    f"committed in term {commit_term}, has term {got}"
                )

    def persisted(self, node: SimNode, entries: Iterable[Entry]) -> None:
        log = node.core.log
        for e in entries:
            prev = log.term(e.index - 1)
            seen = self.entries.setdefault((e.index, e.term), (e.data, e.type, prev))
            assert seen[0] == e.data and seen[1] == e.type, (
                f"two different entries at {e.index}/{e.term}"
            )
            if prev is not None and seen[2] is not None:
                assert seen[2] == prev, (
                    f"log matching: entry {e.index}/{e.term} follows term {prev} on node "
                    f"{node.id}, term {seen[2]} elsewhere"
                )

    def applied_entry(self, node: SimNode, e: Entry) -> None:
        seen = self.applied.setdefault(e.index, (e.term, e.data))
        assert seen == (e.term, e.data), (
            f"node {node.id} applied {e.index}/{e.term} {e.data!r}, others {seen}"
        )
        self._committed_in(e.index, e.term, node.core.term)
        self.state(node)

    def state(self, node: SimNode) -> None:
        d = self.digests.setdefault(node.sm.applied, node.sm.digest)
        assert d == node.sm.digest, f"node {node.id} state differs at {node.sm.applied}"

    def read_asked(self, context: bytes, committed: int) -> None:
        self.reads[context] = committed

    def read_released(self, node: SimNode, context: bytes, index: int) -> None:
        asked = self.reads.get(context)
        assert asked is not None, f"read state for unknown context {context!r}"
        assert index >= asked, (
            f"stale read {context!r} on node {node.id}: index {index} < {asked} committed "
            "when it was asked"
        )
        self.released[context] = index
