"""The KV benchmark's instrument (bench/kv.py, bench/loadgen.py, bench/ringlock_target.py).

Pure parts first (percentiles, gaps, record merging), then a smoke run of `bench.kv` in a
tiny --quick mode against ringlock only (real `kv serve` processes, no anchor). Nothing here
asserts speed: figures belong to the benchmark's output.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import kv
from bench.loadgen import LoadSpec, _merge, longest_gap, percentile


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0
    assert percentile([7.0], 0.99) == 7.0
    assert percentile([], 0.5) is None


def test_longest_gap_counts_the_window_edges() -> None:
    assert longest_gap([1.0, 2.0, 2.5], 0.0, 3.0) == (1.0, 0.0)  # start -> first success
    assert longest_gap([0.1, 0.2, 3.0, 3.1], 0.0, 4.0) == (pytest.approx(2.8), 0.2)
    assert longest_gap([0.5], 0.0, 10.0) == (9.5, 0.5)  # last success -> end
    assert longest_gap([], 0.0, 2.0) == (2.0, 0.0)  # nothing succeeded
    assert longest_gap([-1.0, 5.0], 0.0, 4.0) == (4.0, 0.0)  # outside the window ignored


def test_merge_keeps_only_operations_completed_inside_the_window() -> None:
    spec = LoadSpec("x:Y", {}, clients=2, duration_s=2.0)
    worker = {
        "ok": [[0.0, 0.5, "put", None, None, 0], [0.4, 1.0, "get", None, None, 1],
               [1.9, 2.4, "put", None, None, 0]],  # the last one ended after the window
        "err": [[1.0, 1.2, 0], [2.0, 2.1, 0]],
        "kinds": ["ClientConnectorError"], "cpu_s": 1.0, "stuck": 0, "extra": {},
    }  # fmt: skip
    r = _merge(spec, "t", 1, [worker], {1: 0.0}, {1: 1.0}, (0, 0, 0), (0, 0, 0), {})
    assert r.ops == 2 and r.rate == 1.0
    assert r.labels["put"]["n"] == 1 and r.labels["get"]["n"] == 1
    assert r.latency["p99_ms"] == pytest.approx(600.0)
    assert r.errors == 1 and r.error_kinds == {"ClientConnectorError": 1}
    assert r.longest_gap_s == pytest.approx(1.0)  # from 1.0 to the end of the window
    assert r.longest_client_gap_s == pytest.approx(1.5)  # client 0: 0.5 -> 2.0
    assert r.client_cores == 0.5 and r.server_cores == 0.5


def test_unknown_names_are_refused() -> None:
    with pytest.raises(SystemExit):
        kv.parse_args(["--configs", "4n-interval"])
    with pytest.raises(SystemExit):
        kv.parse_args(["--workloads", "scan"])


@pytest.mark.slow
def test_smoke_run_against_ringlock_only(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out.json"
    code = kv.main([
        "--quick", "--targets", "ringlock", "--configs", "3n-interval", "--clients", "4",
        "--duration", "1", "--warmup", "0.2", "--keyspace", "100", "--kill-s", "3",
        "--procs", "1", "--dir", str(tmp_path / "work"), "--json", str(out),
    ])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0, printed
    report = json.loads(out.read_text())
    assert report["errors"] == []
    rows = {r["mix"]: r for r in report["load"]}
    assert set(rows) == {"put", "get", "mixed"}
    for mix, row in rows.items():
        assert row["system"] == "ringlock" and row["config"] == "3n-interval"
        assert row["ops"] > 0 and row["errors"] == 0, (mix, row["error_kinds"])
        assert row["latency"]["p99_ms"] >= row["latency"]["p50_ms"] > 0
        assert row["client_cores"] > 0 and row["server_cores"] > 0
        assert len(row["server_cores_by_pid"]) == 3
    assert set(rows["mixed"]["labels"]) == {"put", "get"}
    kill = report["kill"]
    assert kill["killed"].startswith("127.0.0.1:")
    assert kill["rate_after"] > 0  # puts and gets went on succeeding after the SIGKILL
    assert 0 < kill["longest_gap_s"] <= 3
    assert "targets (issue 5)" in printed and "| kill run |" in printed
