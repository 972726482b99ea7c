"""Waiting for background work in tests: a deadline on the monotonic clock, not a count.

A count of short sleeps is a deadline that shrinks as the machine gets busier (two cores
shared by a whole CI run); a condition that needs a worker process to start may take
seconds there. The assertion that follows a wait stays exactly as strict.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

DEFAULT_TIMEOUT = 60.0


def wait_until(predicate: Callable[[], object], timeout: float = DEFAULT_TIMEOUT,
               interval: float = 0.005) -> bool:
    """Poll `predicate` until it is true or `timeout` seconds pass; return its last truth."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return bool(predicate())
        time.sleep(interval)
    return True


async def async_wait_until(predicate: Callable[[], object], timeout: float = DEFAULT_TIMEOUT,
                           interval: float = 0.01) -> bool:
    """`wait_until` for code on an event loop: sleeps with asyncio.sleep."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return bool(predicate())
        await asyncio.sleep(interval)
    return True
