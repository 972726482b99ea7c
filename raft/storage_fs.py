"""The file-system seam of Raft storage (STYLE.md section 6).

`RealFileSystem` is what production uses. `FaultInjectionFileSystem` is a second real
implementation for crash tests: it remembers, per file, how many bytes were fsynced and
whether its directory entry was made durable (by `sync_dir` after its creation or rename),
and `crash()` leaves on disk what a power loss could have left: files cut to their synced
length, files created since the last `sync_dir` deleted, renames since the last `sync_dir`
undone. Removals are treated as durable at once (a simplification: a crash could bring a
removed file back, which recovery tolerates anyway because it reads every file it finds).
"""

from __future__ import annotations

import os
from typing import Protocol


class WritableFile(Protocol):
    path: str

    def append(self, data: bytes) -> None: ...
    def sync(self) -> None: ...
    def close(self) -> None: ...
    @property
    def size(self) -> int: ...


class FileSystem(Protocol):
    def open_writable(self, path: str) -> WritableFile: ...
    def open_appendable(self, path: str) -> WritableFile: ...
    def read_file(self, path: str) -> bytes: ...
    def rename(self, src: str, dst: str) -> None: ...
    def remove(self, path: str) -> None: ...
    def exists(self, path: str) -> bool: ...
    def listdir(self, path: str) -> list[str]: ...
    def mkdir(self, path: str) -> None: ...
    def sync_dir(self, path: str) -> None: ...
    def truncate(self, path: str, size: int) -> None: ...


class RealWritableFile:
    def __init__(self, path: str, flags: int) -> None:
        self.path = path
        self._fd = os.open(path, flags | os.O_WRONLY | os.O_CREAT, 0o644)
        self._size = os.fstat(self._fd).st_size

    def append(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        self._size += len(data)

    def sync(self) -> None:
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    @property
    def size(self) -> int:
        return self._size


class RealFileSystem:
    def open_writable(self, path: str) -> RealWritableFile:
        return RealWritableFile(path, os.O_TRUNC)

    def open_appendable(self, path: str) -> RealWritableFile:
        return RealWritableFile(path, os.O_APPEND)

    def read_file(self, path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    def rename(self, src: str, dst: str) -> None:
        os.replace(src, dst)

    def remove(self, path: str) -> None:
        os.remove(path)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def listdir(self, path: str) -> list[str]:
        return sorted(os.listdir(path))

    def mkdir(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)

    def sync_dir(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def truncate(self, path: str, size: int) -> None:
        os.truncate(path, size)


class _TrackedFile(RealWritableFile):
    def __init__(self, fs: FaultInjectionFileSystem, path: str, flags: int) -> None:
        super().__init__(path, flags)
        self._fs = fs

    def sync(self) -> None:
        super().sync()
        self._fs.synced_size[self.path] = self.size


class FaultInjectionFileSystem(RealFileSystem):
    """Real files, plus a record of what was made durable, and `crash()` to lose the rest."""

    def __init__(self) -> None:
        self.synced_size: dict[str, int] = {}
        self.undurable: set[str] = set()  # created since the last sync_dir of their folder
        self.pending_renames: list[tuple[str, str]] = []

    def _created(self, path: str) -> None:
        if not os.path.exists(path):
            self.undurable.add(path)
            self.synced_size[path] = 0
        else:
            self.synced_size.setdefault(path, os.path.getsize(path))

    def open_writable(self, path: str) -> _TrackedFile:
        self._created(path)
        self.synced_size[path] = 0
        return _TrackedFile(self, path, os.O_TRUNC)

    def open_appendable(self, path: str) -> _TrackedFile:
        self._created(path)
        return _TrackedFile(self, path, os.O_APPEND)

    def rename(self, src: str, dst: str) -> None:
        super().rename(src, dst)
        self.pending_renames.append((src, dst))
        self.synced_size[dst] = self.synced_size.pop(src, os.path.getsize(dst))

    def remove(self, path: str) -> None:
        super().remove(path)
        self.synced_size.pop(path, None)
        self.undurable.discard(path)

    def truncate(self, path: str, size: int) -> None:
        super().truncate(path, size)
        self.synced_size[path] = min(self.synced_size.get(path, size), size)

    def sync_dir(self, path: str) -> None:
        super().sync_dir(path)
        folder = os.path.abspath(path)

        def elsewhere(p: str) -> bool:
            return os.path.dirname(os.path.abspath(p)) != folder

        self.undurable = {p for p in self.undurable if elsewhere(p)}
        self.pending_renames = [(s, d) for s, d in self.pending_renames if elsewhere(d)]

    def crash(self) -> None:
        """Leave on disk only what was durable. Close every file handle before calling."""
        for src, dst in reversed(self.pending_renames):
            if os.path.exists(dst):
                os.replace(dst, src)
                self.synced_size[src] = self.synced_size.pop(dst, 0)
        self.pending_renames.clear()
        for path in list(self.undurable):
            if os.path.exists(path):
                os.remove(path)
            self.synced_size.pop(path, None)
        self.undurable.clear()
        for path, size in list(self.synced_size.items()):
            if os.path.exists(path) and os.path.getsize(path) > size:
                os.truncate(path, size)
