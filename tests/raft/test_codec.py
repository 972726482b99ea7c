"""The wire codec: every message type round-trips field by field; bad bytes raise CodecError."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raft import codec
from raft.codec import CodecError
from raft.messages import (
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    Snapshot,
    SnapshotMeta,
)

u64 = st.integers(min_value=0, max_value=(1 << 64) - 1)
ids = st.integers(min_value=1, max_value=1 << 20)
members = st.frozensets(ids, max_size=5)
entries = st.builds(Entry, term=u64, index=u64, type=st.sampled_from(EntryType),
                    data=st.binary(max_size=64))
metas = st.builds(SnapshotMeta, index=u64, term=u64,
                  conf_state=st.builds(ConfState, voters=members, learners=members,
                                       voters_outgoing=members))
messages = st.builds(
    Message,
    type=st.sampled_from(MessageType),
    to=ids,
    sender=ids,
    term=u64,
    log_term=u64,
    index=u64,
    entries=st.lists(entries, max_size=4).map(tuple),
    commit=u64,
    reject=st.booleans(),
    reject_hint=u64,
    hint_term=u64,
    context=st.binary(max_size=16),
    snapshot=st.none() | metas,
    offset=u64,
    data=st.binary(max_size=64),
    done=st.booleans(),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(messages, max_size=5))
def test_every_message_round_trips(batch: list[Message]) -> None:
    assert codec.decode_messages(codec.encode_messages(batch)) == batch


@settings(max_examples=100, deadline=None)
@given(entries, metas, st.binary(max_size=100), u64, u64, u64)
def test_storage_values_round_trip(e, meta, data, term, vote, commit) -> None:
    assert codec.decode_entry(codec.encode_entry(e)) == e
    assert codec.decode_snapshot_meta(codec.encode_snapshot_meta(meta)) == meta
    snap = Snapshot(meta, data)
    assert codec.decode_snapshot(codec.encode_snapshot(snap)) == snap
    hs = HardState(term, vote, commit)
    assert codec.decode_hard_state(codec.encode_hard_state(hs)) == hs


def _body_with(field: int, value: object) -> bytes:
    m = codec.message_to_obj(Message(MessageType.APPEND, to=1, sender=2, term=3))
    m[field] = value
    return msgpack.packb([codec.WIRE_VERSION, [m]], use_bin_type=True)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"\xc1", "not valid msgpack"),
        (b"", "not valid msgpack"),
        (msgpack.packb({"a": 1}), "expected an array of 2, got dict"),
        (msgpack.packb([codec.WIRE_VERSION]), "expected an array of 2"),
        (msgpack.packb([99, []]), "unsupported wire version"),
        (msgpack.packb([codec.WIRE_VERSION, [[1, 2, 3]]]), "expected an array of 16"),
        (_body_with(0, 99), "unknown message type 99"),
        (_body_with(1, 0), "node id 0"),
        (_body_with(3, -1), "outside 0..2^64-1"),
        (_body_with(3, "7"), "expected an integer, got str"),
        (_body_with(3, True), "expected an integer, got bool"),
        (_body_with(3, 1.5), "expected an integer, got float"),
        (_body_with(8, 1), "expected a boolean, got int"),
        (_body_with(11, "ctx"), "expected bytes, got str"),
        (_body_with(11, b"x" * (codec.MAX_CONTEXT_BYTES + 1)), "over the limit"),
        (_body_with(6, [[1, 2, 7, b""]]), "unknown entry type 7"),
        (_body_with(6, [[1, 2, 0]]), "expected an array of 4"),
        (_body_with(12, [1, 2, [[1, 1], [], []]]), "duplicate node id"),
        (msgpack.packb([codec.WIRE_VERSION, []]) + b"\x00", "not valid msgpack"),
    ],
)
def test_malformed_bodies_raise_a_clear_error(body: bytes, fragment: str) -> None:
    with pytest.raises(CodecError, match=fragment.replace(".", r"\.").replace("^", r"\^")):
        codec.decode_messages(body)


def test_oversized_body_is_refused_before_parsing() -> None:
    big = codec.encode_messages([Message(MessageType.APPEND, 1, 2, 3, data=b"x" * 2000)])
    with pytest.raises(CodecError, match="over the limit of 1000"):
        codec.decode_messages(big, max_bytes=1000)


def test_too_many_messages_in_one_body() -> None:
    m = codec.message_to_obj(Message(MessageType.HEARTBEAT, to=1, sender=2, term=3))
    body = msgpack.packb([codec.WIRE_VERSION, [m] * (codec.MAX_MESSAGES_PER_BODY + 1)])
    with pytest.raises(CodecError, match="messages is over the limit"):
        codec.decode_messages(body)
