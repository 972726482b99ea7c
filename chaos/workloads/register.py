"""The register workload: linearizable read / write / compare-and-set on lock-service entries.

Each operation goes to a random key among a few. Reads are the service's default
(linearizable, ReadIndex); writes set a fresh value; a compare-and-set expects the version
the client last saw for the key. Errors map to `fail` only when the service surely did not
apply the operation (a version mismatch, a refused request, or any failed read); anything
else on a write (timeouts, lost connections, a leader change mid-request) is `info`. The
checker is the Wing-Gong-Lowe search per key over a versioned register.

Negative control (`unsafe`): a client answers reads from its own cache of what it last read
or wrote for the key (a stale-read bug), so other clients' writes go unseen: the checker
must find the history not linearizable.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from chaos.history import Operation, OpType
from chaos.linearizability import VersionedRegister, check_per_key
from chaos.workloads.base import Workload, pace
from lockservice.async_client import AsyncLockClient
from lockservice.client_errors import RequestRejected


def classify(f: str, exc: BaseException) -> OpType:
    if f == "read" or isinstance(exc, RequestRejected):
        return OpType.FAIL
    return OpType.INFO


class RegisterWorkload(Workload):
    name = "register"

    async def open(self) -> None:
        self._values = itertools.count(1)
        self._seen: dict[tuple[int, str], int] = {}  # the version a client last saw
        self._cache: dict[tuple[int, str], Any] = {}  # unsafe mode's stale answers

    async def client(self, process: int, stop: asyncio.Event, pause_s: float) -> None:
        env = self.env
        members = list(env.lock_members)
        env.rng.shuffle(members)
        async with AsyncLockClient(members, request_timeout_s=env.op_timeout_s) as c:
            while await pace(stop, pause_s, env.rng):
                key = f"reg-{env.rng.randrange(self.keys)}"
                await self._one(c, process, key)

    async def _one(self, c: AsyncLockClient, process: int, key: str) -> None:
        env, rng = self.env, self.env.rng
        f = rng.choice(["read", "read", "write", "cas"])
        mine = (process, key)
        if f == "read":

            async def call() -> Any:
                if env.unsafe and mine in self._cache:
                    return self._cache[mine]
                got = await c.get(key)
                return None if got is None else [int(got.value), got.version]

            kind, result = await env.recorder.perform(process, f, key, None, call, classify,
                                                      timeout_s=env.op_timeout_s)
            if kind is OpType.OK:
                self._seen[mine] = result[1] if result else 0
                self._cache[mine] = result
            return
        value = next(self._values)
        if f == "write":
            kind, version = await env.recorder.perform(
                process, f, key, value, lambda: c.put(key, b"%d" % value), classify,
                timeout_s=env.op_timeout_s)
        else:
            expected = self._seen.get(mine, 0)
            kind, version = await env.recorder.perform(
                process, "cas", key, [expected, value],
                lambda: c.cas(key, b"%d" % value, expected), classify,
                timeout_s=env.op_timeout_s)
        if kind is OpType.OK:
            self._seen[mine] = version
            self._cache[mine] = [value, version]

    def check(self, ops: list[Operation]) -> dict[str, Any]:
        verdicts = check_per_key(ops, VersionedRegister)
        return {
            "valid": all(v.valid for v in verdicts.values()),
            "keys": {str(k): {"valid": v.valid, "operations": v.operations,
                              "explored": v.explored,
                              "stuck": [_show(o) for o in v.stuck]}
                     for k, v in verdicts.items()},
        }


def _show(op: Operation) -> str:
    return f"p{op.process} {op.f} {op.value!r} -> {op.result!r} ({op.type.value})"
