"""The public API's edge codec (pure): keys, parameters, 300 bodies, error mapping.

Dynamo §4.4 / Riak's HTTP API: every sibling comes back in a 300 Multiple Choices answer,
so the multipart codec must round-trip any bytes; keys are binary-safe.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvstore.errors import (
    InvalidContext,
    InvalidRequest,
    NodeUnavailable,
    QuorumFailed,
    SequencerRejected,
    SiblingLimitExceeded,
)
from kvstore.http_codec import (
    MAX_KEY_BYTES,
    decode_multipart,
    encode_multipart,
    error_for,
    error_from,
    parse_key,
    parse_params,
    quote_key,
)


@given(st.binary(min_size=1, max_size=MAX_KEY_BYTES))
def test_any_key_round_trips_through_its_path_segment(key: bytes) -> None:
    raw = quote_key(key)
    assert parse_key(raw) == key
    assert "." not in raw and "/" not in raw  # no dot segments for a proxy to normalise


def test_every_byte_value_round_trips() -> None:
    key = bytes(range(256))
    assert parse_key(quote_key(key)) == key


@pytest.mark.parametrize("raw", ["%zz", "a%2", "%", "a%g0", "sp ace", "caf\u00e9", "a?b",
                                 "a#b", "%" * 10])
def test_malformed_percent_encoding_is_refused(raw: str) -> None:
    with pytest.raises(InvalidRequest, match="percent-encoding"):
        parse_key(raw)


def test_raw_slashes_and_reserved_characters_are_part_of_the_key() -> None:
    assert parse_key("users/1") == b"users/1"
    assert parse_key("a:b@c;d=e") == b"a:b@c;d=e"
    assert parse_key("%2F") == b"/"


@pytest.mark.parametrize("size", [0, MAX_KEY_BYTES + 1, 5000])
def test_key_sizes_outside_the_limit_are_refused(size: int) -> None:
    with pytest.raises(InvalidRequest):
        parse_key("k" * size)
    if size:
        with pytest.raises(InvalidRequest):
            quote_key(b"k" * size)


def test_key_of_exactly_the_limit_is_accepted() -> None:
    assert parse_key("%00" * MAX_KEY_BYTES) == b"\0" * MAX_KEY_BYTES


@pytest.mark.parametrize("query, message", [
    ({"r": "0"}, "1..64"), ({"r": "-1"}, "1..64"), ({"r": "two"}, "1..64"),
    ({"r": "65"}, "1..64"), ({"r": ""}, "1..64"), ({"r": "1e3"}, "1..64"),
    ({"timeout_ms": "0"}, "1..600000"), ({"timeout_ms": "600001"}, "1..600000"),
    ({"w": "2"}, "unknown query parameter 'w'"), ({"x": "1"}, "unknown"),
])
def test_bad_parameters_are_refused_by_name(query: dict, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        parse_params(query, ("r", "timeout_ms"))


def test_a_repeated_parameter_is_refused() -> None:
    from multidict import MultiDict
    with pytest.raises(InvalidRequest, match="more than once"):
        parse_params(MultiDict([("r", "1"), ("r", "2")]), ("r",))


def test_good_parameters_parse() -> None:
    assert parse_params({"r": "3", "timeout_ms": "250"}, ("r", "timeout_ms")) == {
        "r": 3, "timeout_ms": 250}


@given(st.lists(st.binary(max_size=300), min_size=1, max_size=8))
def test_multipart_round_trips_any_values(values: list[bytes]) -> None:
    content_type, body = encode_multipart(values)
    assert decode_multipart(content_type, body) == values


def test_multipart_boundary_never_occurs_in_a_value() -> None:
    content_type, body = encode_multipart([b"--x", b"\r\n--\r\n"])
    boundary = content_type.split("boundary=")[1]
    assert decode_multipart(content_type, body) == [b"--x", b"\r\n--\r\n"]
    assert body.count(("--" + boundary).encode()) == 3


@pytest.mark.parametrize("content_type, body", [
    ("text/plain", b""), ("multipart/mixed", b"--b\r\n"),
    ("multipart/mixed; boundary=b", b"garbage"),
    ("multipart/mixed; boundary=b", b"--b\r\nno separator\r\n--b--\r\n"),
])
def test_malformed_multipart_is_refused(content_type: str, body: bytes) -> None:
    with pytest.raises(ValueError):
        decode_multipart(content_type, body)


@pytest.mark.parametrize("error", [
    InvalidContext("bad base64"), InvalidRequest("r=9 is larger than n=3"),
    SequencerRejected("generation 3 < 4"), SiblingLimitExceeded(101, 100),
    QuorumFailed("put", 2, 1, indeterminate=True, detail="x down"),
    QuorumFailed("get", 2, 0, indeterminate=False),
])
def test_typed_errors_cross_http_and_come_back_alike(error: Exception) -> None:
    status, body = error_for(error)
    assert 400 <= status < 600 and body["message"] == str(error)
    back = error_from(status, body, "n1")
    assert type(back) is type(error) and str(back) == str(error)


def test_status_codes_follow_the_contract() -> None:
    assert error_for(InvalidRequest("x"))[0] == 400
    assert error_for(InvalidContext("x"))[0] == 400
    assert error_for(SequencerRejected("x"))[0] == 409
    assert error_for(QuorumFailed("put", 2, 1, indeterminate=True))[1]["indeterminate"]
    assert error_for(NodeUnavailable("n", "down"))[0] == 503


def test_unexpected_errors_answer_500_without_internals() -> None:
    status, body = error_for(KeyError("secret path /etc"))
    assert status == 500 and "secret" not in body["message"]
    assert isinstance(error_from(500, body, "n1"), NodeUnavailable)
    assert isinstance(error_from(418, "not json", "n1"), InvalidRequest)
