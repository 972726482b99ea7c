"""Events the state machine queues for sessions (Chubby §2.5), read by the KeepAlive long-poll.

A session receives the events whose `name` starts with one of its watch prefixes, plus
`LOCK_GRANTED` for its own queued requests and `LEADER_CHANGED` (name "") whatever it
watches. Each session numbers its
events 1, 2, 3, ...; a `KeepAlive(ack=n)` forgets those up to `n`. A queue holds at most
`Limits.max_events_per_session`; beyond that the oldest is dropped and counted.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class EventKind(enum.IntEnum):
    # In snapshots: do not change the values.
    LOCK_ACQUIRED = 1  # someone was granted `name` (generation set)
    LOCK_RELEASED = 2  # a holder released `name` or closed its session
    LOCK_GRANTED = 3  # to the waiter only: its queued request for `name` was granted
    ENTRY_CHANGED = 4  # entry `name` now has `version`
    ENTRY_DELETED = 5  # entry `name` was deleted (explicitly or with its ephemeral session)
    SESSION_EXPIRED = 6  # `session` expired while holding `name`, now under lock-delay
    LEADER_CHANGED = 7  # to every session: a new leader took over (Chubby's master fail-over)


@dataclass(frozen=True, slots=True)
class Event:
    seq: int
    kind: EventKind
    name: str
    session: int = 0  # the session the event is about (holder, granted waiter, expired one)
    generation: int = 0  # lock events: the generation of the grant
    version: int = 0  # entry events: the entry's version (0 when deleted)


@dataclass(frozen=True, slots=True)
class PendingEvents:
    events: tuple[Event, ...]
    dropped: int  # events dropped from this session's queue since it opened
