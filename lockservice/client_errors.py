"""Errors the lock client, the election helper and fencing raise (their branch of the tree).

    LockServiceError (lockservice/errors.py)
     +-- ClientError                  the client side's root
          +-- MembersUnavailable      no member answered usefully before the deadline
          +-- SessionLost             the session ended (server said so, or the grace period
          |                           passed); its locks are or will be free; open a new one
          +-- LockLost                a held lock may no longer be ours (jeopardy or lost)
          +-- LockBusy                a try-acquire found the lock taken, or a wait timed out;
          |                           `.code` is "busy" or "lock_delay"
          +-- VersionMismatch         a compare-and-set or conditional delete lost the race
          +-- EntryNotFound           delete of an entry that does not exist
          +-- RequestRejected         the service refused the request (4xx); `.status`,
          |                           `.code` and the server's message; nothing changed
          |    +-- AccessDenied       401 (no or unknown token) or 403 (its roles do not
          |                           allow it): pass `token=` (kvstore/auth_http.py)
          +-- SequencerNotCurrent     a fenced write's sequencer is no longer current
                                      (fencing.SequencerCache raises it unless given a class)
"""

from __future__ import annotations

from lockservice.errors import LockServiceError


class ClientError(LockServiceError):
    """Root of the client side's errors."""


class MembersUnavailable(ClientError):
    """No member of the lock service answered before the deadline."""


class SessionLost(ClientError):
    """The session is over: the server expired or forgot it, or the grace period ran out."""


class LockLost(ClientError):
    """A lock this client held may have passed to someone else; stop acting as its holder."""


class RequestRejected(ClientError):
    """A 4xx answer: the request was refused and changed nothing."""

    def __init__(self, status: int, code: str, message: str) -> None:
        self.status, self.code = status, code
        super().__init__(f"{code}: {message}" if message else code)


class AccessDenied(RequestRejected):
    """401 or 403: the member refused the request's token; nothing changed."""


class LockBusy(RequestRejected):
    """The lock is held (or under lock-delay) and the request did not wait long enough."""


class VersionMismatch(RequestRejected):
    """The entry's version was not the expected one."""


class EntryNotFound(RequestRejected):
    """The entry does not exist."""


class SequencerNotCurrent(ClientError):
    """A sequencer is not (or no longer) the current grant of its lock."""


__all__ = [
    "AccessDenied",
    "ClientError",
    "EntryNotFound",
    "LockBusy",
    "LockLost",
    "MembersUnavailable",
    "RequestRejected",
    "SequencerNotCurrent",
    "SessionLost",
    "VersionMismatch",
]
