"""Recent events of a node, for the status page: a bounded ring buffer fed by logging.

Theory of operation

- The parts of a node already log their notable moments at INFO or above: ring changes and
  joins (kvstore.membership), nodes down and up (kvstore.gossiper's failure detector, the
  coordinator's routing, kvstore.peers' reachability), lock-service leadership
  (lockservice.server, raft.driver, raft.core), hinted handoff and partition transfers
  (kvstore.handoff, kvstore.transfer) and anti-entropy repairs (antientropy.scheduler).
  `EventLog.attach()` adds one `EventHandler` to exactly those loggers (`SOURCES`, logger
  name -> kind); no module calls into this one, so nothing new is sprinkled through them.
- Each record becomes an `Event(seq, time, kind, level, text)` in a deque of `capacity`
  events (default 200): the oldest fall out, so memory is bounded however chatty a part
  gets. `seq` rises by one per event from 1, so a reader tells new events from ones it has
  seen, and `dropped` counts those that fell out.
- Level: only records that pass their logger's effective level reach the handler, which is
  the node's `--log-level` (kvstore/logs.py sets the root's); at `warning` the page shows
  warnings only (nodes down, failed hand-offs). The handler's own level is INFO, so DEBUG
  chatter (each gossip failure) never enters.
- Threads: a logging handler may be called from worker threads (storage work runs in
  `asyncio.to_thread`); `logging.Handler.handle` holds the handler's lock around `emit`, and
  readers copy the deque under the same lock.
- One process, one node: the loggers belong to the process, so a process that runs several
  nodes (some in-process tests do) would show each of them everyone's events; `kv serve`
  runs one node. Records logged before `attach()` (the node's start-up) are not seen.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

DEFAULT_CAPACITY = 200  # events kept; the page shows the newest
MAX_TEXT = 500  # characters of a message kept (log lines can carry long reprs)

# Logger name -> event kind. The kinds the page knows: membership, node, lock, handoff, aae.
SOURCES: Mapping[str, str] = {
    "kvstore.membership": "membership",
    "kvstore.gossiper": "node",
    "kvstore.coordinator": "node",
    "kvstore.peers": "node",
    "kvstore.handoff": "handoff",
    "kvstore.transfer": "handoff",
    "lockservice.server": "lock",
    "raft.driver": "lock",
    "raft.core": "lock",
    "antientropy.scheduler": "aae",
}


@dataclass(frozen=True, slots=True)
class Event:
    seq: int  # 1, 2, 3, ... in the order the events were recorded
    time: float  # seconds since the epoch (the log record's creation time)
    kind: str  # one of SOURCES' values
    level: str  # INFO, WARNING, ERROR, CRITICAL
    text: str  # the log message, at most MAX_TEXT characters

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "time": self.time, "kind": self.kind, "level": self.level,
                "text": self.text}


class EventLog:
    """The newest `capacity` events. O(1) per event; `recent` is O(capacity)."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY,
                 sources: Mapping[str, str] = SOURCES) -> None:
        if type(capacity) is not int or capacity < 1:
            raise ValueError(f"capacity must be a positive int: {capacity!r}")
        self.capacity = capacity
        self.sources = dict(sources)
        self._events: deque[Event] = deque(maxlen=capacity)
        self._seq = 0
        self.handler = EventHandler(self)
        self._attached: list[logging.Logger] = []

    @property
    def dropped(self) -> int:
        """Events that fell out of the buffer (recorded minus kept)."""
        return self._seq - len(self._events)

    def add(self, kind: str, level: str, text: str, when: float) -> Event:
        """Record one event (callers outside the handler hold no lock: tests, one thread)."""
        self._seq += 1
        event = Event(self._seq, when, kind, level, text[:MAX_TEXT])
        self._events.append(event)
        return event

    def recent(self, limit: int | None = None) -> list[Event]:
        """The newest `limit` events (all kept when None), newest first."""
        self.handler.acquire()
        try:
            events = list(self._events)
        finally:
            self.handler.release()
        events.reverse()
        return events if limit is None else events[:max(0, limit)]

    def attach(self, names: Iterable[str] | None = None) -> None:
        """Add the handler to the loggers named in `sources` (or `names`); idempotent."""
        for name in self.sources if names is None else names:
            logger = logging.getLogger(name)
            if self.handler not in logger.handlers:
                logger.addHandler(self.handler)
                self._attached.append(logger)

    def detach(self) -> None:
        """Remove the handler from every logger `attach` added it to."""
        for logger in self._attached:
            logger.removeHandler(self.handler)
        self._attached.clear()


class EventHandler(logging.Handler):
    """Turns the log records of the source loggers into events of one EventLog."""

    def __init__(self, log: EventLog) -> None:
        super().__init__(level=logging.INFO)
        self.log = log

    def emit(self, record: logging.LogRecord) -> None:
        kind = self._kind(record.name)
        if kind is None:
            return
        try:
            text = record.getMessage()
        except Exception:  # a bad format string in someone's log call: keep the raw one
            text = str(record.msg)
        self.log.add(kind, record.levelname, text, record.created)

    def _kind(self, name: str) -> str | None:
        """The kind of the nearest source logger at or above `name` (children included)."""
        sources = self.log.sources
        while name:
            if name in sources:
                return sources[name]
            name = name.rpartition(".")[0]
        return None


__all__ = ["DEFAULT_CAPACITY", "MAX_TEXT", "SOURCES", "Event", "EventHandler", "EventLog"]
