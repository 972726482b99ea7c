"""Sequencer tokens (Chubby §2.4): the opaque string clients carry to fence their writes.

Pure: no I/O. A token is URL-safe base64 without padding of msgpack
`[1, name, mode, generation, session]`; `from_token` takes exactly what `to_token` writes.
"""

from __future__ import annotations

import base64

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lockservice.errors import BadSequencerToken
from lockservice.sequencer import LockMode, Sequencer

sequencers = st.builds(
    Sequencer,
    st.text(min_size=1, max_size=64).filter(lambda s: "\x00" not in s),
    st.sampled_from(LockMode),
    st.integers(0, 2**63 - 1),
    st.integers(0, 2**63 - 1),
)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@given(sequencers)
def test_token_round_trip(seq: Sequencer) -> None:
    token = seq.to_token()
    assert "=" not in token and set(token) <= set(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert Sequencer.from_token(token) == seq


def test_token_layout_is_the_documented_one() -> None:
    seq = Sequencer("jobs/master", LockMode.SHARED, 42, 7)
    assert seq.to_token() == _b64(msgpack.packb([1, "jobs/master", 2, 42, 7]))


@pytest.mark.parametrize("token", [
    "", "!!!!", "a" * 2000, "lQGjYS9iAQEF=", "lQGjYS9iAQEFAA",
    _b64(msgpack.packb([2, "a", 1, 1, 1])),           # unknown version
    _b64(msgpack.packb([1, "a", 3, 1, 1])),           # unknown mode
    _b64(msgpack.packb([1, "a", 1, -1, 1])),          # negative generation
    _b64(msgpack.packb([1, "a", 1, 1, 2**64 - 1])),   # too large
    _b64(msgpack.packb([1, "a", True, 1, 1])),        # boolean for mode
    _b64(msgpack.packb([1, b"a", 1, 1, 1], use_bin_type=True)),  # bytes name
    _b64(msgpack.packb([1, "a", 1, 1])),              # too short
    _b64(msgpack.packb({"name": "a"})),               # not an array
    _b64(b"\xc1"),                                    # not msgpack
    _b64(msgpack.packb([1, "a", 1, 1, 1]) + b"\x00"),  # trailing bytes
    _b64(b"\x95\x01\xa1a\x01\xcc\x01\x01"),           # non-canonical integer width
])
def test_malformed_tokens_are_refused(token: str) -> None:
    with pytest.raises(BadSequencerToken):
        Sequencer.from_token(token)


def test_non_string_token_is_refused() -> None:
    with pytest.raises(BadSequencerToken):
        Sequencer.from_token(b"lQGjYS9iAQEF")  # type: ignore[arg-type]
