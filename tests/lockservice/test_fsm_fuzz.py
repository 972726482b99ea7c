"""Any sequence of well-formed commands, however odd: apply() never raises, check() holds,
two replicas fed the same log are equal, and the snapshot restores to the same state."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lockservice import commands as c
from lockservice.fsm import LockStateMachine
from lockservice.limits import Limits

from .strategies import aimed

LIMITS = Limits(max_sessions=8, max_entries=4, max_events_per_session=3, max_waiters_per_lock=2)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(aimed, max_size=40))
def test_any_log_applies_without_raising_and_replicas_agree(log: list[c.Command]) -> None:
    one, two = LockStateMachine(LIMITS), LockStateMachine(LIMITS)
    for index, cmd in enumerate(log, start=1):
        data = c.encode(cmd)
        assert one.apply(index, data) == two.apply(index, data)
        one.check()
    assert one.snapshot() == two.snapshot()
    three = LockStateMachine(LIMITS)
    three.restore(one.snapshot())
    assert three.snapshot() == one.snapshot()
