"""Errors raised by the storage engine.

    RinglockError                     (kvstore/errors.py) root of all the store raises
    └── StorageError                  root of everything the engine raises on purpose
        ├── CorruptionError           bytes on disk fail a check (.path, .offset, .reason)
        ├── InvalidArgumentError      a bad argument (also a ValueError)
        ├── EngineClosedError         the engine was used after close()
        └── LockHeldError             another engine holds the folder's LOCK file

Wrong argument *types* raise the built-in `TypeError`, as Python callers expect.
"""

from __future__ import annotations

from kvstore.errors import RinglockError


class StorageError(RinglockError):
    """Root of the storage engine's errors."""


class CorruptionError(StorageError):
    """Stored bytes failed a checksum or structural check; never served as data.

    `path` names the file, `offset` the byte offset in it where the damage was found,
    `reason` what check failed.
    """

    def __init__(self, path: str, offset: int, reason: str) -> None:
        self.path = str(path)
        self.offset = int(offset)
        self.reason = reason
        super().__init__(f"{self.path}: corruption at offset {self.offset}: {reason}")

    def __reduce__(self):  # keep path/offset/reason across pickling (worker processes)
        return (type(self), (self.path, self.offset, self.reason))


class InvalidArgumentError(StorageError, ValueError):
    """An argument has the right type but a bad value (empty key, key too long, ...)."""


class EngineClosedError(StorageError):
    """The engine (or a file it owns) was used after close()."""


class LockHeldError(StorageError):
    """The folder's LOCK file is held by another engine (this process or another)."""
