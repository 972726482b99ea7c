"""The lock workload: exclusive locks, with each holder's writes fenced in the Dynamo store.

Every client has its own session (TTL `ttl_ms`). It acquires the lock (waiting up to the
operation timeout), writes its generation to a key of the store with its sequencer (a
fenced put: the store asks the lock service whether the sequencer is still current and
refuses it with 409 otherwise), holds a moment, and releases. When its client library puts
the session in jeopardy while it holds the lock, it stops acting as holder at that instant
and records `lost` (with that instant as its value) as soon as its operation in flight
ends. The checker (chaos/checker_lock.py) proves from the history that
no two clients believed they held the lock at once, that generations only increased, and
that the store never accepted a write from a stale holder after a newer one.

An acquire whose outcome is unknown (timeout, lost connection) may have been granted
without the client knowing, and a release that failed may have left the lock held: the
client then closes its session (which frees the lock) and opens a new one, as a careful
user would.

Negative control (`unsafe`): a client that finds the lock busy acts as holder anyway and
writes without a sequencer: the checker must catch the overlap.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from chaos import checker_lock
from chaos.history import Operation, OpType
from chaos.workloads.base import Env, Workload, pace
from kvstore.client import AsyncClient
from kvstore.errors import SequencerRejected, SiblingLimitExceeded
from lockservice.async_client import AsyncLockClient
from lockservice.client_errors import LockBusy, RequestRejected
from lockservice.handles import HeldLock

TTL_MS = 4000
HOLD_S = 0.05


def classify(f: str, exc: BaseException) -> OpType:
    if isinstance(exc, LockBusy | RequestRejected | SequencerRejected | SiblingLimitExceeded
                  | ReadFailed):
        return OpType.FAIL  # refused, or never sent: nothing was written
    return OpType.INFO


class ReadFailed(Exception):
    """The read before a fenced write failed: the write was not attempted."""


class LockWorkload(Workload):
    name = "lock"

    def __init__(self, env: Env, *, keys: int = 1) -> None:
        super().__init__(env, keys=keys)  # one contended lock by default

    async def open(self) -> None:
        self._store = AsyncClient(self.env.kv_nodes, timeout=self.env.op_timeout_s)
        self._lost_at: dict[int, dict[str, int]] = {}

    def _flush_lost(self, process: int) -> None:
        """Record each `lost` once the process is between operations; its value is the
        instant the client library ended the belief (the checker uses it)."""
        lost_at = self._lost_at.get(process, {})
        for name, at in sorted(lost_at.items()):
            self.env.recorder.add(OpType.INVOKE, process, "lost", name, at)
            self.env.recorder.add(OpType.OK, process, "lost", name, at)
        lost_at.clear()

    async def close(self) -> None:
        await self._store.close()

    async def client(self, process: int, stop: asyncio.Event, pause_s: float) -> None:
        while not stop.is_set():
            await self._session(process, stop, pause_s)

    async def _session(self, process: int, stop: asyncio.Event, pause_s: float) -> None:
        env = self.env
        holding: dict[str, int] = {}  # lock name -> generation, while believed held
        # Locks this session gave up on after a jeopardy: if the lease recovers, the server
        # still has them granted, and a re-acquire would return the same grant; so the
        # session is replaced (its close frees them).
        tainted: list[str] = []
        self._lost_at[process] = lost_at = {}  # lock name -> when the belief ended (ns)

        def jeopardy(*_: object) -> None:  # may run while an operation is in flight
            now = time.monotonic_ns()
            for name in list(holding):
                lost_at[name] = now
                holding.pop(name)
                tainted.append(name)

        members = list(env.lock_members)
        env.rng.shuffle(members)
        c = AsyncLockClient(members, ttl_ms=TTL_MS, request_timeout_s=env.op_timeout_s,
                            on_jeopardy=jeopardy, on_lost=jeopardy)
        try:
            await c.open()
        except Exception:  # no member answers now: try again after a pause
            await c.close()
            await pace(stop, 1.0, env.rng)
            return
        try:
            while await pace(stop, pause_s, env.rng):
                name = f"lock-{env.rng.randrange(self.keys)}"
                if not await self._cycle(c, process, name, holding) or tainted:
                    return  # start over with a fresh session
        finally:
            holding.clear()  # closing the session releases: no `lost` to record
            with contextlib.suppress(Exception):
                await c.close()

    async def _cycle(self, c: AsyncLockClient, process: int, name: str,
                     holding: dict[str, int]) -> bool:
        """One acquire / fenced write / release; False when the session must be replaced."""
        env, rec = self.env, self.env.recorder
        timeout = env.op_timeout_s
        box: dict[str, HeldLock] = {}

        async def acquire() -> int:  # unsafe: try once, and act as holder even when busy
            box["held"] = held = await c.acquire(name, timeout=0 if env.unsafe else timeout / 2)
            return held.generation

        kind, generation = await rec.perform(process, "acquire", name, None, acquire, classify,
                                             timeout_s=timeout)
        self._flush_lost(process)
        if kind is OpType.INFO:
            return False
        if kind is OpType.OK:
            holding[name] = generation
            if not box["held"].valid:  # granted, but the lease is already in doubt
                holding.pop(name)
                self._lost_at[process][name] = time.monotonic_ns()
                self._flush_lost(process)
                return False  # a fresh session: this one still has the grant
        elif env.unsafe:  # act as holder without a grant
            generation = max(holding.values(), default=0)
            rec.add(OpType.INVOKE, process, "acquire", name)
            rec.add(OpType.OK, process, "acquire", name, generation)
            holding[name] = generation
        else:
            return True
        held = box.get("held")
        sequencer = held.token if held is not None and not env.unsafe else None
        async def write() -> None:  # replace the resource's value: read its context first
            key = f"fenced/{name}".encode()
            try:
                context = (await self._store.get(key)).context
            except Exception as exc:
                raise ReadFailed(str(exc)) from exc
            await self._store.put(key, b"%d" % generation, context=context, sequencer=sequencer)

        if name in holding:  # (jeopardy may have ended the belief already)
            await rec.perform(process, "write", name, generation, write, classify,
                              timeout_s=timeout)
            self._flush_lost(process)
            await asyncio.sleep(HOLD_S)
            self._flush_lost(process)
        if name in holding:
            holding.pop(name)

            async def release() -> None:
                if held is not None:  # (unsafe mode's pretend grants have nothing to free)
                    await c.release(held)

            kind, _ = await rec.perform(process, "release", name, None, release,
                                        lambda f, e: OpType.INFO, timeout_s=timeout)
            self._flush_lost(process)
            # A release that did not surely happen may leave the session holding the lock,
            # and a re-acquire would return the same grant: start a fresh session instead.
            return kind is OpType.OK
        return True

    def check(self, ops: list[Operation]) -> dict[str, Any]:
        v = checker_lock.check(ops)
        return {"valid": v.valid, "acquisitions": v.acquisitions,
                "accepted_writes": v.accepted_writes, "overlaps": len(v.overlaps),
                "generation_violations": len(v.generation_violations),
                "fencing_violations": len(v.fencing_violations),
                "overlap_examples": [[a.process, b.process, a.start, b.start]
                                     for a, b in v.overlaps[:10]]}
