"""The lock server: one Raft member running the lock table, with the leader's duties.

Theory of operation. `LockServer` owns a `raft.driver.Driver` and the `LockStateMachine` it
applies into (through `_Applier`, which also wakes waiting requests, lockservice/signals.py).
Time enters the table only as the `now` of commands this member proposes while it is the
leader: its wall clock in milliseconds (the table keeps the maximum it has seen).

- Leadership (Chubby §2.9): when this member becomes leader of term T it proposes
  GrantFreshLeases(now) before anything else; until that is applied in T it proposes nothing
  (requests wait up to `leader_wait_s`), so no session is judged by the new leader's clock
  before it has had a fresh lease. Only then does the expiry timer run. The fresh leases
  all end together, so this leader answers each session's first KeepAlive at once instead
  of holding it (`fresh_sessions`): renewals spread out as the clients arrive, rather than
  every held poll falling due at the same instant a third of a TTL before that shared end.
- Expiry: every `expire_interval_s` (default: one Raft tick) the leader proposes
  ExpireSessions(now) when a lease it knows has ended or a lock-delay with waiters has ended
  (the command moves the clock, which grants those waiters). Nothing is proposed while
  everything is quiet.
- Writes (lockservice/operations.py) run on the leader; elsewhere they raise NoLeader with
  the leader's id, and the HTTP layer forwards them. Linearizable reads wait for a ReadIndex
  (they work on any member: the core asks the leader); stale reads use the local table.

Mounting (lockservice/node.py does exactly this; so does `kv serve --lock-id`):

    server = LockServer.open(node_id=1, addresses={1: "h:p", ...}, data_dir="DIR/lock")
    app.add_routes(server.routes())          # /lock/v1/... and the Raft endpoints
    runner = web.AppRunner(app, handler_cancellation=True)
    await server.start(); ...; await server.stop()

`handler_cancellation=True` matters: a long poll or waiting acquire whose client went away
is cancelled at once (a waiting acquire then leaves the queue); without it they are noticed
only when their wait ends (a held KeepAlive then still extends nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp
from aiohttp import web

from lockservice import commands as c
from lockservice.errors import NoLeader, RequestRefused, ServerError, Unavailable
from lockservice.events import EventKind
from lockservice.fsm import LockStateMachine
from lockservice.limits import Limits
from lockservice.operations import Operations
from lockservice.results import Refused, Result
from lockservice.sequencer import Sequencer
from lockservice.signals import MAX_TIME, Signals
from raft.config import Config
from raft.driver import Driver
from raft.driver_errors import ProposalLost, ProposalOutcomeUnknown
from raft.errors import NotLeader, RaftError
from raft.server import raft_routes
from raft.transport import peer_headers, source_address

log = logging.getLogger(__name__)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Applied:
    """What the proposer of a command gets: the result and the table clock just after it."""

    __slots__ = ("clock", "result")

    def __init__(self, result: Result, clock: int) -> None:
        self.result, self.clock = result, clock


class _Applier:
    """The driver's state machine: the lock table plus the wake-ups of waiting requests."""

    def __init__(self, fsm: LockStateMachine, signals: Signals) -> None:
        self.fsm, self.signals = fsm, signals

    def apply(self, index: int, command: bytes) -> Applied:
        result = self.fsm.apply(index, command)
        self.signals.on_result(result)
        return Applied(result, self.fsm.clock)

    def snapshot(self) -> bytes:
        return self.fsm.snapshot()

    def restore(self, data: bytes) -> None:
        self.fsm.restore(data)
        self.signals.wake_all()


