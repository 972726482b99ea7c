"""`raft`'s public surface: every name in __all__ resolves, and the core loads no I/O."""

from __future__ import annotations

import subprocess
import sys

import pytest

import raft


@pytest.mark.parametrize("name", raft.__all__)
def test_every_exported_name_resolves(name: str) -> None:
    assert getattr(raft, name) is not None


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        raft.Nope  # noqa: B018


def test_importing_the_core_loads_neither_asyncio_nor_aiohttp() -> None:
    code = (
        "import sys, raft\n"
        "core = raft.RaftCore\n"
        "print(sorted(m for m in ('asyncio', 'aiohttp') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
