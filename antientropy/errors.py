"""Errors anti-entropy raises on purpose (a branch of kvstore.errors.RinglockError).

    RinglockError
    └── AntiEntropyError             root of this package's errors
        ├── InvalidTree              a tree's parameters or serialised bytes are invalid
        │                            (also a ValueError)
        ├── InvalidMessage           an /internal/v1/aae/ body does not decode or breaks a
        │                            limit (also a ValueError; answered 400, nothing changes)
        └── PeerFailed               an exchange's call to the other replica failed
                                     (unreachable, timed out, refused); `.peer` names it

Wrong argument *types* raise the built-in TypeError.
"""

from __future__ import annotations

from kvstore.errors import RinglockError


class AntiEntropyError(RinglockError):
    """Root of the anti-entropy errors."""


class InvalidTree(AntiEntropyError, ValueError):
    """A tree's parameters or serialised bytes are invalid."""


class InvalidMessage(AntiEntropyError, ValueError):
    """An anti-entropy request or reply body is malformed or over a limit."""


class PeerFailed(AntiEntropyError):
    """A call to the other replica of an exchange failed."""

    def __init__(self, peer: str, detail: str) -> None:
        super().__init__(f"{peer}: {detail}")
        self.peer = peer
        self.detail = detail


__all__ = ["AntiEntropyError", "InvalidMessage", "InvalidTree", "PeerFailed"]
