"""The mutable records inside the lock table (private to fsm.py and snapshot_format.py)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from lockservice.events import Event
from lockservice.sequencer import LockMode, Sequencer


@dataclass(slots=True)
class SessionRecord:
    id: int
    ttl_ms: int
    expires_at: int  # the lease ends at this table-clock time (ms)
    held: set[str] = field(default_factory=set)  # Invariant: names of locks it holds
    waiting: set[str] = field(default_factory=set)  # Invariant: names of locks it waits on
    ephemerals: set[str] = field(default_factory=set)  # entries that die with it
    watches: list[str] = field(default_factory=list)  # prefixes, in the order added
    events: deque[Event] = field(default_factory=deque)
    last_event_seq: int = 0
    dropped: int = 0
    client: str = ""  # who opened it (OpenClientSession), "" when not counted per client


@dataclass(slots=True)
class Holder:
    sequencer: Sequencer
    lock_delay_ms: int  # applied if this holder's session expires while holding


@dataclass(slots=True)
class Waiter:
    session: int
    mode: LockMode
    lock_delay_ms: int


@dataclass(slots=True)
class LockRecord:
    name: str
    # Invariant: all holders share one mode; at most one EXCLUSIVE holder.
    holders: dict[int, Holder] = field(default_factory=dict)  # session -> grant, grant order
    waiters: list[Waiter] = field(default_factory=list)  # FIFO
    delay_until: int = 0  # no grant while the table clock is below this (Chubby §2.4)

    def mode(self) -> LockMode | None:
        for h in self.holders.values():
            return h.sequencer.mode
        return None

    def compatible(self, mode: LockMode) -> bool:
        held = self.mode()
        return held is None or (held is LockMode.SHARED and mode is LockMode.SHARED)

    def idle(self) -> bool:
        return not self.holders and not self.waiters


@dataclass(slots=True)
class EntryRecord:
    value: bytes
    version: int
    ephemeral_session: int | None
