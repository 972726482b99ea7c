"""Read views: `Snapshot` (a sequence number the engine keeps readable) and `Scan` (an
iterator over one snapshot that pins the version whose tables it reads).

Releasing either never blocks (engine._release): `__del__` may run inside the garbage
collector while the same thread holds the engine's mutex, so a release that cannot take
the mutex at once is queued and done at the engine's next chance.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from itertools import chain
from typing import TYPE_CHECKING

from .errors import InvalidArgumentError
from .version import Version

if TYPE_CHECKING:
    from .engine import Engine


class Snapshot:
    """A consistent read view at one sequence number; release() (or `with`) frees it."""

    __slots__ = ("__weakref__", "_engine", "_released", "seq")

    def __init__(self, engine: Engine, seq: int) -> None:
        self._engine = engine
        self.seq = seq
        self._released = False

    def get(self, key: bytes) -> bytes | None:
        self._check()
        return self._engine.get(key, snapshot=self)

    def scan(self, start: bytes | None = None, end: bytes | None = None) -> Scan:
        self._check()
        return self._engine.scan(start, end, snapshot=self)

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._engine._release(None, self.seq)

    def _check(self) -> None:
        if self._released:
            raise InvalidArgumentError("snapshot used after release()")

    def __enter__(self) -> Snapshot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        if not self._released:
            with contextlib.suppress(Exception):
                self.release()


class Scan:
    """Iterator of (key, value) over [start, end) at one snapshot. Holds the version it
    reads (its files stay on disk) until exhausted or closed; use `with` or close()."""

    def __init__(self, engine: Engine, runs: Iterator[list[tuple[bytes, bytes]]],
                 version: Version, seq: int) -> None:
        """`runs`: lists of (key, value) in key order (merge.merge_visible_runs)."""
        self._engine: Engine | None = engine
        self._version = version
        self._seq = seq
        self._runs = self._run(runs)
        # A `for` loop over the scan then runs at C level between runs: no Python frame
        # per pair.
        self._it = chain.from_iterable(self._runs)

    def _run(self, runs: Iterator[list[tuple[bytes, bytes]]]
             ) -> Iterator[list[tuple[bytes, bytes]]]:
        try:
            yield from runs
        finally:
            self._release()

    def __iter__(self) -> Iterator[tuple[bytes, bytes]]:
        return self._it

    def __next__(self) -> tuple[bytes, bytes]:
        return next(self._it)

    def close(self) -> None:
        self._runs.close()
        self._release()

    def _release(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            engine._release(self._version, self._seq)

    def __enter__(self) -> Scan:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self._release()
