"""The smoke set: every workload against a real 3-node cluster with one nemesis (valid), and
its negative control (the unsafe mode must be caught), through `kv-chaos`'s own code path."""

from __future__ import annotations

import json

import pytest

from chaos import cli


def run(tmp_path, *args) -> tuple[int, dict]:
    code = cli.main(["run", "--nodes", "3", "--time", "10", "--recovery", "3",
                     "--fault-window", "4", "--quiet-window", "2", "--rate", "30",
                     "--concurrency", "4", "--seed", "7", "--store", str(tmp_path),
                     "--no-progress", *args])
    (results,) = tmp_path.rglob("results.json")
    return code, json.loads(results.read_text())


@pytest.mark.parametrize("workload, nemesis, net", [
    ("set", "kill", "auto"), ("register", "pause", "auto"), ("lock", "kill", "auto"),
    ("election", "pause", "auto"),
    # the link proxies: slow links, and partitions without root
    ("register", "delay,partition", "proxy")])
def test_workload_under_a_fault_is_valid(tmp_path, workload, nemesis, net):
    code, results = run(tmp_path, "--workload", workload, "--nemesis", nemesis, "--net", net)
    assert results["valid"], results["checker"]
    assert code == 0
    assert results["faults"]
    assert {f["kind"] for f in results["faults"]} == set(nemesis.split(","))
    assert results["operations"]["ok"] > 10
    folder = next(tmp_path.glob("*/*"))
    for name in ("history.jsonl", "index.html", "latency.png", "rate.png"):
        assert (folder / name).stat().st_size > 0


@pytest.mark.parametrize("workload", ["set", "register", "lock", "election"])
def test_negative_control_is_caught(tmp_path, workload):
    code, results = run(tmp_path, "--workload", workload, "--unsafe", "--time", "6")
    assert not results["valid"]
    assert code == 1


def test_check_subcommand_rereads_a_saved_history(tmp_path, capsys):
    run(tmp_path, "--workload", "set", "--unsafe", "--time", "5")
    folder = next(tmp_path.glob("*/*"))
    capsys.readouterr()
    assert cli.main(["check", "--workload", "set", str(folder)]) == 1
    assert json.loads(capsys.readouterr().out)["lost"] > 0


def test_bad_usage_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["run", "--workload", "set", "--nemesis", "flood"])
    assert exc.value.code == 2
    assert "unknown nemesis flood" in capsys.readouterr().err
    assert cli.main(["check", "--workload", "set", str(tmp_path / "nothing")]) == 2
