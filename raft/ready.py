"""What the core hands the driver: one `Ready` at a time, and the small values inside it."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from raft.messages import ConfState, Entry, HardState, Message, Snapshot


class Role(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile state the driver may want to show or route by; never persisted."""

    leader: int  # 0: no leader known in the current term
    role: Role


@dataclass(frozen=True, slots=True)
class ReadState:
    """A ReadIndex answer: the read tagged `context` may be served once applied >= index."""

    context: bytes
    index: int


@dataclass(frozen=True, slots=True)
class Ready:
    """Everything the core needs done, in the order the driver must do it.

    The driver loop (raft/driver.py follows these steps in this order):

    1. Persist `hard_state` (if not None), then `snapshot` (if not None), then `entries`:
       first delete every stored entry with index >= entries[0].index (the truncation
       point, `truncate_from`), then append `entries`. A snapshot here came from the
       leader and the core has discarded its whole log for it: the stored log is replaced
       by it too (every stored entry goes; keeping entries after it is safe only when the
       stored entry at snapshot.meta.index has snapshot.meta.term). `entries` in the same
       Ready then start at snapshot.meta.index + 1.
    2. fsync. Nothing in `messages` may leave before step 1 is durable: votes and
       acknowledgements in them promise that state is on disk.
    3. Send `messages` (any order; the core tolerates loss, duplication and reordering).
    4. Restore the state machine from `snapshot` (if not None), then apply
       `committed_entries` in order (CONF_CHANGE entries carry a `ConfChange`, which the
       core has already taken into account; the application only records them).
    5. Answer `read_states` whose index is <= the applied index (keep the others until it is).
    6. Call `core.advance(ready)`. Only then call `core.ready()` again.

    `tick`, `step` and `propose` may be called between `ready()` and `advance()`; what they
    produce goes into the next Ready.
    """

    hard_state: HardState | None = None
    snapshot: Snapshot | None = None
    entries: tuple[Entry, ...] = ()
    messages: tuple[Message, ...] = ()
    committed_entries: tuple[Entry, ...] = ()
    read_states: tuple[ReadState, ...] = ()
    soft_state: SoftState | None = None  # only when it changed since the last Ready
    conf_state: ConfState | None = None  # only when the configuration changed

    @property
    def truncate_from(self) -> int | None:
        """Stored entries with index >= this must go before `entries` are appended."""
        return self.entries[0].index if self.entries else None
