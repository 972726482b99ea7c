from __future__ import annotations

import subprocess
import sys


def test_kv_version_names_the_distribution() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "kvstore.cli", "--version"],
        capture_output=True, text=True, check=True,
    )
    assert out.stdout.startswith("ringlock ")


def test_kv_without_a_command_prints_usage_and_fails() -> None:
    out = subprocess.run([sys.executable, "-m", "kvstore.cli"], capture_output=True, text=True)
    assert out.returncode == 2
    assert "usage: kv" in out.stderr
