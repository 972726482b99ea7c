"""STYLE §1: the core is sans-I/O. Walk the core modules' imports with `ast` and fail if
clocks, sockets, threads, the OS, asyncio or aiohttp creep in, or if `random` is used at
module level (election jitter must come from the injected random.Random)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

RAFT = Path(__file__).resolve().parents[2] / "raft"


def core_closure(root: str = "core.py") -> list[str]:
    """raft/core.py and every raft module it imports, transitively (found with ast)."""
    seen: set[str] = set()
    todo = [root]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        tree = ast.parse((RAFT / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                parts = node.module.split(".")
                if parts[0] == "raft" and len(parts) > 1:
                    todo.append(parts[1] + ".py")
    return sorted(seen)


CORE_MODULES = core_closure()
FORBIDDEN = {"asyncio", "aiohttp", "time", "os", "socket", "threading", "select", "selectors"}


def violations(source: str) -> list[str]:
    tree = ast.parse(source)
    found: list[str] = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name.split(".")[0] for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module.split(".")[0]]
            if names[0] == "random":
                found.append(f"line {node.lineno}: from random import ... (module-level RNG)")
        found += [f"line {node.lineno}: imports {n}" for n in names if n in FORBIDDEN]
    # `random` may be imported only as a type for the injected generator: any call on
    # the module itself (random.random(), random.choice(...), random.seed()) is global state.
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "random"
            and node.func.attr != "Random"
        ):
            found.append(f"line {node.lineno}: random.{node.func.attr}() uses the global RNG")
    return found


@pytest.mark.parametrize("module", CORE_MODULES)
def test_core_module_does_no_io(module: str) -> None:
    assert violations((RAFT / module).read_text()) == []


def test_closure_covers_the_core_modules() -> None:
    expected = {"core.py", "log.py", "progress.py", "quorum.py", "readonly.py", "ready.py"}
    assert expected <= set(CORE_MODULES)
    assert {"config.py", "errors.py", "messages.py", "snapshot_assembler.py"} <= set(CORE_MODULES)


@pytest.mark.parametrize(
    "source",
    [
        "import time\n",
        "import os.path\n",
        "from asyncio import sleep\n",
        "import aiohttp\n",
        "from random import random\n",
        "import random\nx = random.random()\n",
        "import random\nrandom.seed(1)\n",
        "def f():\n    import socket\n",
        "import threading as t\n",
    ],
)
def test_detector_flags_io(source: str) -> None:
    assert violations(source)


def test_detector_allows_an_injected_rng() -> None:
    assert violations("import random\ndef f(rng: random.Random):\n    return rng.random()\n") == []
