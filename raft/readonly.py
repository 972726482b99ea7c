"""ReadIndex bookkeeping on the leader (dissertation §6.4).

Theory of operation. A read arriving at the leader records the commit index at that moment
and is queued under its (unique, non-empty) context. The leader then sends a heartbeat round
carrying the newest pending context; once a majority (counting itself) has answered a
heartbeat carrying context c, it is still leader as of after c was queued, so c and every
read queued before c may be served at their recorded index. Reads are released in queue
order, so a later read never gets a smaller index than an earlier one.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class ReadIndexStatus:
    context: bytes
    index: int  # the leader's commit index when the read arrived
    sender: int  # who asked: the leader itself, or a follower that forwarded READ_INDEX
    acks: set[int] = field(default_factory=set)


class ReadOnly:
    def __init__(self) -> None:
        self.pending: dict[bytes, ReadIndexStatus] = {}
        self.queue: list[bytes] = []

    def add_request(self, index: int, context: bytes, sender: int) -> bool:
        """Queue a read; False when that context is already pending (a duplicate)."""
        if context in self.pending:
            return False
        self.pending[context] = ReadIndexStatus(context, index, sender)
        self.queue.append(context)
        return True

    def recv_ack(self, node: int, context: bytes) -> set[int] | None:
        """Record that `node` answered a heartbeat carrying context; the acks so far."""
        status = self.pending.get(context)
        if status is None:
            return None
        status.acks.add(node)
        return status.acks

    def advance(self, context: bytes) -> list[ReadIndexStatus]:
        """Release `context` and every read queued before it, oldest first."""
        if context not in self.pending:
            return []
        upto = self.queue.index(context) + 1
        released = [self.pending.pop(c) for c in self.queue[:upto]]
        del self.queue[:upto]
        return released

    def last_pending_context(self) -> bytes:
        return self.queue[-1] if self.queue else b""

    def __len__(self) -> int:
        return len(self.queue)
