"""The phi accrual failure detector (Hayashibara et al. 2004, §3; Cassandra's exponential
form): suspicion grows with silence in units of the usual interval, a threshold convicts,
and the guards (window, max interval, floor, local pause) do what they promise. Pure: time
is passed in."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest

import kvstore.failure_detector as fd
from kvstore.failure_detector import PHI_FACTOR, DetectorConfig, PhiAccrualDetector


def beats(d: PhiAccrualDetector, node: str, every: float, count: int, start: float = 0.0
          ) -> float:
    t = start
    for _ in range(count):
        d.heartbeat(node, t)
        t += every
    return t - every


def test_3_phi_is_silence_over_the_mean_interval_times_log10_e() -> None:
    d = PhiAccrualDetector()
    last = beats(d, "a", 0.5, 11)
    assert d.mean_interval("a") == pytest.approx(0.5)
    assert d.phi("a", last) == 0.0
    assert d.phi("a", last + 1.0) == pytest.approx(PHI_FACTOR * 2.0)
    assert pytest.approx(math.log10(math.e)) == PHI_FACTOR


def test_3_a_silent_node_is_convicted_only_past_the_threshold() -> None:
    d = PhiAccrualDetector(DetectorConfig(threshold=8.0))
    last = beats(d, "a", 0.1, 50)
    limit = 8.0 / PHI_FACTOR * 0.1  # about 1.84 s
    assert d.is_available("a", last + limit * 0.99)
    assert not d.is_available("a", last + limit * 1.01)
    d.heartbeat("a", last + 5.0)  # it comes back: available again at once
    assert d.is_available("a", last + 5.0)


def test_3_the_detector_adapts_to_slower_heartbeats() -> None:
    fast, slow = PhiAccrualDetector(), PhiAccrualDetector()
    t1 = beats(fast, "a", 0.1, 20)
    t2 = beats(slow, "a", 1.0, 20)
    assert fast.phi("a", t1 + 1.0) > slow.phi("a", t2 + 1.0) * 5


def test_unknown_nodes_have_no_suspicion_and_forget_stops_tracking() -> None:
    d = PhiAccrualDetector()
    assert d.phi("ghost", 100.0) == 0.0 and d.is_available("ghost", 100.0)
    d.heartbeat("a", 0.0)
    assert d.tracked() == {"a"}
    d.forget("a")
    assert d.tracked() == set() and d.mean_interval("a") is None


def test_before_any_interval_the_initial_mean_is_used() -> None:
    d = PhiAccrualDetector(DetectorConfig(initial_interval_s=0.5))
    d.heartbeat("a", 10.0)
    assert d.phi("a", 11.0) == pytest.approx(PHI_FACTOR * 2.0)


def test_long_gaps_are_not_learnt_and_the_window_is_bounded() -> None:
    d = PhiAccrualDetector(DetectorConfig(window=4, max_interval_s=2.0))
    t = beats(d, "a", 0.1, 5)
    d.heartbeat("a", t + 30.0)  # down for 30 s: not a normal interval
    assert d.mean_interval("a") == pytest.approx(0.1)
    beats(d, "a", 0.3, 5, start=t + 30.3)  # four 0.3 s intervals push the 0.1 s ones out
    assert d.mean_interval("a") == pytest.approx(0.3)


def test_a_time_from_the_past_is_ignored() -> None:
    d = PhiAccrualDetector()
    beats(d, "a", 0.1, 5)
    d.heartbeat("a", 0.05)
    assert d.mean_interval("a") == pytest.approx(0.1)


def test_the_mean_floor_stops_relayed_bursts_from_making_it_overconfident() -> None:
    cfg = DetectorConfig(min_mean_s=0.05)
    d = PhiAccrualDetector(cfg)
    beats(d, "a", 0.001, 10)  # ten arrivals a millisecond apart
    assert d.phi("a", 0.009 + 0.2) == pytest.approx(PHI_FACTOR * 0.2 / 0.05)
    assert d.is_available("a", 0.009 + 0.2)


def test_forgive_restarts_silence_after_a_local_pause() -> None:
    d = PhiAccrualDetector()
    last = beats(d, "a", 0.1, 20)
    assert not d.is_available("a", last + 3.0)
    d.forgive(last + 3.0)
    assert d.phi("a", last + 3.0) == 0.0
    assert d.mean_interval("a") == pytest.approx(0.1)  # learnt nothing from the pause


@pytest.mark.parametrize("kw", [{"threshold": 0}, {"window": 0}, {"window": 1.5},
                                {"initial_interval_s": 0},
                                {"initial_interval_s": 3, "max_interval_s": 2}])
def test_bad_configs_are_refused(kw: dict) -> None:
    with pytest.raises(ValueError):
        DetectorConfig(**kw)


def test_the_detector_is_pure() -> None:
    tree = ast.parse(Path(fd.__file__).read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
                for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree)
                 if isinstance(n, ast.ImportFrom) and n.module}
    assert not imported & {"time", "asyncio", "socket", "os", "aiohttp", "random"}


def test_liveness_new_nodes_start_up_silent_ones_go_down_and_come_back() -> None:
    live = fd.Liveness(DetectorConfig(initial_interval_s=0.1, min_mean_s=0.05))
    live.monitor({"a", "b"}, 0.0)
    assert live.up == {"a", "b"}
    t = 0.0
    for _ in range(20):
        t += 0.1
        live.arrival("a", t)
    assert live.judge(t) == ["b"]  # b stayed silent for 2 s
    assert live.up == {"a"} and live.judge(t) == []
    assert live.arrival("b", t) is True and live.up == {"a", "b"}
    assert live.arrival("b", t + 0.1) is False  # already up


def test_liveness_monitors_exactly_the_members_it_is_given() -> None:
    live = fd.Liveness()
    live.monitor({"a", "b"}, 0.0)
    live.monitor({"b", "c"}, 1.0)
    assert live.up == {"b", "c"} and live.detector.tracked() == {"b", "c"}
    assert live.arrival("a", 1.0) is False and "a" not in live.up  # not monitored
