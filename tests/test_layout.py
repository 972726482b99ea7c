"""The dependency direction of shared/DESIGN.md, checked on the source itself.

`raft` imports nothing of ours; `lockservice` never imports `kvstore` (the node process in
`kvstore` hosts the lock service, not the other way round); the product (kvstore,
lockservice, raft, antientropy) never imports `chaos` or `bench`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = {"kvstore", "lockservice", "raft", "antientropy", "chaos", "bench"}
FORBIDDEN = {
    "raft": OURS - {"raft"},
    # The node process (kvstore) hosts the lock service and checks sequencers for fencing;
    # the lock service never knows about the store.
    "kvstore": {"chaos", "bench"},
    "antientropy": {"chaos", "bench", "lockservice"},
    "lockservice": {"chaos", "bench", "kvstore"},
}


def imported_top_levels(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_point_down(package: str) -> None:
    offenders = []
    for path in sorted((ROOT / package).rglob("*.py")):
        bad = imported_top_levels(path) & FORBIDDEN[package]
        if bad:
            offenders.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert not offenders, "\n".join(offenders)


def test_detector_sees_a_forbidden_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import os\nfrom chaos.nemesis import x\nfrom . import sibling\n")
    assert imported_top_levels(module) == {"os", "chaos"}
