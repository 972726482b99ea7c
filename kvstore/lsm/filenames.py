"""Names of the files in an engine folder.

    000007.log       write-ahead log number 7
    000012.sst       SSTable number 12
    MANIFEST-000003  manifest (log of VersionEdits) number 3
    CURRENT          one line: the name of the live manifest, then a newline
    CURRENT.tmp      CURRENT being replaced (written, synced, then renamed over CURRENT)
    LOCK             holds the exclusive lock of the engine that has the folder open

All numbers come from one counter (`next_file_number` in the manifest), so a number
names at most one file of any kind.
"""

from __future__ import annotations

import enum
import os

CURRENT = "CURRENT"
CURRENT_TMP = "CURRENT.tmp"
LOCK = "LOCK"


class FileKind(enum.Enum):
    LOG = "log"
    TABLE = "sst"
    MANIFEST = "manifest"
    CURRENT = "current"
    TEMP = "temp"
    LOCK = "lock"


def log_name(number: int) -> str:
    return f"{number:06d}.log"


def table_name(number: int) -> str:
    return f"{number:06d}.sst"


def manifest_name(number: int) -> str:
    return f"MANIFEST-{number:06d}"


def join(folder: str, name: str) -> str:
    return os.path.join(folder, name)


def parse(name: str) -> tuple[FileKind, int] | None:
    """The kind and number of an engine file name, or None for names that are not ours."""
    if name == CURRENT:
        return FileKind.CURRENT, 0
    if name == LOCK:
        return FileKind.LOCK, 0
    if name == CURRENT_TMP:
        return FileKind.TEMP, 0
    if name.startswith("MANIFEST-"):
        digits = name[len("MANIFEST-"):]
        return (FileKind.MANIFEST, int(digits)) if digits.isdigit() else None
    stem, dot, ext = name.partition(".")
    if not dot or not stem.isdigit():
        return None
    if ext == "log":
        return FileKind.LOG, int(stem)
    if ext == "sst":
        return FileKind.TABLE, int(stem)
    return None
