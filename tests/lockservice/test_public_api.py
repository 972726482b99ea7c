"""The package's public surface, and the state machine's purity (shared/STYLE.md §1, §8)."""

from __future__ import annotations

import ast
from pathlib import Path

import lockservice
from lockservice import commands as c
from raft.statemachine import StateMachine

PACKAGE = Path(lockservice.__file__).parent
# The replicated state machine reads no clock, no randomness and does no I/O.
PURE = [
    "fsm",
    "commands",
    "results",
    "events",
    "records",
    "limits",
    "lock_checks",
    "sequencer",
    "snapshot_format",
    "errors",
]
FORBIDDEN = {"time", "datetime", "random", "os", "socket", "asyncio", "aiohttp", "threading"}


def test_all_names_resolve_and_errors_share_one_root() -> None:
    for name in lockservice.__all__:
        assert hasattr(lockservice, name), name
    for err in (
        lockservice.CommandDecodeError,
        lockservice.SnapshotError,
        lockservice.InvariantViolation,
    ):
        assert issubclass(err, lockservice.LockServiceError)


def test_state_machine_modules_import_no_clock_randomness_or_io() -> None:
    offenders = []
    for mod in PURE:
        tree = ast.parse((PACKAGE / f"{mod}.py").read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module.split(".")[0]]
            offenders += [f"{mod} imports {n}" for n in names if n in FORBIDDEN]
    assert not offenders


def test_lock_state_machine_is_a_raft_state_machine() -> None:
    fsm: StateMachine = lockservice.LockStateMachine()
    opened = fsm.apply(1, c.encode(c.OpenSession(1000, now=0)))
    assert opened == lockservice.SessionOpened(1, 1000)
    other = lockservice.LockStateMachine()
    other.restore(fsm.snapshot())
    assert other.lease_end(1) == 1000
