"""Errors the Dynamo store raises on purpose (the start of its tree).

    RinglockError                     root of everything the store raises on purpose
    ├── StorageError                  the storage engine's tree (kvstore/lsm/errors.py)
    ├── InvalidRing                   a ring value or its serialised bytes break an invariant
    │                                 (also a ValueError); `.reason` says which
    ├── InvalidContext                a client's causal context is not one we issued (bad
    │                                 base64, bad version byte, bad shape); also a ValueError
    ├── InvalidSiblingSet             stored sibling-set bytes are damaged or inconsistent
    │                                 (also a ValueError); never served as data
    ├── SiblingLimitExceeded          a write would leave more siblings than the hard cap;
    │                                 `.key_siblings` and `.limit` say how many
    ├── InvalidRequest                a client request is malformed (key, value, parameter);
    │                                 also a ValueError; answered with 400 and changes nothing
    ├── WireError                     an internal (replica, gossip) body does not decode;
    │                                 also a ValueError
    ├── QuorumFailed                  fewer than R (or W) replicas answered in time;
    │                                 `.indeterminate` says a write may still have been applied
    ├── NodeUnavailable               a peer could not be reached or did not answer in time
    ├── SequencerRejected             a fenced write carried a sequencer that is not current
    ├── MembershipError               a join, leave or remove was refused; `.reason` says why
    └── AccessDenied                  the node refused the request's credentials (401/403);
        ├── Unauthenticated           no token, or one the node does not know (401)
        └── Forbidden                 the token's principal may not do this (403)

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


class InvalidRequest(_Reasoned):
    """A client request is malformed (key, value, parameter); nothing was changed."""

    prefix = "invalid request"


class WireError(_Reasoned):
    """An internal message (replica API, gossip, transfer) does not decode."""

    prefix = "bad internal message"


class QuorumFailed(RinglockError):
    """Fewer than the required replicas answered before the deadline.

    For a write, `indeterminate` is True when the write may still have been applied (some
    replica may have stored it): the client must not assume it failed, and should read
    before retrying a non-idempotent change.
    """

    def __init__(self, op: str, needed: int, got: int, *, indeterminate: bool,
                 detail: str = "") -> None:
        self.op, self.needed, self.got = op, needed, got
        self.indeterminate = indeterminate
        self.detail = detail
        maybe = " the write may still have been applied;" if indeterminate else ""
        extra = f" ({detail})" if detail else ""
        super().__init__(
            f"{op}: {got} of the {needed} replicas needed answered in time;{maybe}"
            f" retry, or lower {'w' if op != 'get' else 'r'} for this request{extra}"
        )

    def __reduce__(self):
        return (_rebuild_quorum_failed,
                (self.op, self.needed, self.got, self.indeterminate, self.detail))


def _rebuild_quorum_failed(op, needed, got, indeterminate, detail):
    return QuorumFailed(op, needed, got, indeterminate=indeterminate, detail=detail)


class NodeUnavailable(RinglockError):
    """A peer node could not be reached, or did not answer before the deadline."""

    def __init__(self, node: str, detail: str) -> None:
        self.node, self.detail = node, detail
        super().__init__(f"node {node} is unavailable: {detail}")

    def __reduce__(self):
        return (type(self), (self.node, self.detail))


class SequencerRejected(RinglockError):
    """A fenced write's sequencer is no longer current (its holder lost the lock)."""

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(f"write refused: the sequencer is not current ({detail}); nothing"
                         " was written")

    def __reduce__(self):
        return (type(self), (self.detail,))


class MembershipError(_Reasoned):
    """A join, leave or remove was refused; nothing changed."""

    prefix = "membership change refused"


class AccessDenied(RinglockError):
    """The node refused the request's credentials (kvstore/auth_http.py); nothing changed.

    `.status` is 401 or 403 and `.detail` the node's message."""

    status = 0
    what = "access denied"

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(f"{self.what}: {detail}")

    def __reduce__(self):
        return (type(self), (self.detail,))


class Unauthenticated(AccessDenied):
    """401: the request carried no token, or one the node does not know (give `token=`,
    `kv --token` or RINGLOCK_TOKEN)."""

    status = 401
    what = "not authenticated"


class Forbidden(AccessDenied):
    """403: the token is known, but its roles do not allow this request."""

    status = 403
    what = "forbidden"
