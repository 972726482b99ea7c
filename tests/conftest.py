"""Suite-wide hooks.

When a test that used a real cluster (a `tests.cluster.Cluster` fixture) fails, the report
carries the tail of every node's log, so a failure seen only in CI can be read afterwards
without rerunning it.
"""

from __future__ import annotations

import pytest

from tests.cluster import Cluster

LOG_TAIL_CHARS = 6000


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if report.passed or report.skipped or call.when == "teardown":
        return
    funcargs = getattr(item, "funcargs", {}) or {}
    for value in funcargs.values():
        if isinstance(value, Cluster):
            for node in value.nodes:
                try:
                    text = node.log.read_text("utf-8", "replace")[-LOG_TAIL_CHARS:]
                except OSError as exc:
                    text = f"(log unreadable: {exc})"
                report.sections.append((f"node {node.name} log (tail)", text))
