"""The commands of the lock table and their msgpack codec (the one edge module for them).

Wire format (msgpack, version 1): an array `[tag, field1, field2, ...]` with exactly the
fields of the command class, in declaration order. Tags and field orders are on the wire and
in Raft logs: do not change them; add new commands with new tags. Field kinds:

    u64     a msgpack integer in 0 .. 2**63-1 (booleans are not integers here)
    str     a msgpack str (UTF-8); size limits are the state machine's business
    bytes   a msgpack bin
    bool    a msgpack bool
    mode    an integer value of `LockMode`
    opt_X   nil or an X

`now` is the proposing leader's clock in milliseconds; it is the only way time enters the
state machine. OpenClientSession (tag 16) came after the first release: every member must
run code that knows it before any member proposes it (upgrade all members first; a member
that cannot decode a command refuses it, and its table would lack that session).
`decode` raises `CommandDecodeError` for anything else, with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import msgpack

from lockservice.errors import CommandDecodeError
from lockservice.sequencer import LockMode, Sequencer

MAX_U64 = 2**63 - 1
# A command is small; refuse to unpack anything bigger than a generous bound.
MAX_COMMAND_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class OpenSession:
    ttl_ms: int
    now: int


@dataclass(frozen=True, slots=True)
class OpenClientSession:
    """OpenSession counted under `client` (Limits.max_sessions_per_client)."""

    ttl_ms: int
    now: int
    client: str


@dataclass(frozen=True, slots=True)
class KeepAlive:
    session: int
    now: int
    ack: int = 0  # events with seq <= ack were delivered and are forgotten


@dataclass(frozen=True, slots=True)
class CloseSession:
    session: int


@dataclass(frozen=True, slots=True)
class ExpireSessions:
    now: int


@dataclass(frozen=True, slots=True)
class ExpireSession:
    session: int
    now: int


@dataclass(frozen=True, slots=True)
class GrantFreshLeases:
    now: int


@dataclass(frozen=True, slots=True)
class Acquire:
    session: int
    name: str
    mode: LockMode
    wait: bool
    now: int
    lock_delay_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Release:
    session: int
    name: str


@dataclass(frozen=True, slots=True)
class CancelWait:
    session: int
    name: str


@dataclass(frozen=True, slots=True)
class CheckSequencer:
    sequencer: Sequencer


@dataclass(frozen=True, slots=True)
class Put:
    name: str
    value: bytes
    expected_version: int | None = None  # 0: the entry must not exist
    ephemeral_session: int | None = None


@dataclass(frozen=True, slots=True)
class Delete:
    name: str
    expected_version: int | None = None


@dataclass(frozen=True, slots=True)
class Get:
    name: str


@dataclass(frozen=True, slots=True)
class Watch:
    session: int
    prefix: str


@dataclass(frozen=True, slots=True)
class Unwatch:
    session: int
    prefix: str


Command = (
    OpenSession
    | KeepAlive
    | CloseSession
    | ExpireSessions
    | ExpireSession
    | GrantFreshLeases
    | Acquire
    | Release
    | CancelWait
    | CheckSequencer
    | Put
    | Delete
    | Get
    | Watch
    | Unwatch
    | OpenClientSession
)

# tag -> (class, field kinds). On the wire: do not change.
_SPEC: dict[int, tuple[type, tuple[str, ...]]] = {
    1: (OpenSession, ("u64", "u64")),
    2: (KeepAlive, ("u64", "u64", "u64")),
    3: (CloseSession, ("u64",)),
    4: (ExpireSessions, ("u64",)),
    5: (ExpireSession, ("u64", "u64")),
    6: (GrantFreshLeases, ("u64",)),
    7: (Acquire, ("u64", "str", "mode", "bool", "u64", "opt_u64")),
    8: (Release, ("u64", "str")),
    9: (CancelWait, ("u64", "str")),
    10: (CheckSequencer, ("sequencer",)),
    11: (Put, ("str", "bytes", "opt_u64", "opt_u64")),
    12: (Delete, ("str", "opt_u64")),
    13: (Get, ("str",)),
    14: (Watch, ("u64", "str")),
    15: (Unwatch, ("u64", "str")),
    16: (OpenClientSession, ("u64", "u64", "str")),
}
_TAG = {cls: tag for tag, (cls, _) in _SPEC.items()}


def _check(kind: str, value: Any, where: str) -> Any:
    """Return `value` as the Python value of `kind`, or raise CommandDecodeError."""
    if kind.startswith("opt_"):
        return None if value is None else _check(kind[4:], value, where)
    if kind == "u64":
        if type(value) is not int or not 0 <= value <= MAX_U64:
            raise CommandDecodeError(f"{where}: expected an integer in 0..2**63-1")
        return value
    if kind == "str":
        if type(value) is not str:
            raise CommandDecodeError(f"{where}: expected a string")
        return value
    if kind == "bytes":
        if type(value) is not bytes:
            raise CommandDecodeError(f"{where}: expected bytes")
        return value
    if kind == "bool":
        if type(value) is not bool:
            raise CommandDecodeError(f"{where}: expected a boolean")
        return value
    if kind == "mode":
        if type(value) is not int or value not in LockMode._value2member_map_:
            raise CommandDecodeError(f"{where}: expected a lock mode (1 or 2)")
        return LockMode(value)
    if kind == "sequencer":
        if type(value) is not list or len(value) != 4:
            raise CommandDecodeError(f"{where}: expected [name, mode, generation, session]")
        return Sequencer(
            _check("str", value[0], f"{where}.name"),
            _check("mode", value[1], f"{where}.mode"),
            _check("u64", value[2], f"{where}.generation"),
            _check("u64", value[3], f"{where}.session"),
        )
    raise AssertionError(f"unknown field kind {kind}")


def _wire(value: Any) -> Any:
    if isinstance(value, Sequencer):
        return [value.name, int(value.mode), value.generation, value.session]
    if isinstance(value, LockMode):
        return int(value)
    return value


def encode(command: Command) -> bytes:
    """The wire bytes of `command`. Requires: its fields have the documented kinds."""
    tag = _TAG[type(command)]
    values = [_wire(getattr(command, f.name)) for f in fields(command)]
    return msgpack.packb([tag, *values], use_bin_type=True)


def decode(data: bytes) -> Command:
    """The command in `data`; raises CommandDecodeError for anything `encode` never writes."""
    if type(data) is not bytes:
        raise CommandDecodeError("a command is bytes")
    if len(data) > MAX_COMMAND_BYTES:
        raise CommandDecodeError(f"a command is at most {MAX_COMMAND_BYTES} bytes")
    try:
        raw = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    except Exception as exc:  # msgpack raises several types for bad input
        raise CommandDecodeError(f"not msgpack: {type(exc).__name__}") from None
    if type(raw) is not list or not raw:
        raise CommandDecodeError("a command is a non-empty array")
    tag = raw[0]
    if type(tag) is not int or tag not in _SPEC:
        raise CommandDecodeError(f"unknown command tag {tag!r}")
    cls, kinds = _SPEC[tag]
    if len(raw) != 1 + len(kinds):
        raise CommandDecodeError(f"{cls.__name__} has {len(kinds)} fields, got {len(raw) - 1}")
    names = [f.name for f in fields(cls)]
    values = [
        _check(kind, value, f"{cls.__name__}.{name}")
        for kind, value, name in zip(kinds, raw[1:], names, strict=True)
    ]
    return cls(*values)
