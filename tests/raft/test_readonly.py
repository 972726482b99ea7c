"""ReadIndex queue (raft/readonly.py): reads are released in order, each at its index."""

from __future__ import annotations

from raft.readonly import ReadOnly


def test_ack_for_a_later_read_releases_every_earlier_one_in_order() -> None:
    ro = ReadOnly()
    assert ro.add_request(5, b"a", 1)
    assert ro.add_request(7, b"b", 2)
    assert ro.add_request(7, b"c", 1)
    assert ro.last_pending_context() == b"c"
    released = ro.advance(b"b")
    assert [(s.context, s.index, s.sender) for s in released] == [(b"a", 5, 1), (b"b", 7, 2)]
    assert len(ro) == 1 and ro.advance(b"a") == []


def test_duplicate_context_is_refused_and_acks_are_sets() -> None:
    ro = ReadOnly()
    assert ro.add_request(3, b"x", 1)
    assert not ro.add_request(4, b"x", 1)
    ro.recv_ack(1, b"x")
    ro.recv_ack(2, b"x")
    assert ro.recv_ack(2, b"x") == {1, 2}
    assert ro.recv_ack(3, b"unknown") is None
