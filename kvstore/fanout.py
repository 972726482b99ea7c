"""Calls to several nodes in flight at once, their results taken as they come.

The coordinator sends one request per replica and must act on each reply as it arrives
(count it toward R or W, replace a failed target, answer the client), while the calls it
no longer waits for go on in the background until their own deadline. `Calls` keeps the
in-flight tasks and the node each one asks; `next(deadline)` waits, with no extra task
per call, for at least one to finish and hands back (node, reply or exception) pairs.

Every task's outcome is retrieved by a done callback, so a call whose answer nobody
awaits any more (the request was already answered) never logs "exception was never
retrieved". A call cancelled by the node's shutdown counts as a failure of that node.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from kvstore.errors import NodeUnavailable
from kvstore.quorum import Tally

logger = logging.getLogger(__name__)


def _retrieve(task: asyncio.Task) -> None:
    if not task.cancelled():
        task.exception()


class Calls:
    """In-flight calls; `spawn` turns an awaitable into a task the owner can cancel."""

    def __init__(self, spawn: Callable[[Awaitable], asyncio.Task]) -> None:
        self._spawn = spawn
        self._pending: dict[asyncio.Task, str] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def send(self, node: str, call: Awaitable) -> None:
        task = self._spawn(call)
        task.add_done_callback(_retrieve)
        self._pending[task] = node

    async def next(self, deadline: float) -> list[tuple[str, object]]:
        """(node, reply or exception) of the calls that finished; [] once past `deadline`
        (monotonic) or when nothing is in flight."""
        if not self._pending:
            return []
        done, _ = await asyncio.wait(self._pending, timeout=max(0, deadline - time.monotonic()),
                                     return_when=asyncio.FIRST_COMPLETED)
        out: list[tuple[str, object]] = []
        for task in done:
            node = self._pending.pop(task)
            if task.cancelled():
                out.append((node, NodeUnavailable(node, "call cancelled (shutting down)")))
                continue
            exc = task.exception()
            if exc is not None:
                logger.debug("call to %s failed: %s", node, exc)
            out.append((node, exc if exc is not None else task.result()))
        return out


async def collect(tally: Tally, calls: Calls, deadline: float, replies: dict[str, Any], *,
                  until_finished: bool = False,
                  on_fail: Callable[[str], None] | None = None) -> None:
    """Count replies into `tally` (and `replies`) until it is decided (R reached, or out of
    reach), or with `until_finished` until every call answered; [] past `deadline` ends it.
    `on_fail(node)` runs for each failure (to send a stand-in)."""
    while not tally.finished and (until_finished or not (tally.reached or tally.hopeless)):
        results = await calls.next(deadline)
        if not results:
            return  # the deadline passed
        for node, reply in results:
            if isinstance(reply, BaseException):
                tally.fail(node)
                if on_fail is not None:
                    on_fail(node)
            else:
                tally.ok(node)
                replies[node] = reply
