"""Limits the state machine enforces against abuse, each with its reason.

Exceeding one is a deterministic refusal (`Refused` with the matching `Reason`), never a
crash. Every member of a group must run with the same `Limits`: they decide what `apply`
returns, so they are part of the replicated rules (they are not carried in snapshots).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limits:
    # Names are paths people type and logs print; long names only cost memory per watch match.
    max_name_bytes: int = 256
    # Chubby stores small files; big values belong in the KV store.
    max_value_bytes: int = 16 * 1024
    # A session is a few hundred bytes of state plus its event queue.
    max_sessions: int = 100_000
    # Sessions one client may have open (OpenClientSession: per principal when the node
    # authenticates users, else per remote address), so one runaway client cannot take
    # them all.
    max_sessions_per_client: int = 1_000
    # The client id a session is counted under (an address or a principal's name).
    max_client_bytes: int = 256
    # Bounds the FIFO a single lock can accumulate (one waiter per session per lock).
    max_waiters_per_lock: int = 1_024
    # Locks held plus locks waited on, per session: bounds the work of expiring one session.
    max_locks_per_session: int = 1_024
    # Each watch is matched against every event's name.
    max_watches_per_session: int = 64
    # Oldest events are dropped beyond this, counted in `PendingEvents.dropped`.
    max_events_per_session: int = 256
    # Entries across the whole table.
    max_entries: int = 100_000
    # Leases: at least 1 ms, at most one hour.
    min_ttl_ms: int = 1
    max_ttl_ms: int = 3_600_000
    # Lock-delay when an Acquire does not give one (Chubby §2.4 suggests about a minute;
    # we default lower), and the most a client may ask for.
    default_lock_delay_ms: int = 10_000
    max_lock_delay_ms: int = 60_000

    def __post_init__(self) -> None:
        if not 0 <= self.default_lock_delay_ms <= self.max_lock_delay_ms:
            raise ValueError("default_lock_delay_ms must be in 0..max_lock_delay_ms")
        if self.max_sessions_per_client < 1 or self.max_client_bytes < 1:
            raise ValueError("max_sessions_per_client and max_client_bytes are positive")
        if not 1 <= self.min_ttl_ms <= self.max_ttl_ms:
            raise ValueError("min_ttl_ms must be in 1..max_ttl_ms")
