"""The log-structured merge storage engine that each node keeps its replicas in.

    from kvstore.lsm import Engine, WriteBatch

    with Engine.open("data", sync="always") as db:
        db.put(b"k", b"v")
        db.write(WriteBatch().put(b"a", b"1").delete(b"k"))
        db.get(b"a")                       # b"1"
        for key, value in db.scan(b"a", b"z"):
            ...

Layers: engine (API, group commit, recovery) over memtable, manifest/version, compaction
and tables; those over the formats (wal_*, sstable_*, block, bloom, batch, coding) and
the file-system seam. Byte layouts: docs/formats.md.
"""

from .aio import AsyncEngine
from .batch import MAX_KEY_SIZE, MAX_VALUE_SIZE, WriteBatch
from .engine import Engine, Scan, Snapshot
from .errors import (
    CorruptionError,
    EngineClosedError,
    InvalidArgumentError,
    LockHeldError,
    StorageError,
)
from .options import Options

__all__ = [
    "MAX_KEY_SIZE",
    "MAX_VALUE_SIZE",
    "AsyncEngine",
    "CorruptionError",
    "Engine",
    "EngineClosedError",
    "InvalidArgumentError",
    "LockHeldError",
    "Options",
    "Scan",
    "Snapshot",
    "StorageError",
    "WriteBatch",
]
