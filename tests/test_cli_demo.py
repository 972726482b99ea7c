"""`kv demo` (the README's main job): it starts a local cluster of real node processes (or
uses the running one), writes and reads through it, shows siblings resolving and says what
to try next. `kv demo --storage` runs the storage engine end to end, says what it did,
keeps data when given --path, and fails loudly with a clear message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from kvstore.cli import main
from kvstore.local_cluster import LocalCluster, serve_flags
from tests.kvstore.api_cluster import free_base_port


def run_kv(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kvstore.cli", *args],
                          capture_output=True, text=True, timeout=300, cwd=cwd)


def test_demo_runs_end_to_end_and_reports_what_it_did(tmp_path: Path) -> None:
    out = run_kv("demo", "--storage", "--path", str(tmp_path / "data"), "--keys", "3000")
    assert out.returncode == 0, out.stderr
    assert "wrote 3000 keys" in out.stdout
    assert "read back 500 random keys: all match" in out.stdout
    assert "2700 live keys recovered, 300 deleted keys stay deleted" in out.stdout
    assert out.stdout.rstrip().endswith("demo OK")
    assert any(p.suffix == ".sst" for p in (tmp_path / "data").iterdir())  # kept with --path


def test_demo_help_documents_both_demos() -> None:
    out = run_kv("demo", "--help")
    assert out.returncode == 0
    assert "temporary directory" in out.stdout and "--path" in out.stdout
    assert "--storage" in out.stdout and "ringlock-cluster" in out.stdout


def test_demo_fails_clearly_when_the_folder_is_damaged(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "data"
    assert main(["demo", "--storage", "--path", str(folder), "--keys", "200",
                 "--sync", "none"]) == 0
    (folder / "CURRENT").write_bytes(b"not a manifest name\n")
    capsys.readouterr()
    assert main(["demo", "--path", str(folder), "--keys", "200"]) == 1
    err = capsys.readouterr().err
    assert "kv demo FAILED" in err and "CURRENT" in err


def test_demo_rejects_too_few_keys(capsys) -> None:
    assert main(["demo", "--keys", "3"]) == 2  # a storage option implies --storage
    assert "at least 10" in capsys.readouterr().err


def test_demo_starts_a_cluster_writes_reads_and_says_what_next(tmp_path: Path) -> None:
    """The README's main job, run where the user is: ./ringlock-cluster in the current
    folder, which later `kv` commands there find by themselves."""
    folder = tmp_path / "ringlock-cluster"
    port = free_base_port(3)
    try:
        out = run_kv("demo", "--nodes", "3", "--base-port", str(port), cwd=tmp_path)
        assert out.returncode == 0, out.stdout + out.stderr
        lines = out.stdout
        assert f"starting a 3-node cluster in {folder}" in lines
        assert "ring formed: 3 members on every node" in lines
        assert f"get greeting through 127.0.0.1:{port + 2} -> 'hello from ringlock'" in lines
        assert "2 siblings ['green', 'red']" in lines and "resolves them -> 'green+red'" in lines
        assert "demo OK" in lines and "Next, try:" in lines and "cluster down" in lines
        assert f"http://localhost:{port}/status" in lines
        # The next steps work as printed, from the same folder, with no --node.
        assert run_kv("get", "greeting", cwd=tmp_path).stdout == "hello from ringlock"
        if "--lock-id" in serve_flags():
            assert "lock run jobs --" in lines
            held = run_kv("lock", "run", "jobs", "--", "true", cwd=tmp_path)
            assert held.returncode == 0, held.stderr
        # A second run uses the running cluster and still reads exactly one value.
        again = run_kv("demo", cwd=tmp_path)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "using the running 3-node cluster" in again.stdout
        assert "-> 'hello from ringlock'" in again.stdout
        assert "2 siblings ['green', 'red']" in again.stdout
    finally:
        LocalCluster(folder).down()
    assert not list(folder.glob("*.pid"))
