"""The election workload: clients campaign for one leadership; at most one leader at a time.

Every client has its own session and `Election` (lockservice/election.py). It campaigns
(waiting up to half the operation timeout), leads for a short random term while
`is_leader` holds, and resigns. A session that falls into jeopardy while leading ends the
belief at that instant (recorded as `lost`, as in the lock workload). The checker
(chaos/checker_lock.check_election) proves from the history that no two clients believed
they led at the same time.

Negative control (`unsafe`): a client whose campaign fails at once (try-only) leads anyway.
"""

from __future__ import annotations

import asyncio
from typing import Any

from chaos import checker_lock
from chaos.history import Operation, OpType
from chaos.workloads.lock import LockWorkload, classify
from lockservice.async_client import AsyncLockClient
from lockservice.election import Election

TERM_S = (0.05, 0.4)


class ElectionWorkload(LockWorkload):
    name = "election"

    async def _cycle(self, c: AsyncLockClient, process: int, name: str,
                     holding: dict[str, int]) -> bool:
        env, rec = self.env, self.env.recorder
        name = name.replace("lock-", "leader-")
        election = Election(c)

        async def campaign() -> int:
            won = await election.campaign(name, f"p{process}",
                                          timeout=0 if env.unsafe else env.op_timeout_s / 2)
            return won.generation

        kind, generation = await rec.perform(process, "campaign", name, None, campaign,
                                             classify, timeout_s=env.op_timeout_s)
        self._flush_lost(process)
        if kind is OpType.INFO:
            return False
        if kind is OpType.FAIL and not env.unsafe:
            return True
        if kind is OpType.FAIL:  # unsafe: lead without winning
            rec.add(OpType.INVOKE, process, "campaign", name)
            rec.add(OpType.OK, process, "campaign", name, -1)
            generation = -1
        holding[name] = generation
        if kind is OpType.OK and not election.is_leader:  # won, but the lease is in doubt
            holding.pop(name)
            self._lost_at[process][name] = rec.records[-1].time
            self._flush_lost(process)
            return False  # a fresh session: this one still has the grant
        await asyncio.sleep(env.rng.uniform(*TERM_S))
        self._flush_lost(process)
        if name in holding:
            holding.pop(name)
            kind, _ = await rec.perform(process, "resign", name, None, election.resign,
                                        classify, timeout_s=env.op_timeout_s)
            self._flush_lost(process)
            return kind is OpType.OK  # else a fresh session: the lock may still be held
        self._flush_lost(process)
        return True

    def check(self, ops: list[Operation]) -> dict[str, Any]:
        v = checker_lock.check_election(ops)
        return {"valid": v.valid, "terms": v.acquisitions, "overlaps": len(v.overlaps),
                "overlap_examples": [[a.process, b.process, a.start, b.start]
                                     for a, b in v.overlaps[:10]]}
