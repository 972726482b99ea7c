"""What a well-formed message is, checked before the core changes anything.

The codec (raft/codec.py) rejects bytes that do not decode; this rejects decoded messages
whose fields contradict each other (entries that do not follow `index`, terms from the
future, negative counters), so that a buggy or hostile peer gets a clear error and the
core is left exactly as it was. O(len(entries)).
"""

from __future__ import annotations

from raft.errors import InvalidMessage
from raft.messages import Message, MessageType

MT = MessageType


def check_message(m: Message) -> None:
    """Raise InvalidMessage unless m is self-consistent."""
    if m.sender <= 0 or m.to <= 0 or m.sender == m.to:
        raise InvalidMessage(f"bad sender/recipient {m.sender}->{m.to}")
    if min(m.term, m.log_term, m.index, m.commit, m.offset, m.reject_hint, m.hint_term) < 0:
        raise InvalidMessage("negative term, index, commit or offset")
    if m.entries:
        if m.type != MT.APPEND:
            raise InvalidMessage(f"{m.type.name} carries entries")
        prev_term = m.log_term
        for k, e in enumerate(m.entries):
            if e.index != m.index + 1 + k:
                raise InvalidMessage(f"entry {k} has index {e.index}, expected {m.index + 1 + k}")
            if not prev_term <= e.term <= m.term or e.term < 1:
                raise InvalidMessage(f"entry {e.index} has term {e.term} out of order")
            prev_term = e.term
    if m.type == MT.APPEND and m.log_term > m.term:
        raise InvalidMessage("APPEND log_term is beyond the message's term")
    if m.type == MT.SNAPSHOT:
        s = m.snapshot
        if s is None or s.index < 1 or s.term < 1 or s.term > m.term:
            raise InvalidMessage("SNAPSHOT without a valid snapshot index and term")
