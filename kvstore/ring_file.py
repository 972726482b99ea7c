"""The ring on disk: `DIR/ring` and `DIR/ring.handoff`, each written atomically.

- `DIR/ring` holds `Ring.to_bytes()` (format in kvstore/ring.py) of the ring this node
  acts on. It is written before the node acts on a new ring (serves by it, gossips it,
  starts transfers), so after a crash the node resumes on a ring it may already have acted
  on, never an older one.
- `DIR/ring.handoff` holds the ring that was current when the data on this node last
  matched it: the *base* of the transfers still owed (kvstore/transfer.py). It is written
  before `DIR/ring` when a new ring arrives and no base is pending, and removed once every
  transfer is done, so a node restarted mid-transfer recomputes what it still owes.
- Atomic write: write `NAME.tmp`, fsync it, rename over `NAME`, fsync the folder. A crash
  leaves the old file or the new one, never a torn one; a leftover `.tmp` is ignored.
  Reading validates every byte (Ring.from_bytes raises InvalidRing on damage); a damaged
  ring file stops the node with that error rather than starting it on a guess.

The functions block (fsync): call them in a thread (`asyncio.to_thread`).
"""

from __future__ import annotations

import os
from pathlib import Path

from kvstore.ring import Ring

RING_FILE = "ring"
HANDOFF_FILE = "ring.handoff"


def write_atomically(path: Path, data: bytes) -> None:
    """Write temp, fsync, rename over `path`, fsync the folder."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def remove_durably(path: Path) -> None:
    """Remove `path` if it exists, then fsync the folder."""
    try:
        path.unlink()
    except FileNotFoundError:
        return
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_ring(path: Path) -> Ring | None:
    """The ring stored at `path`, None when there is no such file."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    return Ring.from_bytes(data)
