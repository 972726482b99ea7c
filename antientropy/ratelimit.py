"""A token bucket for background work (pure logic: the caller passes the time).

`reserve(amount, now)` takes `amount` tokens at once, going into debt if need be, and
answers how long the caller should wait before doing more (0 while tokens remain). A
rate of 0 means unlimited. Tokens accrue at `rate` per second up to `burst`.
"""

from __future__ import annotations


class TokenBucket:
    """`rate` tokens per second, at most `burst` saved up. O(1) per call."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        if rate < 0 or (burst is not None and burst <= 0):
            raise ValueError("rate must be >= 0 and burst > 0")
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else max(rate, 1.0))
        self._tokens = self.burst
        self._at: float | None = None

    def reserve(self, amount: float, now: float) -> float:
        """Take `amount`; the seconds to wait before the debt is paid (0: none)."""
        if self.rate == 0:
            return 0.0
        if self._at is not None and now > self._at:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now if self._at is None else max(self._at, now)
        self._tokens -= amount
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate


__all__ = ["TokenBucket"]
