"""Smoke run of the storage benchmark harness (bench/storage.py) at a tiny N.

Proves the harness runs every workload on every engine under test in child processes and
reports positive figures, correct reads and the issue's targets. It asserts nothing about
speed: figures belong to the benchmark's own output, not to tests.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from bench import storage

ENGINES_UNDER_TEST = ("ringlock", "sqlite3")
OPS_WORKLOADS = [w for w in storage.WORKLOADS if w != "space"]


def test_smoke_run_reports_every_workload_and_engine(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out.json"
    code = storage.main([
        "--num", "2000", "--reads", "1000", "--sync-seconds", "0.1", "--sync-rounds", "2",
        "--threads", "4",
        "--settle-max", "0", "--only", ",".join(ENGINES_UNDER_TEST),
        "--dir", str(tmp_path / "work"), "--json", str(out),
    ])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0, printed
    report = json.loads(out.read_text())
    assert report["errors"] == []
    rows = {(r["workload"], r["engine"]): r for r in report["results"]}
    for engine in ENGINES_UNDER_TEST:
        for workload in OPS_WORKLOADS:
            row = rows[(workload, engine)]
            assert row["ops"] > 0, (workload, engine)
            assert row["ops_per_s"] > 0, (workload, engine)
            assert row["check"] == "ok", (workload, engine, row["check"])
            assert row["peak_rss_bytes"] > 0
            assert row["ops_per_cpu_s"] > 0
            assert len(row["loadavg_before"]) == 3
        space = rows[("space", engine)]
        assert space["disk_bytes"] > 0 and space["live_bytes"] == 2000 * 116
        assert rows[("scan", engine)]["found"] == 2000
        assert rows[("readmissing", engine)]["found"] == 0
        assert rows[("sync16", engine)]["threads"] == 4
        rounds = [r["round"] for r in report["results"] if r["workload"] == "sync1"
                  and r["engine"] == engine]  # fmt: skip
        assert rounds == [0, 1]
    for child in report["children"]:
        assert child["exit_code"] == 0 and child["maxrss_bytes"] > 0
    assert report["meta"]["num"] == 2000 and report["meta"]["fsync_per_s"] > 0
    for workload in OPS_WORKLOADS:
        assert f"\n{workload} " in printed
    assert "targets (issue 3)" in printed


def test_only_splits_engines_from_workloads_and_rejects_unknown_names() -> None:
    assert storage.parse_only("readrandom,sqlite3,sync") == (
        ["sqlite3"],
        ["readrandom", "sync1", "sync16"],
    )
    with pytest.raises(SystemExit, match="unknown name 'fillrandomm'"):
        storage.parse_only("fillrandomm")


def test_plan_adds_prerequisites_on_the_same_database() -> None:
    assert storage.plan(["space"]) == [("random", False, ["fillrandom", "overwrite", "space"])]
    assert storage.plan(["fillseq", "sync1"]) == [
        ("seq", False, ["fillseq"]),
        ("sync", True, ["sync1"]),
    ]


def test_profile_prints_top_entries_of_ringlocks_workload(tmp_path: Path, capsys) -> None:
    code = storage.main([
        "--num", "2000", "--settle-max", "0", "--profile", "fillrandom",
        "--dir", str(tmp_path / "work"),
    ])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "== cProfile of ringlock fillrandom (N = 2,000) ==" in printed
    assert "== top 25 by cumulative time ==" in printed
    assert "== top 25 by total (own) time ==" in printed
    assert "== own time as a share of the profiled time ==" in printed
    assert "engine.py" in printed  # the engine's own code, not only the harness, is profiled
    assert "sqlite3" not in printed  # --profile runs ringlock alone


def test_synced_ratios_pair_the_rounds_before_taking_the_median(tmp_path: Path) -> None:
    args = argparse.Namespace(reads=0, ringlock_option=None)
    runner = storage.Runner(args, 10, str(tmp_path))
    rates = {"ringlock": [2840, 340, 713], "sqlite3": [2770, 2500, 468]}
    runner.results = [
        {"workload": "sync1", "engine": engine, "round": n, "ops_per_s": rate}
        for engine, per_round in rates.items()
        for n, rate in enumerate(per_round)
    ]
    # Per round 1.03, 0.14, 1.52: the median is round 0's; the ratio of the two medians
    # (713 / 2500 = 0.29) would compare a slow-disk round with a fast one.
    assert runner.paired("sync1", "ringlock", "sync1", "sqlite3") == pytest.approx(2840 / 2770)
    assert runner.value("sync1", "ringlock") == 713
