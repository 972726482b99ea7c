"""Chubby §2.8-2.9, the leader's long poll: how long a KeepAlive with no event is held.

Pure: `operations.hold_ms` takes the lease, the TTL, the time and whether the lease is still
the one a new leader granted every session at once (GrantFreshLeases).
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from lockservice.operations import hold_ms


def test_held_until_a_third_of_the_ttl_is_left() -> None:
    assert hold_ms(10_000, 9_000, 1_000, 30_000, fresh=False) == 6_000
    assert hold_ms(10_000, 9_000, 7_000, 30_000, fresh=False) == 0  # a third left: at once
    assert hold_ms(10_000, 9_000, 9_500, 30_000, fresh=False) == 0  # never negative


def test_never_held_longer_than_the_cap() -> None:
    assert hold_ms(100_000, 90_000, 0, 5_000, fresh=False) == 5_000


def test_a_fresh_lease_from_a_new_leader_is_renewed_at_once() -> None:
    """After a fail-over every lease ends at the same instant: the first KeepAlive of each
    session at the new leader is answered (and the lease renewed) when it arrives."""
    assert hold_ms(10_000, 9_000, 1_000, 30_000, fresh=True) == 0


@given(st.integers(0, 10**13), st.integers(1, 3_600_000), st.integers(0, 10**13),
       st.integers(0, 300_000))
def test_the_answer_comes_before_the_lease_has_less_than_a_third_left(
        expires_at: int, ttl_ms: int, now: int, cap: int) -> None:
    held = hold_ms(expires_at, ttl_ms, now, cap, fresh=False)
    assert 0 <= held <= cap
    assert held == 0 or now + held == expires_at - ttl_ms // 3 or held == cap
    assert hold_ms(expires_at, ttl_ms, now, cap, fresh=True) == 0
