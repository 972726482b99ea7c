"""The request path: any node coordinates a client's get, put or delete across the replicas.

Theory of operation (Dynamo §4.5, §4.6, §5; shared/DESIGN.md "Put, step by step")

- Where: `quorum.plan` over the current ring and the liveness view. A node is *down* when
  the failure detector says so (`is_alive`) or when this node's calls to it failed in
  the last second (`Peers.suspect`); this node never calls itself down.
- Put/delete: the coordinator must be a primary replica of the key (dotted version vectors
  need the writer's own durable state). If this node is one, it runs
  `ReplicaStore.coordinate` (the new version gets this node's dot; durable before it
  returns) and ships the whole resulting state in parallel: `merge` to the other up
  primaries, `hint {owner}` to the fallbacks of down primaries. A primary that fails
  during the request is replaced by the next spare node clockwise, which gets a hint for
  it (sloppy quorum). The answer comes once W nodes hold the write (the coordinator's own
  copy counts); past the deadline, or once W can no longer be reached, it is
  QuorumFailed(indeterminate=True): this node already applied the write. Replication goes
  on in the background after the answer until every target answered or the deadline.
- Otherwise the write is forwarded with the internal `coordinate` op to the first up
  primary, then the next when one surely did not apply it (`NotApplied`: refused
  connection, or it does not think it is a replica); a forwarded write is never forwarded
  again, so ring disagreements cannot loop. Any other failure of a forward may have
  applied the write: QuorumFailed(indeterminate=True). No primary up: QuorumFailed with
  indeterminate=False (nothing was written anywhere).
- Get: `get` to the up primaries and the fallbacks (a fallback answers with its hints),
  and to the next spare for each that fails; answer after R replies with
  `vclock.merge_all` of them and its context. The remaining replies are awaited in the
  background until the deadline; every primary whose reply differs from the merge of all
  replies gets that merge (read repair; fallbacks and spares are never repaired, their
  copies are hints, not replicas).
- A ring with fewer members than N holds fewer than N replicas of a key (a one-node
  development cluster holds one): R and W are capped at the length of the key's
  preference list, so they ask for every replica that exists, never for more.
- Fencing: a write carrying a lock-service sequencer is checked with `fence(token)`
  (raises SequencerRejected) before anything is written, on the node the client called;
  a forwarded write is checked again where it is coordinated when that node has a fence
  (without one, it trusts its peer's check). A node without a lock service answers
  InvalidRequest to a client's sequencer.
- Timestamps for the new versions: wall-clock milliseconds, kept strictly increasing on
  this node (pruning and LWW order by them; causality never does).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from kvstore import quorum, vclock, wire
from kvstore.errors import InvalidRequest, NodeUnavailable, QuorumFailed
from kvstore.fanout import Calls, collect
from kvstore.peers import Peers
from kvstore.ring import Ring
from kvstore.vclock import SiblingSet, VersionVector

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 5.0
REPAIR_TIMEOUT_S = 2.0  # read repair sends after the answer get this long
FORWARD_MARGIN_S = 0.05  # a forwarded write's own deadline ends this much before ours
DEFAULT_MAX_VALUE = 1 << 20


@dataclass(frozen=True)
class GetResult:
    state: SiblingSet
    context: bytes  # vclock.context(state)


@dataclass(frozen=True)
class PutResult:
    state: SiblingSet
    context: bytes


class Coordinator:
    """Coordinates reads and writes from this node. See the module docstring."""

    def __init__(self, name: str, *, replica, hints, peers: Peers,
                 ring: Callable[[], Ring], is_alive: Callable[[str], bool],
                 n: int = 3, r: int = 2, w: int = 2,
                 timeout_s: float = DEFAULT_TIMEOUT_S,
                 fence: Callable[[str], Awaitable[object]] | None = None,
                 max_value: int = DEFAULT_MAX_VALUE) -> None:
        self.name, self.replica, self.hints, self.peers = name, replica, hints, peers
        self._ring, self._is_alive = ring, is_alive
        self.n, self.r, self.w, self.timeout_s = n, r, w, timeout_s
        self.fence, self.max_value = fence, max_value
        self._last_ts = 0
        self._down: frozenset[str] = frozenset()
        self._tasks: set[asyncio.Task] = set()
        self.counts = {"get": 0, "put": 0, "delete": 0, "forwarded": 0, "quorum_failed": 0,
                       "read_repairs": 0, "hinted": 0}

    # -- public ---------------------------------------------------------------------------

    async def get(self, key: bytes, *, r: int | None = None,
                  timeout_s: float | None = None) -> GetResult:
        self._check_key(key)
        r = quorum.check_level("r", r, self.r, self.n)
        deadline = self._deadline(timeout_s)
        plan = self._plan(key)
        self.counts["get"] += 1
        r = min(r, len(plan.primaries)) or r
        tally = quorum.Tally(r, list(plan.targets))
        replies: dict[str, SiblingSet] = {}
        calls = Calls(self._spawn)
        for node in plan.targets:
            calls.send(node, self._get_one(node, key, deadline))
        spares = list(plan.spares)

        def replace(failed: str) -> None:  # the next healthy node may hold hints for it
            if spares:
                tally.add(spare := spares.pop(0))
                calls.send(spare, self._get_one(spare, key, deadline))
        await collect(tally, calls, deadline, replies, on_fail=replace)
        if not tally.reached:
            self.counts["quorum_failed"] += 1
            raise QuorumFailed("get", r, len(tally.acked), indeterminate=False,
                               detail=self._why(tally, plan))
        merged = vclock.merge_all(replies.values())
        self._spawn(self._repair(key, plan, tally, calls, dict(replies), deadline))
        return GetResult(merged, vclock.context(merged))

    async def put(self, key: bytes, value: bytes, *, context: bytes | None = None,
                  w: int | None = None, timeout_s: float | None = None,
                  sequencer: str | None = None) -> PutResult:
        req = wire.CoordinateRequest("put", key, value, context, w, None, sequencer)
        return await self._write(req, timeout_s, forwarded=False)

    async def delete(self, key: bytes, *, context: bytes | None = None,
                     w: int | None = None, timeout_s: float | None = None,
                     sequencer: str | None = None) -> PutResult:
        req = wire.CoordinateRequest("delete", key, b"", context, w, None, sequencer)
        return await self._write(req, timeout_s, forwarded=False)

    async def coordinate(self, req: wire.CoordinateRequest) -> SiblingSet:
        """A write another node forwarded here (the internal `coordinate` op)."""
        timeout = None if req.timeout_ms is None else req.timeout_ms / 1000
        return (await self._write(req, timeout, forwarded=True)).state

    async def local_get(self, key: bytes) -> SiblingSet:
        """This node's copy: its replica state synced with any hints it holds for the key."""
        state = await self.replica.get(key)
        if not self.hints.owners():  # the healthy cluster's case: no second look-up
            return state
        hinted = await self.hints.get(key)
        return vclock.sync(state, hinted) if hinted.clock.entries else state

    async def close(self) -> None:
        """Cancel background replication and repair (their deadlines bound them anyway)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def stats(self) -> dict:
        return {**self.counts, "background": len(self._tasks), "down": sorted(self._down)}

    # -- writes ---------------------------------------------------------------------------

    async def _write(self, req: wire.CoordinateRequest, timeout_s: float | None, *,
                     forwarded: bool) -> PutResult:
        self._check_key(req.key)
        if not isinstance(req.value, bytes) or len(req.value) > self.max_value:
            raise InvalidRequest(f"value must be bytes of at most {self.max_value}")
        ctx = VersionVector() if req.context is None else vclock.decode_context(req.context)
        w = quorum.check_level("w", req.w, self.w, self.n)
        deadline = self._deadline(timeout_s)
        if req.sequencer is not None:
            if self.fence is not None:
                await self.fence(req.sequencer)
            elif not forwarded:
                raise InvalidRequest("this cluster has no lock service")
        plan = self._plan(req.key)
        self.counts[req.op] += 1
        w = min(w, len(plan.primaries)) or w
        if self.name in plan.primaries:
            state = await self._coordinate_here(req, ctx, w, plan, deadline)
            return PutResult(state, vclock.context(state))
        if forwarded:
            raise wire.NotApplied(self.name, "not a replica of this key under its ring")
        return await self._forward(req, w, plan, deadline)

    async def _coordinate_here(self, req: wire.CoordinateRequest, ctx: VersionVector,
                               w: int, plan: quorum.Plan, deadline: float) -> SiblingSet:
        state = await self.replica.coordinate(req.key, ctx, req.value,
                                              deleted=req.op == "delete",
                                              timestamp=self._timestamp())
        others = [p for p in plan.up if p != self.name]
        owners = {p: None for p in others} | {f.node: f.for_node for f in plan.fallbacks}
        tally = quorum.Tally(w, [self.name, *owners])
        tally.ok(self.name)
        calls = Calls(self._spawn)
        for node, owner in owners.items():
            self._send_write(calls, node, owner, req.key, state, deadline)
        answered = asyncio.get_running_loop().create_future()
        self._spawn(self._replicate(req.key, state, tally, calls, owners, list(plan.spares),
                                    deadline, answered))
        if not await answered:
            self.counts["quorum_failed"] += 1
            raise QuorumFailed(req.op, w, len(tally.acked), indeterminate=True,
                               detail=self._why(tally, plan))
        logger.debug("%s %r acked by %s", req.op, req.key[:64], tally.acked)
        return state

    def _send_write(self, calls: Calls, node: str, owner: str | None, key: bytes,
                    state: SiblingSet, deadline: float) -> None:
        left = deadline - time.monotonic()
        if owner is None:
            call = self.peers.merge(node, key, state, left)
        else:
            self.counts["hinted"] += 1
            call = self.peers.hint(node, owner, key, state, left)
        calls.send(node, call)

    async def _replicate(self, key: bytes, state: SiblingSet, tally: quorum.Tally,
                         calls: Calls, owners: dict[str, str | None],
                         spares: list[str], deadline: float, answered: asyncio.Future) -> None:
        """Count acks, replace failed targets with spares; resolve `answered` once decided."""
        while not tally.finished:
            if (tally.reached or tally.hopeless) and not answered.done():
                answered.set_result(tally.reached)
            results = await calls.next(deadline)
            if not results:
                break  # the deadline passed
            for node, reply in results:
                if not isinstance(reply, BaseException):
                    tally.ok(node)
                    continue
                tally.fail(node)
                if spares:  # a stand-in stores a hint for the primary the failed node served
                    spare, owner = spares.pop(0), owners[node] or node
                    owners[spare] = owner
                    tally.add(spare)
                    self._send_write(calls, spare, owner, key, state, deadline)
        if not answered.done():
            answered.set_result(tally.reached)

    async def _forward(self, req: wire.CoordinateRequest, w: int, plan: quorum.Plan,
                       deadline: float) -> PutResult:
        self.counts["forwarded"] += 1
        for node in plan.up:
            left = deadline - time.monotonic()
            fwd = wire.CoordinateRequest(req.op, req.key, req.value, req.context, w,
                                         max(1, int((left - FORWARD_MARGIN_S) * 1000)),
                                         req.sequencer)
            try:
                state = await self.peers.coordinate(node, fwd, left)
            except wire.NotApplied as exc:
                logger.debug("forward of %r to %s not applied: %s", req.key[:64], node, exc)
                continue
            except NodeUnavailable as exc:
                self.counts["quorum_failed"] += 1
                raise QuorumFailed(req.op, w, 0, indeterminate=True,
                                   detail=f"coordinator {node}: {exc.detail}") from None
            return PutResult(state, vclock.context(state))
        self.counts["quorum_failed"] += 1
        raise QuorumFailed(req.op, w, 0, indeterminate=False,
                           detail=f"no primary replica reachable among {list(plan.primaries)}")

    # -- reads ----------------------------------------------------------------------------

    async def _get_one(self, node: str, key: bytes, deadline: float) -> SiblingSet:
        if node == self.name:
            return await self.local_get(key)
        return await self.peers.get(node, key, deadline - time.monotonic())

    async def _repair(self, key: bytes, plan: quorum.Plan, tally: quorum.Tally,
                      calls: Calls, replies: dict[str, SiblingSet], deadline: float) -> None:
        """Wait for late replies, then send the merge of all to primaries that were behind."""
        await collect(tally, calls, deadline, replies, until_finished=True)
        primaries = {n: s for n, s in replies.items() if n in plan.primaries}
        merged = vclock.merge_all(replies.values())
        until = time.monotonic() + REPAIR_TIMEOUT_S
        for node in quorum.stale(primaries, merged):
            self.counts["read_repairs"] += 1
            logger.debug("read repair of %r on %s", key[:64], node)
            try:
                if node == self.name:
                    await self.replica.merge(key, merged)
                else:
                    await self.peers.merge(node, key, merged, until - time.monotonic())
            except Exception as exc:  # repair is best effort; anti-entropy covers the rest
                logger.debug("read repair of %r on %s failed: %s", key[:64], node, exc)

    # -- plumbing -------------------------------------------------------------------------

    def _spawn(self, coro: Awaitable) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _plan(self, key: bytes) -> quorum.Plan:
        ring = self._ring()
        down = frozenset(m for m in ring.members if m != self.name
                         and (not self._is_alive(m) or self.peers.suspect(m)))
        if down != self._down:
            self._log_changes(self._down, down)
            self._down = down
        return quorum.plan(ring, key, self.n, down)

    def _log_changes(self, before: Iterable[str], after: frozenset[str]) -> None:
        for node in sorted(after - set(before)):
            logger.info("coordinator %s: %s is down, routing around it", self.name, node)
        for node in sorted(set(before) - after):
            logger.info("coordinator %s: %s is up again", self.name, node)

    def _deadline(self, timeout_s: float | None) -> float:
        if timeout_s is None:
            timeout_s = self.timeout_s
        if not isinstance(timeout_s, int | float) or not 0 < timeout_s <= 600:
            raise InvalidRequest(f"timeout must be in (0, 600] seconds: {timeout_s!r:.40}")
        return time.monotonic() + timeout_s

    def _timestamp(self) -> int:
        self._last_ts = max(time.time_ns() // 1_000_000, self._last_ts + 1)
        return self._last_ts

    @staticmethod
    def _check_key(key: bytes) -> None:
        if not isinstance(key, bytes) or not 1 <= len(key) <= wire.MAX_KEY_BYTES:
            raise InvalidRequest(f"key must be 1..{wire.MAX_KEY_BYTES} bytes")

    @staticmethod
    def _why(tally: quorum.Tally, plan: quorum.Plan) -> str:
        return (f"acked {tally.acked}, failed {tally.failed}, no answer from "
                f"{[t for t in tally.targets if t not in tally.acked + tally.failed]}, "
                f"preference list {list(plan.primaries)}")