class LockServer(Operations):
    def __init__(self, driver: Driver, fsm: LockStateMachine, signals: Signals, *,
                 expire_interval_s: float | None = None, leader_wait_s: float = 3.0,
                 max_hold_s: float = 30.0) -> None:
        self.driver, self.fsm, self.signals = driver, fsm, signals
        self.id = driver.id
        # Also how soon a new leader notices it leads and grants fresh leases.
        self.expire_interval_s = expire_interval_s or driver.tick_s
        self.leader_wait_s = leader_wait_s
        self.max_hold_s = max_hold_s  # longest a KeepAlive long-poll is held
        self.fresh_term = 0  # the term in which this member's GrantFreshLeases was applied
        self.http: aiohttp.ClientSession | None = None  # forwarding to the leader
        self._task: asyncio.Task[None] | None = None
        self._chores: set[asyncio.Task[Any]] = set()  # fire-and-forget proposals
        self._next_expiry = 0  # no lease known to this leader ends before this (ms)
        # Sessions whose lease is still the one this leader's GrantFreshLeases gave them all
        # at once: their first KeepAlive here is answered at once (operations.hold_ms).
        self.fresh_sessions: set[int] = set()
        self._ready_changed = asyncio.Event()  # set (then replaced) when readiness changes
        self._change_listeners: list[Callable[[EventKind, str], None]] = []
        fsm.change_listener = self._on_change

    @classmethod
    def open(cls, *, node_id: int, addresses: dict[int, str], data_dir: str,
             tick_s: float = 0.04, election_ticks: int = 10, sync: bool = True,
             limits: Limits | None = None, snapshot_threshold: int = 10_000,
             seed: int | None = None, tls: ssl.SSLContext | None = None,
             **tuning: Any) -> LockServer:
        """Recover (or create) the member's Raft storage in `data_dir`; all of `addresses`
        are the voters. `tuning`: expire_interval_s, leader_wait_s, max_hold_s."""
        fsm = LockStateMachine(limits)
        signals = Signals(fsm)
        driver = Driver.open(
            node_id=node_id, addresses=addresses, data_dir=data_dir,
            state_machine=_Applier(fsm, signals), initial_voters=set(addresses),
            tick_s=tick_s, config=Config(election_tick=election_ticks),
            snapshot_threshold=snapshot_threshold, sync=sync, seed=seed, tls=tls,
        )
        return cls(driver, fsm, signals, **tuning)

    def routes(self) -> list[web.RouteDef]:
        from lockservice.http_api import lock_routes  # the HTTP layer sits on top of this

        return [*lock_routes(self), *raft_routes(self.driver.id, self.driver.deliver)]

    @property
    def peer_tls(self) -> ssl.SSLContext | None:
        """The client TLS context of calls to other members (Raft, forwarding); None: HTTP."""
        return getattr(self.driver.transport, "tls", None)

    async def start(self) -> None:
        local = source_address(self.driver.addresses.get(self.driver.id, ""))
        # No pool limit (aiohttp's default is 100): relayed long polls are held at the leader
        # for up to `max_hold_s`, and a bounded pool made every other relayed request queue
        # behind them (sessions expired). In-flight relays are bounded by the clients'
        # own connections to this member.
        connector = aiohttp.TCPConnector(local_addr=local, ssl=self.peer_tls or True, limit=0)
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None),
                                          connector=connector, headers=peer_headers())
        await self.driver.start()
        self._task = asyncio.get_running_loop().create_task(self._leader_duties())

    def _background(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run `work` (a proposal nobody awaits) to its end; its failure is only logged."""

        async def run() -> None:
            try:
                await work
            except (RaftError, ServerError) as exc:
                log.info("member %d: background proposal failed: %s", self.id, exc)

        task = asyncio.get_running_loop().create_task(run())
        self._chores.add(task)
        task.add_done_callback(self._chores.discard)

    async def stop(self) -> None:
        for chore in list(self._chores):
            chore.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.fresh_term = 0
        self.signals.wake_all()
        await self.driver.stop()
        if self.http is not None:
            await self.http.close()
            self.http = None

    # -- leadership ----------------------------------------------------------------------

    @property
    def term(self) -> int:
        return self.driver.core.hard_state.term

    def is_ready_leader(self) -> bool:
        return self.driver.is_leader and self.fresh_term == self.term

    def leader(self) -> dict[str, Any]:
        lid = self.driver.leader_id or None
        return {"leader": lid, "address": self.driver.leader_address(), "term": self.term}

    async def lead(self) -> None:
        """Return once this member may propose (leader with fresh leases granted), or raise
        NoLeader naming the leader when another member is it (or none is known in time)."""
        deadline = time.monotonic() + self.leader_wait_s
        while not self.is_ready_leader():
            lid = self.driver.leader_id
            if lid and lid != self.id:
                raise NoLeader(f"member {self.id} is not the leader", lid)
            left = deadline - time.monotonic()
            if left <= 0 or self._task is None:
                raise NoLeader(f"member {self.id} knows no leader yet", lid or None)
            # Woken as soon as this member is ready; at least every tick, to see a leader
            # elected elsewhere.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(left, self.driver.tick_s)):
                    await self._ready_changed.wait()

    async def next_leader(self, old_leader: int, old_term: int, deadline: float) -> bool:
        """Wait until a leader other than `old_leader` (or it again, in a later term than
        `old_term`) is known; False if none is by `deadline` (time.monotonic())."""
        while True:
            lid = self.driver.leader_id
            if lid and (lid != old_leader or self.term > old_term):
                return True
            if time.monotonic() >= deadline or self._task is None:
                return False
            await asyncio.sleep(self.driver.tick_s / 2)

    def _readiness_changed(self) -> None:
        self._ready_changed.set()
        self._ready_changed = asyncio.Event()

    async def _leader_duties(self) -> None:
        changed = self.driver.leadership_changed
        while True:
            # Every interval, and at once when leadership changes (a new leader grants fresh
            # leases without waiting out the interval: fail-over time).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.expire_interval_s):
                    await changed.wait()
            changed.clear()
            try:
                if not self.driver.is_leader:
                    if self.fresh_term:
                        self.fresh_term = 0
                        self.fresh_sessions = set()
                        self._readiness_changed()
                        self.signals.wake_all()  # held requests answer now, not at their end
                elif self.fresh_term != self.term:
                    term = self.term
                    self._next_expiry = 0  # scan afresh in this term
                    await self.propose(c.GrantFreshLeases(now_ms()), ready=False)
                    if self.driver.is_leader and self.term == term:
                        self.fresh_sessions = set(self.fsm.sessions)
                        self.fresh_term = term
                        self._readiness_changed()
                        log.info("member %d leads term %d; fresh leases granted", self.id, term)
                elif self._expiry_due(now_ms()):
                    await self.propose(c.ExpireSessions(now_ms()))
            except (RaftError, NoLeader, Unavailable) as exc:
                log.info("member %d: leader duty not done: %s", self.id, exc)

    def _expiry_due(self, now: int) -> bool:
        """Whether a lease or a lock-delay with waiters has ended by `now`.

        Leases only grow (KeepAlive, GrantFreshLeases) except that new sessions start, so
        the scan of all sessions runs only once the earliest lease end seen so far, or that
        of a session opened since (`signals.earliest_new`), has come."""
        fsm = self.fsm
        if fsm.delayed and any(fsm.locks[n].waiters and fsm.locks[n].delay_until <= now
                               for n in fsm.delayed):
            return True
        if now < min(self._next_expiry, self.signals.earliest_new):
            return False
        self.signals.earliest_new = MAX_TIME
        self._next_expiry = min((s.expires_at for s in fsm.sessions.values()), default=MAX_TIME)
        return self._next_expiry <= now

    # -- proposing and reading -----------------------------------------------------------

    async def propose(self, cmd: c.Command, *, ready: bool = True) -> Applied:
        """Replicate `cmd` and return its outcome; a Refused result raises RequestRefused."""
        if ready and not self.is_ready_leader():
            raise NoLeader(f"member {self.id} is not the leader", self.driver.leader_id or None)
        try:
            applied: Applied = await self.driver.propose(c.encode(cmd))
        except NotLeader as exc:
            raise NoLeader(str(exc), exc.leader or None) from None
        except (ProposalOutcomeUnknown, ProposalLost) as exc:
            raise Unavailable(str(exc), may_have_applied=exc.may_have_applied) from None
        except RaftError as exc:
            raise Unavailable(str(exc), may_have_applied=False) from None
        if isinstance(applied.result, Refused):
            raise RequestRefused(applied.result)
        return applied

    async def read_barrier(self) -> None:
        """Wait until the local table reflects every write acknowledged before this call."""
        try:
            await self.driver.read_index()
        except NotLeader as exc:
            raise NoLeader(f"member {self.id} knows no leader for a read", exc.leader) from None
        except RaftError as exc:
            raise Unavailable(f"read not confirmed: {exc}", may_have_applied=False) from None

    def add_change_listener(self, listener: Callable[[EventKind, str], None]) -> None:
        """Call `listener(kind, name)` for every event of the table as this member applies it
        (e.g. `SequencerCache.on_change`: a voter's fencing cache forgets a lock's answers
        when its holders change). It runs inside apply: it must be quick and not raise."""
        self._change_listeners.append(listener)

    def _on_change(self, kind: EventKind, name: str) -> None:
        for listener in self._change_listeners:
            try:
                listener(kind, name)
            except Exception:
                log.exception("member %d: a change listener failed", self.id)

    async def check_sequencer(self, token: str) -> bool:
        """Whether the sequencer `token` is still held (linearizable; for fencing).

        Raises BadSequencerToken for a malformed token, NoLeader / Unavailable when no read
        can be confirmed."""
        seq = Sequencer.from_token(token)
        await self.read_barrier()
        return self.fsm.check_sequencer(seq)

    def status(self) -> dict[str, Any]:
        fsm = self.fsm
        return {
            **self.driver.status(),
            "ready_leader": self.is_ready_leader(),
            "clock": fsm.clock,
            "sessions": len(fsm.sessions),
            "locks": len(fsm.locks),
            "entries": len(fsm.entries),
            "generation": fsm.generation,
            "waiting_requests": self.signals.waiting_sessions(),
        }
