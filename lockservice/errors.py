"""Errors the lockservice package raises.

    LockServiceError
     +-- CommandDecodeError   command bytes that no correct proposer writes (apply() turns
     |                        this into `Refused(Reason.BAD_COMMAND)`; it never escapes apply)
     +-- SnapshotError        snapshot bytes that `restore()` cannot trust; nothing was replaced
     +-- InvariantViolation   `check()` found a broken rule of the lock table (a bug, never input)
     +-- BadSequencerToken    a sequencer token that does not decode (also a ValueError)
     +-- ServerError          the lock server's outcomes: NoLeader, Unavailable, RequestRefused

The replicated state machine itself never raises from `apply()`: every refusal is a typed
`Refused` result (see lockservice/results.py), decided the same way on every replica.
"""

from __future__ import annotations


class LockServiceError(Exception):
    """Root of every error the lockservice package raises."""


class CommandDecodeError(LockServiceError):
    """Command bytes that do not decode to a well-formed command."""


class SnapshotError(LockServiceError):
    """Snapshot bytes that are not a snapshot this version wrote; the state is unchanged."""


class InvariantViolation(LockServiceError):
    """A rule of the lock table does not hold; the message names the rule and the object."""


class BadSequencerToken(LockServiceError, ValueError):
    """A sequencer token that `Sequencer.to_token` never writes (lockservice/sequencer.py)."""


class ServerError(LockServiceError):
    """Raised by `LockServer` operations (lockservice/server.py); the HTTP layer maps them.

        ServerError
         +-- NoLeader        this member cannot serve the request now; `leader` is a hint
         +-- Unavailable     the outcome is unknown (`may_have_applied`) or a read timed out
         +-- RequestRefused  the state machine refused it (`refused`), nothing changed
    """


class NoLeader(ServerError):
    def __init__(self, message: str, leader: int | None = None) -> None:
        super().__init__(message)
        self.leader = leader


class Unavailable(ServerError):
    def __init__(self, message: str, *, may_have_applied: bool) -> None:
        super().__init__(message)
        self.may_have_applied = may_have_applied


class RequestRefused(ServerError):
    def __init__(self, refused: object, **extra: object) -> None:
        super().__init__(getattr(refused, "detail", str(refused)))
        self.refused = refused  # a lockservice.results.Refused
        self.extra = extra  # more fields for the error body (e.g. delay_until)
