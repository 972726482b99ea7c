"""The command codec: every command round-trips; hostile bytes are refused, state unchanged."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lockservice import commands as c
from lockservice.errors import CommandDecodeError
from lockservice.results import Reason, Refused
from lockservice.sequencer import LockMode

from .harness import Log
from .strategies import commands


@settings(max_examples=300, deadline=None)
@given(commands)
def test_every_command_round_trips(cmd: c.Command) -> None:
    assert c.decode(c.encode(cmd)) == cmd


def pack(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


HOSTILE = {
    "empty": b"",
    "not msgpack": b"\xc1",
    "truncated": c.encode(c.Put("abc", b"value"))[:-2],
    "trailing bytes": c.encode(c.Get("a")) + b"\x00",
    "a map": pack({"tag": 1}),
    "empty array": pack([]),
    "unknown tag": pack([99, 1]),
    "tag as string": pack(["1", 1, 1]),
    "too few fields": pack([1, 1000]),
    "too many fields": pack([3, 1, 2]),
    "negative integer": pack([3, -1]),
    "integer too big": pack([3, 2**64 - 1]),
    "bool as integer": pack([3, True]),
    "float": pack([4, 1.5]),
    "bytes for a name": pack([13, b"name"]),
    "str for a value": pack([11, "a", "v", None, None]),
    "unknown mode": pack([7, 1, "L", 3, False, 0, None]),
    "int for wait": pack([7, 1, "L", 1, 0, 0, None]),
    "sequencer too short": pack([10, ["L", 1, 1]]),
    "invalid utf-8": b"\x92\x0d\xa2\xff\xfe",
    "nested bomb": b"\x91" * 100_000,
}


@pytest.mark.parametrize("data", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_command_bytes_are_refused_and_change_nothing(data: bytes) -> None:
    with pytest.raises(CommandDecodeError):
        c.decode(data)
    log = Log()
    s = log.session()
    log(c.Acquire(s, "L", LockMode.EXCLUSIVE, False, now=5))
    log(c.Put("k", b"v", ephemeral_session=s))
    before = log.fsm.snapshot()
    result = log.fsm.apply(100, data)
    assert isinstance(result, Refused) and result.reason is Reason.BAD_COMMAND
    assert result == log.fsm.apply(101, data)  # the same refusal on every replica
    assert log.fsm.snapshot() == before


def test_oversized_command_is_refused_before_unpacking() -> None:
    with pytest.raises(CommandDecodeError, match="at most"):
        c.decode(pack([13, "x" * (c.MAX_COMMAND_BYTES + 1)]))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_decode_to_a_command_or_a_clear_error(data: bytes) -> None:
    try:
        cmd = c.decode(data)
    except CommandDecodeError as exc:
        assert str(exc)
    else:
        assert c.decode(c.encode(cmd)) == cmd
