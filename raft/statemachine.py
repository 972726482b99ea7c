"""The interface between the Raft driver and the replicated application.

The driver calls `apply` once per committed NORMAL entry with a non-empty command, in log
order, exactly once per index for the life of the state it holds (a restart restores the
newest snapshot and applies again from the index after it). `apply` must be deterministic:
every replica applies the same commands in the same order and must reach the same state.
Its return value is handed to the `propose()` caller on the node that proposed the command.
"""

from __future__ import annotations

from typing import Any, Protocol


class StateMachine(Protocol):
    def apply(self, index: int, command: bytes) -> Any:
        """Apply the command committed at `index`; return the result for the proposer."""
        ...

    def snapshot(self) -> bytes:
        """The whole state as bytes, reflecting every command applied so far."""
        ...

    def restore(self, data: bytes) -> None:
        """Replace the whole state with one that `snapshot()` produced."""
        ...
