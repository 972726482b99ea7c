"""The follower side of chunked InstallSnapshot: reassemble chunks in offset order.

Theory of operation. Chunks of one snapshot come from one leader in one term (another
leader may serialize the same snapshot index differently, so its chunks never mix with
ours). A chunk is accepted only at offset == bytes held; anything else is answered with
the byte count we hold, so the leader resends from there. Duplicates, reordering and loss
therefore cost retransmissions, never corruption.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from raft.messages import SnapshotMeta


@dataclass(slots=True)
class SnapshotAssembler:
    sender: int
    term: int
    meta: SnapshotMeta
    buffer: bytearray = field(default_factory=bytearray)

    def matches(self, sender: int, term: int, meta: SnapshotMeta) -> bool:
        return self.sender == sender and self.term == term and self.meta == meta

    def accept(self, offset: int, data: bytes) -> bool:
        """Append the chunk when it starts where we are; returns whether it was taken."""
        if offset != len(self.buffer):
            return False
        self.buffer += data
        return True
