"""Shared by the raft tests: slow tests run only when asked for with `-m slow`."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.option.markexpr:
        return  # the caller chose markers explicitly (e.g. `-m slow`)
    keep, slow = [], []
    for item in items:
        in_raft = HERE in Path(str(item.fspath)).resolve().parents
        (slow if in_raft and item.get_closest_marker("slow") else keep).append(item)
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = keep
