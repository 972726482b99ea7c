"""The fault plan: windows tile the run, every nemesis gets a turn, seeds replay."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chaos.schedule import NEMESES, plan


@given(st.lists(st.sampled_from(NEMESES), min_size=1, max_size=4, unique=True),
       st.floats(5, 300), st.integers(0, 2**32))
def test_windows_tile_the_run_and_alternate(nemeses, duration, seed):
    p = plan(nemeses, duration, seed=seed, fault_s=4, quiet_s=2, recovery_s=3)
    assert p.windows[0].start == 0 and p.windows[-1].end == duration
    assert all(a.end == b.start for a, b in zip(p.windows, p.windows[1:], strict=False))
    assert all(w.start < w.end for w in p.windows)
    assert all((w.fault is None) == (i % 2 == 0) for i, w in enumerate(p.windows))
    assert {w.fault for w in p.windows} - {None} <= set(nemeses)
    assert p.heal_at == duration and p.end == duration + 3


def test_every_nemesis_gets_a_turn_in_a_long_enough_run():
    p = plan(list(NEMESES), 200, seed=1, fault_s=5, quiet_s=5)
    assert {w.fault for w in p.windows} - {None} == set(NEMESES)


def test_a_seed_replays_and_another_differs():
    a = plan(["kill", "partition"], 60, seed=5)
    assert a == plan(["kill", "partition"], 60, seed=5)
    assert a != plan(["kill", "partition"], 60, seed=6)


def test_fault_at_finds_the_window():
    p = plan(["kill"], 60, seed=2)
    w = next(w for w in p.windows if w.fault)
    assert p.fault_at((w.start + w.end) / 2) == "kill"
    assert p.fault_at(p.end + 1) is None


def test_no_nemesis_means_only_quiet():
    p = plan([], 30, seed=0)
    assert [w.fault for w in p.windows] == [None]


@pytest.mark.parametrize("kwargs, message", [
    ({"nemeses": ["flood"]}, "unknown nemesis flood"),
    ({"duration": 0}, "positive"),
    ({"fault_s": -1}, "positive"),
])
def test_bad_plans_are_refused(kwargs, message):
    args = {"nemeses": ["kill"], "duration": 10, **kwargs}
    with pytest.raises(ValueError, match=message):
        plan(args.pop("nemeses"), args.pop("duration"), seed=0, **args)
