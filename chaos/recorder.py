"""Recording operations as they happen: one history line per invoke and per completion.

Every client of a run is a task in the harness's one event loop, so `time.monotonic_ns()`
is one clock for all of them. A line is written (and flushed) as soon as it is known, so a
harness that dies mid-run still leaves a history that the checkers can read (its open
invokes count as indeterminate). `perform` wraps one client call: it writes the invoke,
awaits the call under a deadline, and writes `ok` with the result, or the completion that
the workload's `classify` gives the exception: `fail` only when the operation surely did
not happen, `info` otherwise (a timeout is always `info`; Jepsen's rule).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from chaos.history import OpType, Record

logger = logging.getLogger(__name__)

Classify = Callable[[str, BaseException], OpType]


class Recorder:
    def __init__(self, path: Path | None = None) -> None:
        self.records: list[Record] = []
        self._out = open(path, "w", encoding="utf-8") if path else None  # noqa: SIM115
        self.counts = {t: 0 for t in OpType}

    def add(self, kind: OpType, process: int, f: str, key: Any = None, value: Any = None,
            **extra: Any) -> Record:
        record = Record(kind, process, f, time.monotonic_ns(), key, value, extra)
        self.records.append(record)
        self.counts[kind] += 1
        if self._out is not None:
            self._out.write(record.to_json() + "\n")
            self._out.flush()
        return record

    async def perform(self, process: int, f: str, key: Any, value: Any,
                      call: Callable[[], Awaitable[Any]], classify: Classify, *,
                      timeout_s: float) -> tuple[OpType, Any]:
        self.add(OpType.INVOKE, process, f, key, value)
        try:
            result = await asyncio.wait_for(call(), timeout_s)
        except TimeoutError:
            self.add(OpType.INFO, process, f, key, error="timeout")
            return OpType.INFO, None
        except asyncio.CancelledError:
            self.add(OpType.INFO, process, f, key, error="cancelled at the end of the run")
            raise
        except Exception as exc:  # every failure is recorded, then classified
            kind = classify(f, exc)
            self.add(kind, process, f, key, error=f"{type(exc).__name__}: {exc}"[:300])
            return kind, None
        self.add(OpType.OK, process, f, key, result)
        return OpType.OK, result

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None
