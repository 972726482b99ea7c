"""What a workload is: clients that loop on operations, final reads, and a checker."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Any

from chaos.history import Operation
from chaos.recorder import Recorder


@dataclass
class Env:
    """What a workload gets from the runner."""

    kv_nodes: list[str]  # HOST:PORT of every store node
    lock_members: list[str]  # HOST:PORT of every lock-service member
    recorder: Recorder
    rng: random.Random
    op_timeout_s: float = 5.0
    unsafe: bool = False  # the negative control: the workload breaks a rule on purpose


class Workload:
    """Subclasses fill in the four steps; `client` runs until `stop` is set."""

    name = "abstract"

    def __init__(self, env: Env, *, keys: int = 3) -> None:
        self.env = env
        self.keys = keys

    async def open(self) -> None:
        """Connect, create what the run needs."""

    async def client(self, process: int, stop: asyncio.Event, pause_s: float) -> None:
        raise NotImplementedError

    async def final(self) -> None:
        """After the heal and recovery: the reads the checker needs (none by default)."""

    def check(self, ops: list[Operation]) -> dict[str, Any]:
        raise NotImplementedError

    async def close(self) -> None:
        """Release what `open` took."""


async def pace(stop: asyncio.Event, pause_s: float, rng: random.Random) -> bool:
    """Sleep about `pause_s` (jittered) unless stopped; False once the run is over."""
    try:
        await asyncio.wait_for(stop.wait(), pause_s * rng.uniform(0.5, 1.5))
    except TimeoutError:
        return True
    return False
