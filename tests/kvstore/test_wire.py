"""The internal API's bodies: round trips, and hostile bodies refused with WireError."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvstore import vclock, wire
from kvstore.errors import (
    InvalidContext,
    InvalidRequest,
    NodeUnavailable,
    QuorumFailed,
    SequencerRejected,
    SiblingLimitExceeded,
    WireError,
)
from kvstore.vclock import SiblingSet, VersionVector

STATE = vclock.update(SiblingSet(), VersionVector(), "127.0.0.1:7001", b"v", timestamp=5)

REQUESTS = [
    wire.GetRequest(b"k"),
    wire.MergeRequest(b"k", STATE),
    wire.MergeManyRequest(((b"a", STATE), (b"b", SiblingSet()))),
    wire.HintRequest("127.0.0.1:7002", b"\x00\xff", STATE),
    wire.CoordinateRequest("put", b"k", b"value", vclock.context(STATE), 2, 500, "tok"),
    wire.CoordinateRequest("delete", b"k"),
    wire.StatusRequest(),
]


@pytest.mark.parametrize("req", REQUESTS, ids=lambda r: type(r).__name__)
def test_requests_round_trip(req) -> None:
    op = wire.op_of(req)
    assert wire.decode_request(op, wire.encode_request(req)) == req


@given(st.binary(min_size=1, max_size=1024), st.binary(max_size=64))
def test_coordinate_round_trips_any_key_and_value(key, value) -> None:
    req = wire.CoordinateRequest("put", key, value)
    assert wire.decode_request("coordinate", wire.encode_request(req)) == req


def test_state_reply_round_trips() -> None:
    assert wire.decode_state_reply(wire.encode_state_reply(STATE)) == STATE


def body(**fields) -> bytes:
    return msgpack.packb(fields, use_bin_type=True)


GOOD_STATE = vclock.encode(STATE)
HOSTILE = [
    ("get", b""),
    ("get", b"\xc1"),  # never-used msgpack byte
    ("get", msgpack.packb([1, 2])),
    ("get", body(key=b"k") + b"\x00"),  # trailing bytes
    ("get", body()),
    ("get", body(key="k")),  # str, not bin
    ("get", body(key=b"")),
    ("get", body(key=b"x" * 1025)),
    ("get", body(key=b"k", extra=1)),
    ("merge", body(key=b"k")),
    ("merge", body(key=b"k", state=b"\x01garbage")),
    ("merge", body(key=b"k", state=GOOD_STATE[:-1])),
    ("merge", body(key=b"k", state=b"\x02" + GOOD_STATE[1:])),
    ("merge", body(key=b"k", state=1)),
    ("merge_many", body(items=[[b"k"]])),
    ("merge_many", body(items=[[b"k", GOOD_STATE], [b"", GOOD_STATE]])),
    ("merge_many", body(items={"k": 1})),
    ("merge_many", body(items=[[b"k", GOOD_STATE]] * (wire.MAX_ITEMS + 1))),
    ("hint", body(owner="", key=b"k", state=GOOD_STATE)),
    ("hint", body(owner=7, key=b"k", state=GOOD_STATE)),
    ("hint", body(owner="n" * 256, key=b"k", state=GOOD_STATE)),
    ("coordinate", body(op="get", key=b"k", value=b"")),
    ("coordinate", body(op="delete", key=b"k", value=b"x")),
    ("coordinate", body(op="put", key=b"k", value="str")),
    ("coordinate", body(op="put", key=b"k", value=b"v", w=0)),
    ("coordinate", body(op="put", key=b"k", value=b"v", w=True)),
    ("coordinate", body(op="put", key=b"k", value=b"v", timeout_ms=-1)),
    ("coordinate", body(op="put", key=b"k", value=b"v", context=b"")),
    ("coordinate", body(op="put", key=b"k", value=b"v", sequencer=b"x")),
    ("status", body(x=1)),
    ("nope", body()),
    ("get", msgpack.packb({1: b"k"})),  # non-str map key
    ("get", b"\xdf\xff\xff\xff\xff"),  # a map claiming 4 billion entries
    ("get", b"\xc6\xff\xff\xff\xff"),  # a bin claiming 4 GiB
]


@pytest.mark.parametrize(("op", "data"), HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_bodies_raise_wire_error(op, data) -> None:
    with pytest.raises(WireError):
        wire.decode_request(op, data)


def test_oversized_body_is_refused_before_decoding() -> None:
    with pytest.raises(WireError, match="limit"):
        wire.unpack_map(b"\x80" + b"\x00" * wire.MAX_BODY_BYTES)


def test_state_reply_rejects_other_shapes() -> None:
    for bad in (body(), body(state=GOOD_STATE, x=1), body(state=b"\x01")):
        with pytest.raises(WireError):
            wire.decode_state_reply(bad)


ERRORS = [
    WireError("bad"),
    InvalidContext("ctx"),
    InvalidRequest("req"),
    SiblingLimitExceeded(101, 100),
    SequencerRejected("old"),
    QuorumFailed("put", 2, 1, indeterminate=True, detail="d"),
    QuorumFailed("get", 2, 0, indeterminate=False),
    wire.NotApplied("n", "not a replica"),
]


@pytest.mark.parametrize("exc", ERRORS, ids=lambda e: type(e).__name__)
def test_errors_cross_the_wire_as_the_same_type(exc) -> None:
    status, data = wire.encode_error(exc)
    assert 400 <= status < 600
    back = wire.decode_error("n", status, data)
    assert type(back) is type(exc)
    assert str(back) == str(exc)
    if isinstance(exc, QuorumFailed):
        assert back.indeterminate == exc.indeterminate


def test_unknown_errors_become_node_unavailable() -> None:
    status, data = wire.encode_error(RuntimeError("boom"))
    assert status == 500
    back = wire.decode_error("n", status, data)
    assert type(back) is NodeUnavailable and "boom" in str(back)
    assert type(wire.decode_error("n", 502, b"<html>")) is NodeUnavailable
    assert type(wire.decode_error("n", 503, body(error="quorum"))) is NodeUnavailable


def test_acks_are_empty_maps() -> None:
    assert wire.decode_ack(wire.ACK) is None
    for bad in (body(x=1), b"\x90", b""):
        with pytest.raises(WireError):
            wire.decode_ack(bad)
