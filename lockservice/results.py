"""What `apply()` returns: one frozen dataclass per outcome, never a dict or a tuple.

The rule: `apply()` never raises. A command that cannot take effect returns
`Refused(reason, detail)` and changes nothing, except that a well-formed command carrying
`now` still advances the table's clock (time passing is the leader's statement, true
whatever the request's fate, and it may end lock-delays and grant their waiters). Bytes that
do not decode change nothing at all. Every replica refuses the same way.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from lockservice.sequencer import Sequencer


class Reason(enum.Enum):
    BAD_COMMAND = "bad command"
    BAD_NAME = "bad name"
    BAD_VALUE = "bad value"
    BAD_TTL = "bad ttl"
    BAD_LOCK_DELAY = "bad lock delay"
    UNKNOWN_SESSION = "unknown session"
    SESSION_EXISTS = "session exists"
    LEASE_ENDED = "lease ended"
    LEASE_NOT_ENDED = "lease not ended"
    LOCK_BUSY = "lock busy"
    LOCK_DELAY = "lock delay"
    ALREADY_HOLDER = "already holder"
    ALREADY_WAITING = "already waiting"
    NOT_HOLDER = "not holder"
    NOT_WAITING = "not waiting"
    NOT_WATCHING = "not watching"
    NOT_FOUND = "not found"
    VERSION_MISMATCH = "version mismatch"
    TOO_MANY_SESSIONS = "too many sessions"
    TOO_MANY_CLIENT_SESSIONS = "too many sessions for this client"
    TOO_MANY_WAITERS = "too many waiters"
    TOO_MANY_LOCKS = "too many locks for this session"
    TOO_MANY_WATCHES = "too many watches"
    TOO_MANY_ENTRIES = "too many entries"


@dataclass(frozen=True, slots=True)
class Refused:
    reason: Reason
    detail: str


@dataclass(frozen=True, slots=True)
class SessionOpened:
    session: int
    expires_at: int


@dataclass(frozen=True, slots=True)
class LeaseExtended:
    expires_at: int


@dataclass(frozen=True, slots=True)
class SessionClosed:
    session: int


@dataclass(frozen=True, slots=True)
class SessionsExpired:
    sessions: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class FreshLeases:
    sessions: int


@dataclass(frozen=True, slots=True)
class Granted:
    sequencer: Sequencer


@dataclass(frozen=True, slots=True)
class Queued:
    position: int  # requests ahead of this one in the lock's FIFO (0: next in line)


@dataclass(frozen=True, slots=True)
class Released:
    name: str


@dataclass(frozen=True, slots=True)
class WaitCancelled:
    name: str


@dataclass(frozen=True, slots=True)
class SequencerStatus:
    current: bool


@dataclass(frozen=True, slots=True)
class Entry:
    name: str
    value: bytes
    version: int
    ephemeral_session: int | None


@dataclass(frozen=True, slots=True)
class Written:
    version: int


@dataclass(frozen=True, slots=True)
class Deleted:
    name: str


@dataclass(frozen=True, slots=True)
class EntryValue:
    entry: Entry | None


@dataclass(frozen=True, slots=True)
class Watching:
    prefix: str


@dataclass(frozen=True, slots=True)
class Unwatched:
    prefix: str


Result = (
    Refused
    | SessionOpened
    | LeaseExtended
    | SessionClosed
    | SessionsExpired
    | FreshLeases
    | Granted
    | Queued
    | Released
    | WaitCancelled
    | SequencerStatus
    | Written
    | Deleted
    | EntryValue
    | Watching
    | Unwatched
)
