"""The client's view of its session lease (Chubby §2.8): healthy, jeopardy, lost.

Theory of operation. Pure: no clock, no I/O; every method takes `now` (seconds on the
client's monotonic clock) and the caller supplies it.

- The server's lease of a session ends at some instant E on the leader's clock. A
  KeepAlive (or OpenSession) sent at local time `sent_at` that comes back saying
  `lease_ms` remain was answered at some instant after `sent_at`, so E >= sent_at +
  lease_ms. The local lease ends a safety margin earlier, at
  `sent_at + lease_ms - margin`: the margin covers the two clocks running at different
  rates (Chubby's client makes the same conservative choice). Until the local lease
  ends, the server's lease has certainly not ended, so no other session can have been
  granted a lock this session holds.
- An answer may also say `held_ms`: the server had the request that long before answering
  (a long poll). The server's instant of answering is then at least `sent_at + held_ms`
  on our clock (less RATE_SLACK), so the local lease ends at
  `sent_at + held_ms + lease_ms - margin`: the round trip is budgeted, not the hold.
  `held_ms` counts for at most `now - sent_at` (a wrong one cannot stretch the lease past
  what the arrival time allows).
- NEW -> HEALTHY when the session is opened (`open`).
- HEALTHY -> JEOPARDY when the local lease ends without a renewal: from that instant the
  client must not act as a holder of anything (`holding_at(now)` is False).
- JEOPARDY -> HEALTHY when a renewal arrives whose local end is still in the future (a
  new leader, or the same one, confirmed the session: it kept its locks).
- JEOPARDY -> LOST when the grace period passes without such a renewal, or at any time
  when the server says the session is unknown or expired (`ended()`).
- LOST is final: a lost session's locks and ephemerals are gone (or will be, after the
  server's lease ends); the client opens a new session to go on.

Requires: `now` never decreases between calls (a monotonic clock); renewals are passed
with the `sent_at` of the request they answer, never the time the answer arrived.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

RATE_SLACK = 0.001  # the server's clock may run this much slower than ours


class LeaseState(enum.Enum):
    NEW = "new"  # not opened yet
    HEALTHY = "healthy"
    JEOPARDY = "jeopardy"
    LOST = "lost"


@dataclass(frozen=True, slots=True)
class Transition:
    old: LeaseState
    new: LeaseState
    at: float  # the local time the transition is due (<= the `now` that observed it)
    reason: str


class LocalLease:
    """One session's local lease; feed it renewals and the time, read the transitions."""

    def __init__(self, *, safety_margin_s: float, grace_s: float) -> None:
        if safety_margin_s < 0 or grace_s < 0:
            raise ValueError("safety margin and grace period are not negative")
        self.safety_margin_s = safety_margin_s
        self.grace_s = grace_s
        self.state = LeaseState.NEW
        self.expires_at = float("-inf")  # Invariant: the local end of the lease (seconds)
        # The latest the server's lease can end, as far as the answers tell: an answer that
        # arrived at `now` saying `lease_ms` was sent by the server at or before `now`.
        # Not a safety bound: it tells the client when a KeepAlive will be answered at once.
        self.server_end_at_most = float("-inf")

    @classmethod
    def for_ttl(cls, ttl_ms: int, *, safety_margin_ms: int | None = None,
                grace_ms: int | None = None) -> LocalLease:
        """Defaults: margin = a tenth of the TTL (at least 50 ms); grace = one TTL.

        The margin must stay below the TTL, or the local lease would end before it began.
        """
        if ttl_ms <= 0:
            raise ValueError("ttl_ms is positive")
        margin = max(ttl_ms // 10, 50) if safety_margin_ms is None else safety_margin_ms
        if not 0 <= margin < ttl_ms:
            raise ValueError(f"safety margin must be in 0..{ttl_ms - 1} ms for a {ttl_ms} ms TTL")
        grace = ttl_ms if grace_ms is None else grace_ms
        return cls(safety_margin_s=margin / 1000, grace_s=grace / 1000)

    # -- inputs ---------------------------------------------------------------------------

    def open(self, sent_at: float, lease_ms: int, now: float | None = None) -> Transition:
        """The session was created by a request sent at `sent_at` and answered at `now`
        (default: `sent_at`); `lease_ms` remained."""
        if self.state is not LeaseState.NEW:
            raise ValueError("a LocalLease is opened once; a new session needs a new lease")
        self.expires_at = self._local_end(sent_at, lease_ms)
        self._saw(sent_at if now is None else now, lease_ms)
        return self._move(LeaseState.HEALTHY, sent_at, "session opened")

    def renewed(self, sent_at: float, lease_ms: int, now: float,
                held_ms: int = 0) -> list[Transition]:
        """A KeepAlive sent at `sent_at` was answered at `now` with `lease_ms` remaining,
        after the server held it `held_ms`.

        Returns the transitions it causes (possibly none). A renewal never shortens the
        lease, and one arriving after LOST changes nothing (the loss is final).
        """
        if self.state is LeaseState.NEW:
            raise ValueError("renewal of a lease that was never opened")
        changes = self.poll(now)
        if self.state is LeaseState.LOST:
            return changes
        if held_ms < 0:
            raise ValueError("held_ms is not negative")
        held_s = min(held_ms / 1000 * (1 - RATE_SLACK), max(0.0, now - sent_at))
        self.expires_at = max(self.expires_at, self._local_end(sent_at + held_s, lease_ms))
        self._saw(now, lease_ms)
        if self.state is LeaseState.JEOPARDY and now < self.expires_at:
            changes.append(self._move(LeaseState.HEALTHY, now, "lease renewed"))
        return changes

    def ended(self, now: float, reason: str) -> list[Transition]:
        """The server says the session is unknown or its lease ended: lost at once."""
        changes = self.poll(now)
        if self.state is not LeaseState.LOST:
            changes.append(self._move(LeaseState.LOST, now, reason))  # NEW -> LOST too
        return changes

    def poll(self, now: float) -> list[Transition]:
        """Let time pass until `now`; returns the transitions that fell due, oldest first."""
        changes: list[Transition] = []
        if self.state is LeaseState.HEALTHY and now >= self.expires_at:
            changes.append(self._move(LeaseState.JEOPARDY, self.expires_at,
                                      "local lease ended without a renewal"))
        if self.state is LeaseState.JEOPARDY and now >= self.grace_ends_at:
            changes.append(self._move(LeaseState.LOST, self.grace_ends_at,
                                      "grace period ended without a renewal"))
        return changes

    # -- outputs --------------------------------------------------------------------------

    @property
    def grace_ends_at(self) -> float:
        return self.expires_at + self.grace_s

    def holding_at(self, now: float) -> bool:
        """Whether the client may act as holder of its locks at `now` (whatever poll said)."""
        return self.state is LeaseState.HEALTHY and now < self.expires_at

    def next_deadline(self) -> float | None:
        """The local time of the next transition that time alone causes; None when NEW or LOST."""
        if self.state is LeaseState.HEALTHY:
            return self.expires_at
        if self.state is LeaseState.JEOPARDY:
            return self.grace_ends_at
        return None

    def remaining(self, now: float) -> float:
        """Seconds of local lease left at `now` (0 when it ended)."""
        return max(0.0, self.expires_at - now)

    # -- internals ------------------------------------------------------------------------

    def _local_end(self, sent_at: float, lease_ms: int) -> float:
        if lease_ms < 0:
            raise ValueError("lease_ms is not negative")
        return sent_at + lease_ms / 1000 - self.safety_margin_s

    def _saw(self, answered_at: float, lease_ms: int) -> None:
        end = answered_at + lease_ms / 1000 * (1 + RATE_SLACK)
        self.server_end_at_most = max(self.server_end_at_most, end)

    def _move(self, new: LeaseState, at: float, reason: str) -> Transition:
        old, self.state = self.state, new
        return Transition(old, new, at, reason)


__all__ = ["LeaseState", "LocalLease", "Transition"]
