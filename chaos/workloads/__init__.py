"""One file per workload (Jepsen's layout): its client operations, final reads and checker.

    register   the lock service's entries: read / write / compare-and-set, linearizable
    set        the Dynamo store: unique adds to a few keys, no acknowledged add lost
    lock       the lock service's locks, with writes fenced by sequencers in the store
    election   the election helper: at most one leader at a time
"""

from __future__ import annotations

from chaos.workloads.base import Workload
from chaos.workloads.election import ElectionWorkload
from chaos.workloads.lock import LockWorkload
from chaos.workloads.register import RegisterWorkload
from chaos.workloads.set import SetWorkload

WORKLOADS: dict[str, type[Workload]] = {
    "register": RegisterWorkload,
    "set": SetWorkload,
    "lock": LockWorkload,
    "election": ElectionWorkload,
}

__all__ = ["WORKLOADS", "Workload"]
