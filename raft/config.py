"""Tunables of the Raft core, each with the reason for its default."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Config:
    # Ticks without hearing from a leader before a follower campaigns; the actual timeout
    # is drawn from [election_tick, 2 * election_tick) to break split votes (Raft §5.2).
    election_tick: int = 10
    # Ticks between leader heartbeats; well under election_tick so one lost heartbeat
    # does not start an election.
    heartbeat_tick: int = 1
    # Append messages in flight per follower before the leader waits for acks (pipelining).
    max_inflight: int = 64
    # Entries per APPEND message (batching); bounds message size.
    max_entries_per_append: int = 64
    # Bytes per InstallSnapshot chunk.
    snapshot_chunk_size: int = 64 * 1024
    # Pre-vote (dissertation §9.6): a partitioned node does not inflate terms on rejoining.
    pre_vote: bool = True
    # Check-quorum (dissertation §6.2): a leader that has not heard from a majority for an
    # election timeout steps down, and followers that hear a live leader ignore votes.
    check_quorum: bool = True

    def __post_init__(self) -> None:
        if self.heartbeat_tick < 1 or self.election_tick <= self.heartbeat_tick:
            raise ValueError("need 1 <= heartbeat_tick < election_tick")
        if self.max_inflight < 1 or self.max_entries_per_append < 1:
            raise ValueError("max_inflight and max_entries_per_append must be >= 1")
        if self.snapshot_chunk_size < 1:
            raise ValueError("snapshot_chunk_size must be >= 1")
