"""Lock modes and sequencers (Chubby §2.4).

A sequencer names one grant of a lock: the lock's name, the mode, the generation of the
grant and the holding session. Generations come from one counter that increases at every
grant in the whole table, so they strictly increase per lock name, across releases, expiries,
leader changes and snapshots. A downstream service keeps the highest generation it has seen
per lock, or asks `CheckSequencer` whether a sequencer is still current.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class LockMode(enum.IntEnum):
    # On the wire and in snapshots: do not change the values.
    EXCLUSIVE = 1
    SHARED = 2


@dataclass(frozen=True, slots=True)
class Sequencer:
    name: str
    mode: LockMode
    generation: int
    session: int
