"""`kv demo` (the README's main job): it runs the storage engine end to end, says what it
did, keeps data when given --path, and fails loudly with a clear message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from kvstore.cli import main


def run_kv(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kvstore.cli", *args],
                          capture_output=True, text=True, timeout=300)


def test_demo_runs_end_to_end_and_reports_what_it_did(tmp_path: Path) -> None:
    out = run_kv("demo", "--path", str(tmp_path / "data"), "--keys", "3000")
    assert out.returncode == 0, out.stderr
    assert "wrote 3000 keys" in out.stdout
    assert "read back 500 random keys: all match" in out.stdout
    assert "2700 live keys recovered, 300 deleted keys stay deleted" in out.stdout
    assert out.stdout.rstrip().endswith("demo OK")
    assert any(p.suffix == ".sst" for p in (tmp_path / "data").iterdir())  # kept with --path


def test_demo_help_documents_the_folder() -> None:
    out = run_kv("demo", "--help")
    assert out.returncode == 0
    assert "temporary directory" in out.stdout and "--path" in out.stdout


def test_demo_fails_clearly_when_the_folder_is_damaged(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "data"
    assert main(["demo", "--path", str(folder), "--keys", "200", "--sync", "none"]) == 0
    (folder / "CURRENT").write_bytes(b"not a manifest name\n")
    capsys.readouterr()
    assert main(["demo", "--path", str(folder), "--keys", "200"]) == 1
    err = capsys.readouterr().err
    assert "kv demo FAILED" in err and "CURRENT" in err


def test_demo_rejects_too_few_keys(capsys) -> None:
    assert main(["demo", "--keys", "3"]) == 2
    assert "at least 10" in capsys.readouterr().err
