"""Errors the lockservice package raises.

    LockServiceError
     +-- CommandDecodeError   command bytes that no correct proposer writes (apply() turns
     |                        this into `Refused(Reason.BAD_COMMAND)`; it never escapes apply)
     +-- SnapshotError        snapshot bytes that `restore()` cannot trust; nothing was replaced
     +-- InvariantViolation   `check()` found a broken rule of the lock table (a bug, never input)

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
