"""Wake-ups from the applied log to the requests that wait on it (private to server.py).

The state machine calls `on_event` synchronously while it applies a command (its
`event_listener` hook); `on_result` sees every result. Both only set asyncio events and
record grants: they never block and never raise, so the driver's apply loop stays fast.

Waiters are long-polling KeepAlives (woken by any event or the end of their session) and
waiting Acquires (woken by the LOCK_GRANTED event of their own request). A grant is recorded
with the table clock at which it happened only while someone waits for it, so nothing
accumulates for requests nobody waits on.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import TYPE_CHECKING

from lockservice.events import Event, EventKind
from lockservice.results import Result, SessionClosed, SessionOpened, SessionsExpired

if TYPE_CHECKING:
    from lockservice.fsm import LockStateMachine

MAX_TIME = 2**64  # later than any table time
REMEMBER_EXPIRED = 10_000  # expired session ids remembered, to answer 410 rather than 404


class Signals:
    def __init__(self, fsm: LockStateMachine) -> None:
        self.fsm = fsm
        self._waiters: dict[int, set[asyncio.Event]] = {}
        self._wanted: dict[tuple[int, str], int] = {}  # (session, lock) -> waiting acquires
        self.grants: dict[tuple[int, str], tuple[int, int]] = {}  # -> (generation, clock)
        self.expired: OrderedDict[int, None] = OrderedDict()
        self.earliest_new = MAX_TIME  # earliest lease end of sessions opened since the scan
        fsm.event_listener = self.on_event

    # -- called from apply ---------------------------------------------------------------

    def on_event(self, session: int, event: Event) -> None:
        if event.kind is EventKind.LOCK_GRANTED and (session, event.name) in self._wanted:
            self.grants[(session, event.name)] = (event.generation, self.fsm.clock)
        self.wake(session)

    def on_result(self, result: Result) -> None:
        if isinstance(result, SessionsExpired):
            for sid in result.sessions:
                self.expired[sid] = None
                self.wake(sid)
            while len(self.expired) > REMEMBER_EXPIRED:
                self.expired.popitem(last=False)
        elif isinstance(result, SessionClosed):
            self.wake(result.session)
        elif isinstance(result, SessionOpened):
            self.earliest_new = min(self.earliest_new, result.expires_at)

    # -- waiting -------------------------------------------------------------------------

    def wake(self, session: int) -> None:
        for ev in self._waiters.get(session, ()):
            ev.set()

    def wake_all(self) -> None:
        for evs in self._waiters.values():
            for ev in evs:
                ev.set()

    def subscribe(self, session: int) -> asyncio.Event:
        ev = asyncio.Event()
        self._waiters.setdefault(session, set()).add(ev)
        return ev

    def unsubscribe(self, session: int, ev: asyncio.Event) -> None:
        evs = self._waiters.get(session)
        if evs is not None:
            evs.discard(ev)
            if not evs:
                del self._waiters[session]

    def want_grant(self, session: int, name: str) -> None:
        key = (session, name)
        self._wanted[key] = self._wanted.get(key, 0) + 1

    def drop_grant(self, session: int, name: str) -> None:
        key = (session, name)
        left = self._wanted.get(key, 0) - 1
        if left > 0:
            self._wanted[key] = left
        else:
            self._wanted.pop(key, None)
            self.grants.pop(key, None)

    def waiting_sessions(self) -> int:
        return len(self._waiters)
