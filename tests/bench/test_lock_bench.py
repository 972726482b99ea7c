"""The lock benchmark's instrument (bench/lock.py and the lock workloads).

The FIFO check on made-up grant records first, then a smoke run of `bench.lock` in a tiny
--quick mode against ringlock only (real `python -m lockservice.node` processes, no
anchor). Nothing here asserts speed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import lock
from bench.loadgen import LoadSpec, _merge


def grants(records: list[tuple[float, float, float]]):
    """A LoadResult whose successful cycles are (sent, answered, order key)."""
    ok = [[t0, t1, "cycle", None, order, k] for k, (t0, t1, order) in enumerate(records)]
    worker = {"ok": ok, "err": [], "kinds": [], "cpu_s": 0.0, "stuck": 0, "extra": {}}
    return _merge(LoadSpec("x:Y", {}, clients=len(records), duration_s=10.0), "t", 1,
                  [worker], {}, {}, (0, 0, 0), (0, 0, 0), {})  # fmt: skip


def test_fifo_check_with_the_grant_order_from_the_server() -> None:
    in_order = grants([(0.00, 1.0, 1), (0.10, 1.5, 2), (0.20, 2.0, 3)])
    assert lock.overtakes(in_order, "grant", 0.0) == 0
    # sent 100 ms after the first, granted before it: one overtake at any margin below that
    jumped = grants([(0.00, 1.0, 2), (0.10, 0.9, 1), (0.20, 2.0, 3)])
    assert lock.overtakes(jumped, "grant", 0.0) == 1
    assert lock.overtakes(jumped, "grant", 0.05) == 1
    assert lock.overtakes(jumped, "grant", 0.15) == 0  # too close to tell on the client clock
    reversed_ = grants([(0.0, 1.0, 3), (0.1, 1.0, 2), (0.2, 1.0, 1)])
    assert lock.overtakes(reversed_, "grant", 0.0) == 3


def test_fifo_check_with_the_queue_order_from_the_server() -> None:
    # ZooKeeper: the order key is the lock node's sequence (queue order); grants are
    # observed by the clients' receive times
    fifo = grants([(0.0, 1.0, 10), (0.0, 1.2, 11), (0.0, 1.4, 12)])
    assert lock.overtakes(fifo, "enqueue", 0.0) == 0
    late = grants([(0.0, 1.5, 10), (0.0, 1.2, 11), (0.0, 1.4, 12)])
    assert lock.overtakes(late, "enqueue", 0.0) == 2
    assert lock.overtakes(late, "enqueue", 0.2) == 1  # 1.2 vs 1.5 only


def test_unknown_targets_and_phases_are_refused() -> None:
    with pytest.raises(SystemExit):
        lock.parse_args(["--targets", "consul"])
    with pytest.raises(SystemExit):
        lock.parse_args(["--only", "throughput"])


@pytest.mark.slow
def test_smoke_run_against_ringlock_only(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out.json"
    code = lock.main([
        "--quick", "--targets", "ringlock", "--clients", "1,4", "--contended-clients", "4",
        "--duration", "1", "--warmup", "0.2", "--sessions", "50", "--keepalive-s", "2",
        "--trials", "1", "--failover-s", "6", "--procs", "1",
        "--dir", str(tmp_path / "work"), "--json", str(out),
    ])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0, printed
    report = json.loads(out.read_text())
    assert report["errors"] == []
    load = {(r["phase"], r["clients"]): r for r in report["load"]}
    assert set(load) == {("distinct", 1), ("distinct", 4), ("contended", 4)}
    for key, row in load.items():
        assert row["target"] == "ringlock"
        assert row["ops"] > 0 and row["errors"] == 0, (key, row["error_kinds"])
        assert row["parts"]["acquire"]["n"] == row["ops"]
        assert row["server_cores"] > 0
    assert load[("contended", 4)]["overtakes_margin"] == 0  # FIFO among the waiters
    (ka,) = report["keepalive"]
    assert ka["sessions"] == 50 and ka["failures"] == 0 and ka["leader_cores"] > 0
    (fo,) = report["failover"]
    assert fo["killed"] in (1, 2, 3)
    assert fo["holder_kept"] is True  # the held lock survived the leader's SIGKILL
    assert "targets (issue 7)" in printed
