"""The leader's view of one follower's replication: match, next and flow control.

Theory of operation (after etcd's tracker). A follower's progress is in one of three states:

- PROBE: we do not know where its log matches ours. Send one APPEND at `next - 1` and wait
  (`probe_sent`) for the answer or a heartbeat response before probing again.
- REPLICATE: the logs match up to `match`; stream APPENDs optimistically, moving `next`
  past what is sent, with at most `max_inflight` unacknowledged messages (pipelining).
- SNAPSHOT: the entries it needs are compacted away; send InstallSnapshot chunks one at a
  time (stop-and-wait, acknowledged by byte offset) and nothing else until it is installed.

Invariant: match < next. `match` never decreases while we are leader: acks can be
duplicated, stale or reordered, so every update is a max().
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field

from raft.messages import SnapshotMeta


class ProgressState(enum.Enum):
    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


@dataclass(slots=True)
class Progress:
    match: int = 0
    next: int = 1
    state: ProgressState = ProgressState.PROBE
    probe_sent: bool = False
    recent_active: bool = False  # heard from since the last check-quorum round
    is_learner: bool = False
    # REPLICATE: last index of each unacknowledged APPEND, oldest first.
    inflight: deque[int] = field(default_factory=deque)
    # SNAPSHOT: the snapshot being sent and how many of its bytes the follower holds.
    pending_snapshot: SnapshotMeta | None = None
    snapshot_offset: int = 0

    def check(self) -> None:
        assert self.match < self.next, (self.match, self.next)

    def reset(self, next: int) -> None:
        """A new term: nothing is known about this follower any more."""
        self.match = 0
        self.next = next
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.recent_active = False
        self.inflight.clear()
        self.pending_snapshot = None
        self.snapshot_offset = 0

    def become_probe(self) -> None:
        if self.state == ProgressState.SNAPSHOT and self.pending_snapshot is not None:
            self.next = max(self.match + 1, self.pending_snapshot.index + 1)
        else:
            self.next = self.match + 1
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.inflight.clear()
        self.pending_snapshot = None

    def become_replicate(self) -> None:
        self.state = ProgressState.REPLICATE
        self.next = self.match + 1
        self.probe_sent = False
        self.inflight.clear()
        self.pending_snapshot = None

    def become_snapshot(self, meta: SnapshotMeta) -> None:
        self.state = ProgressState.SNAPSHOT
        self.inflight.clear()
        self.pending_snapshot = meta
        self.snapshot_offset = 0

    def is_paused(self, max_inflight: int) -> bool:
        if self.state == ProgressState.PROBE:
            return self.probe_sent
        if self.state == ProgressState.REPLICATE:
            return len(self.inflight) >= max_inflight
        return True

    def maybe_update(self, index: int) -> bool:
        """An ack up to index arrived. Returns whether match moved."""
        updated = False
        if index > self.match:
            self.match = index
            self.probe_sent = False
            updated = True
        self.next = max(self.next, index + 1)
        while self.inflight and self.inflight[0] <= index:
            self.inflight.popleft()
        return updated

    def sent(self, last: int) -> None:
        """An APPEND carrying entries up to `last` went out."""
        if self.state == ProgressState.REPLICATE:
            if last >= self.next:
                self.next = last + 1
                self.inflight.append(last)
        elif self.state == ProgressState.PROBE:
            self.probe_sent = True

    def maybe_decr_to(self, rejected: int, match_hint: int) -> bool:
        """A rejection of the APPEND at `rejected`; match_hint is where to try next.

        Returns False for stale rejections (already past, or not the probe in flight).
        """
        if self.state == ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), self.match + 1)
        self.probe_sent = False
        return True
