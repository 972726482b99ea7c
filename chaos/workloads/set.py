"""The set workload: unique adds to a few keys of the Dynamo store; no acknowledged add lost.

A value is a JSON list of integers. An add reads the key (every sibling and the context),
takes the union of the siblings, adds a fresh element and writes it back with the context,
so concurrent adds become siblings that the next add (or the final read) merges: Riak's
set-by-union pattern. The add is `ok` once W replicas acknowledged; a QuorumFailed that
says the write may have been applied, a timeout or a lost connection is `info`; an error
that says nothing was written (a failed read before the write, a refused request) is
`fail`. After the heal and the recovery period, a final read with R = every replica takes
the union of what the replicas hold, and the set checker compares. Then the convergence
check (chaos/convergence.py): after anti-entropy, every replica of every key holds the
same siblings; the run is valid only if both hold.

Negative control (`unsafe`): an add writes only its own element with the context it read,
so it replaces every element the read saw: the checker must report acknowledged adds lost.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

from chaos import checker_set, convergence
from chaos.history import Operation, OpType
from chaos.workloads.base import Workload, pace
from kvstore.client import AsyncClient
from kvstore.errors import InvalidRequest, QuorumFailed, SiblingLimitExceeded

FINAL_TRIES = 20


def classify(f: str, exc: BaseException) -> OpType:
    if isinstance(exc, QuorumFailed):
        return OpType.INFO if exc.indeterminate else OpType.FAIL
    if isinstance(exc, InvalidRequest | SiblingLimitExceeded):
        return OpType.FAIL
    return OpType.INFO


def union(values: list[bytes]) -> set[int]:
    out: set[int] = set()
    for v in values:
        out.update(json.loads(v))
    return out


class SetWorkload(Workload):
    name = "set"

    async def open(self) -> None:
        self._elements = itertools.count(1)
        self._client = AsyncClient(self.env.kv_nodes, timeout=self.env.op_timeout_s)

    async def close(self) -> None:
        await self._client.close()

    async def client(self, process: int, stop: asyncio.Event, pause_s: float) -> None:
        nodes = list(self.env.kv_nodes)
        self.env.rng.shuffle(nodes)
        async with _closing(AsyncClient(nodes, timeout=self.env.op_timeout_s)) as c:
            while await pace(stop, pause_s, self.env.rng):
                key = f"set-{self.env.rng.randrange(self.keys)}"
                element = next(self._elements)
                await self.env.recorder.perform(
                    process, "add", key, element,
                    lambda c=c, key=key, element=element: self._add(c, key, element),
                    classify, timeout_s=2 * self.env.op_timeout_s)

    async def _add(self, c: AsyncClient, key: str, element: int) -> None:
        try:
            got = await c.get(key.encode())
        except Exception as exc:
            raise InvalidRequest(f"the read before the add failed: {exc}") from exc
        # unsafe: replace what was read instead of adding to it (its context covers it)
        members = {element} if self.env.unsafe else union(got.values) | {element}
        await c.put(key.encode(), json.dumps(sorted(members)).encode(), context=got.context)

    async def final(self) -> None:
        await self._final_reads()
        keys = [f"set-{k}".encode() for k in range(self.keys)]
        await self.env.recorder.perform(
            -1, "converge", None, None, lambda: convergence.converge(self.env.kv_nodes, keys),
            lambda f, e: OpType.FAIL, timeout_s=120)

    async def _final_reads(self) -> None:
        rec = self.env.recorder
        for k in range(self.keys):
            key = f"set-{k}"
            for _ in range(FINAL_TRIES):
                kind, _ = await rec.perform(-1, "final-read", key, None,
                                            lambda key=key: self._final_read(key),
                                            lambda f, e: OpType.FAIL,
                                            timeout_s=2 * self.env.op_timeout_s)
                if kind is OpType.OK:
                    break
                await asyncio.sleep(1)

    async def _final_read(self, key: str) -> list[int]:
        got = await self._client.get(key.encode(), r=3)
        return sorted(union(got.values))

    def check(self, ops: list[Operation]) -> dict[str, Any]:
        v = checker_set.check(ops)
        converge = [o for o in ops if o.f == "converge"]
        # convergence: the last check found every replica of every key equal
        converged = bool(converge) and converge[-1].ok and converge[-1].result == []
        return {"valid": v.valid and converged, "converged": converged,
                "diverged_keys": converge[-1].result if converge else None,
                "attempted": v.attempted, "acknowledged": v.acknowledged,
                "ok": v.ok, "lost": len(v.lost), "unexpected": len(v.unexpected),
                "recovered": len(v.recovered), "failed_but_present": len(v.failed_but_present),
                "unread_keys": list(v.unread_keys),
                "lost_examples": [list(x) for x in v.lost[:20]]}


class _closing:
    def __init__(self, client: AsyncClient) -> None:
        self.client = client

    async def __aenter__(self) -> AsyncClient:
        return self.client

    async def __aexit__(self, *exc: object) -> None:
        await self.client.close()
