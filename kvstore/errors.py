"""Errors the Dynamo store raises on purpose (the start of its tree).

    RinglockError                     root of everything the store raises on purpose
    ├── StorageError                  the storage engine's tree (kvstore/lsm/errors.py)
    ├── InvalidRing                   a ring value or its serialised bytes break an invariant
    │                                 (also a ValueError); `.reason` says which
    ├── InvalidContext                a client's causal context is not one we issued (bad
    │                                 base64, bad version byte, bad shape); also a ValueError
    ├── InvalidSiblingSet             stored sibling-set bytes are damaged or inconsistent
    │                                 (also a ValueError); never served as data
    └── SiblingLimitExceeded          a write would leave more siblings than the hard cap;
                                      `.key_siblings` and `.limit` say how many

Wrong argument *types* raise the built-in `TypeError`, as Python callers expect. Every error
is raised before anything changes: the inputs are immutable values, so a caller that catches
one still holds the ring or sibling set it had.
"""

from __future__ import annotations


class RinglockError(Exception):
    """Root of the store's errors."""


class _Reasoned(RinglockError, ValueError):
    """An error carrying one `reason`, kept across pickling (worker processes)."""

    prefix = "invalid"

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"{self.prefix}: {reason}")

    def __reduce__(self):
        return (type(self), (self.reason,))


class InvalidRing(_Reasoned):
    """A ring (or the bytes it was read from) is malformed or breaks an invariant."""

    prefix = "invalid ring"


class InvalidContext(_Reasoned):
    """A causal context sent by a client cannot be decoded; nothing was written."""

    prefix = "invalid context"


class InvalidSiblingSet(_Reasoned):
    """Encoded sibling-set bytes are damaged or describe an impossible set."""

    prefix = "invalid sibling set"


class SiblingLimitExceeded(RinglockError):
    """A write was refused: the key would hold more siblings than the hard limit.

    The client should read the key, resolve its siblings and write back with the context
    it read; that write replaces every sibling the context covers.
    """

    def __init__(self, key_siblings: int, limit: int) -> None:
        self.key_siblings = key_siblings
        self.limit = limit
        super().__init__(
            f"write refused: the key would hold {key_siblings} siblings, over the hard limit"
            f" of {limit}; read it, resolve the siblings and write back with that context"
        )

    def __reduce__(self):  # keep the fields across pickling (worker processes)
        return (type(self), (self.key_siblings, self.limit))
