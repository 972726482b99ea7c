"""A small key/value state machine for tests, the demo node and the benchmark.

Commands are msgpack arrays: `["put", key, value]` (result: the new revision),
`["incr", key]` (result: the counter's new value) and `["cas", key, expected, value]`
(result: true if it swapped). Keys and values are strings or bytes. Besides the map it keeps
a hash chain over every (index, command) applied (carried in snapshots), so tests can check
that replicas applied the same commands in the same order: equal `last_applied` must mean
equal `digest`.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgpack


class CommandError(ValueError):
    """A command the state machine does not understand; raised to the proposer."""


def put(key: str, value: Any) -> bytes:
    return msgpack.packb(["put", key, value], use_bin_type=True)


def incr(key: str) -> bytes:
    return msgpack.packb(["incr", key], use_bin_type=True)


class KVStateMachine:
    def __init__(self) -> None:
        self.data: dict[Any, Any] = {}
        self.revision = 0
        self.last_applied = 0
        self.digest = b""

    def apply(self, index: int, command: bytes) -> Any:
        assert index > self.last_applied, f"index {index} applied after {self.last_applied}"
        self.last_applied = index
        self.digest = hashlib.blake2b(
            self.digest + index.to_bytes(8, "big") + command, digest_size=16
        ).digest()
        try:
            op = msgpack.unpackb(command, raw=False)
        except Exception as exc:
            raise CommandError(f"undecodable command: {exc}") from None
        if not isinstance(op, list) or not op:
            raise CommandError("a command is a non-empty array")
        if op[0] == "put" and len(op) == 3:
            self.revision += 1
            self.data[op[1]] = op[2]
            return self.revision
        if op[0] == "incr" and len(op) == 2:
            value = int(self.data.get(op[1], 0)) + 1
            self.data[op[1]] = value
            return value
        if op[0] == "cas" and len(op) == 4:
            if self.data.get(op[1]) == op[2]:
                self.data[op[1]] = op[3]
                return True
            return False
        raise CommandError(f"unknown command {op[0]!r} with {len(op) - 1} arguments")

    def get(self, key: Any) -> Any:
        return self.data.get(key)

    def snapshot(self) -> bytes:
        return msgpack.packb(
            [self.revision, self.last_applied, self.digest, list(self.data.items())],
            use_bin_type=True,
        )

    def restore(self, data: bytes) -> None:
        revision, last_applied, digest, items = msgpack.unpackb(data, raw=False)
        self.revision = revision
        self.last_applied = last_applied
        self.digest = digest
        self.data = {k: v for k, v in items}
