"""Self-contradictory messages are refused before the core changes anything."""

from __future__ import annotations

import random

import pytest

from raft import (
    ConfState,
    Entry,
    HardState,
    InvalidMessage,
    Message,
    MessageType,
    RaftCore,
    SnapshotMeta,
)

MT = MessageType


def follower() -> RaftCore:
    entries = [Entry(1, 1, data=b"a"), Entry(1, 2, data=b"b")]
    core = RaftCore(
        2, ConfState(frozenset({1, 2, 3})), random.Random(2),
        hard_state=HardState(1, 0, 1), entries=entries,
    )
    rd = core.ready()
    assert rd is not None
    core.advance(rd)
    return core


BAD = [
    Message(MT.APPEND, to=2, sender=2, term=1),  # from itself
    Message(MT.APPEND, to=2, sender=0, term=1),
    Message(MT.APPEND, to=2, sender=1, term=-1),
    Message(MT.HEARTBEAT, to=2, sender=1, term=1, commit=-5),
    Message(MT.APPEND, to=2, sender=1, term=2, index=2, log_term=1, entries=(Entry(2, 4),)),
    Message(MT.APPEND, to=2, sender=1, term=2, index=2, log_term=1, entries=(Entry(3, 3),)),
    Message(
        MT.APPEND, to=2, sender=1, term=2, index=2, log_term=1,
        entries=(Entry(2, 3), Entry(1, 4)),
    ),
    Message(MT.APPEND, to=2, sender=1, term=2, index=2, log_term=5),
    Message(MT.HEARTBEAT, to=2, sender=1, term=2, entries=(Entry(2, 3),)),
    Message(MT.SNAPSHOT, to=2, sender=1, term=2),
    Message(MT.SNAPSHOT, to=2, sender=1, term=2, snapshot=SnapshotMeta(5, 9)),
]


@pytest.mark.parametrize("message", BAD)
def test_invalid_message_is_refused_and_changes_nothing(message: Message) -> None:
    core = follower()
    before = (core.term, core.vote, core.lead, core.role, list(core.log.entries), core.committed)
    with pytest.raises(InvalidMessage):
        core.step(message)
    after = (core.term, core.vote, core.lead, core.role, list(core.log.entries), core.committed)
    assert after == before and core.ready() is None


def test_a_valid_append_still_goes_through() -> None:
    core = follower()
    core.step(
        Message(MT.APPEND, to=2, sender=1, term=2, index=2, log_term=1, entries=(Entry(2, 3),))
    )
    assert core.log.last_index == 3 and core.lead == 1
