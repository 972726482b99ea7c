"""The node's `/metrics`: Prometheus text exposition from a per-node registry.

Theory of operation

- Each node owns one `prometheus_client.CollectorRegistry` (never the process-global one,
  so two nodes in one process, as in tests, do not share counters).
- Request metrics are the only ones kept here: `request_metrics` (an aiohttp middleware
  the node mounts outermost) times every public `/kv/` request and counts it by operation
  (get, put, delete; `other` for any other method) and outcome (ok, not_found,
  bad_request, quorum_failed, unavailable, sequencer_rejected, sibling_limit, too_large,
  method_not_allowed, error). The outcome is read from the answer's status and, for
  errors, its JSON `error` code, so the handlers need no metrics code at all.
- Everything else is read at scrape time from the parts' own `stats()`/`status()` by
  `StatsCollector`, so nothing is counted twice: coordinator operations and quorum
  failures, pending hints (in all and per owner), handoff deliveries, anti-entropy
  exchanges, repairs, bytes and exchange durations, the Raft term / commit / applied
  index, lock sessions, locks held and waiters, and the replica engine's (LSM) flushes,
  compactions, write stalls and bytes per level. A source that fails is logged and left
  out of that scrape; the others still answer.
- Raft leader changes (`ringlock_raft_leader_changes_total`) are the Raft driver's own
  count of the times this voter learnt of a new leader, so none is missed between
  scrapes. `ringlock_raft_term` rises with every election.
- `GET /metrics` answers the registry in the text format (`CONTENT_TYPE`); other
  methods get 405 (aiohttp's, turned into JSON by http_api.json_errors).

Metric names and what they mean: docs/metrics.md.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)

logger = logging.getLogger(__name__)

PATH = "/metrics"
# The classic text format, which every Prometheus version reads (prometheus-client 0.21+
# calls its own output "version=1.0.0"; with plain metric names it is the same bytes).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPS = {"GET": "get", "HEAD": "get", "PUT": "put", "DELETE": "delete"}
# Seconds; a local quorum takes about a millisecond, the default deadline is 5 s.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
           10.0)
_BY_CODE = {"invalid_request": "bad_request", "invalid_context": "bad_request",
            "not_found": "not_found", "quorum": "quorum_failed", "unavailable": "unavailable",
            "sequencer_rejected": "sequencer_rejected", "sibling_limit": "sibling_limit",
            "too_large": "too_large", "method_not_allowed": "method_not_allowed",
            "internal": "error"}
_BY_STATUS = {400: "bad_request", 404: "not_found", 405: "method_not_allowed",
              409: "conflict", 413: "too_large", 503: "unavailable"}

Stats = Callable[[], dict | None]


def outcome_of(status: int, body: bytes | None) -> str:
    """The outcome label of an answer: `ok` below 400, else from its JSON error code."""
    if status < 400:
        return "ok"
    if body:
        try:
            code = json.loads(body).get("error")
        except (ValueError, AttributeError):
            code = None
        if code in _BY_CODE:
            return _BY_CODE[code]
    return _BY_STATUS.get(status, "error")


@dataclass(frozen=True)
class Sources:
    """Where the collector reads at scrape time; each returns None when the part is absent.

    `lock` returns the node's LockServer (its `status()` and replicated `fsm`)."""

    coordinator: Stats
    replica: Stats
    hints: Stats
    handoff: Stats
    aae: Stats
    lock: Callable[[], Any]


class NodeMetrics:
    """One node's registry, request middleware and `/metrics` route."""

    def __init__(self, node: str, sources: Sources) -> None:
        self.node = node
        self.registry = CollectorRegistry()
        self.requests = Counter("ringlock_kv_requests", "Public KV requests answered, by "
                                "operation and outcome.", ("op", "outcome"),
                                registry=self.registry)
        self.latency = Histogram("ringlock_kv_request_duration_seconds", "Time to answer a "
                                 "public KV request, by operation.", ("op",),
                                 buckets=BUCKETS, registry=self.registry)
        self.auth_denied = Counter("ringlock_auth_denied", "Requests refused by the auth "
                                   "middleware (kvstore/auth_http.py), by reason.",
                                   ("reason",), registry=self.registry)
        self.registry.register(StatsCollector(node, sources))

    def observe(self, op: str, outcome: str, seconds: float) -> None:
        self.requests.labels(op, outcome).inc()
        self.latency.labels(op).observe(seconds)

    @web.middleware
    async def middleware(self, request: web.Request, handler) -> web.StreamResponse:
        path = request.rel_url.raw_path
        if not (path.startswith("/kv/") or path == "/kv"):
            return await handler(request)
        op = OPS.get(request.method, "other")
        start = time.perf_counter()
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            self.observe(op, outcome_of(exc.status, exc.body), time.perf_counter() - start)
            raise
        except BaseException:
            self.observe(op, "error", time.perf_counter() - start)
            raise
        body = response.body if isinstance(response, web.Response) else None
        self.observe(op, outcome_of(response.status,
                                    body if isinstance(body, bytes) else None),
                     time.perf_counter() - start)
        return response

    async def handle(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.registry),
                            headers={"Content-Type": CONTENT_TYPE})

    def routes(self) -> list[web.RouteDef]:
        return [web.get(PATH, self.handle)]


class StatsCollector:
    """Families built from the parts' stats at each scrape (see the module docstring)."""

    def __init__(self, node: str, sources: Sources) -> None:
        self.node = node
        self.sources = sources

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("ringlock_node_info", "This node's name.", labels=("node",))
        info.add_metric((self.node,), 1)
        yield info
        for name, part in (("coordinator", self._coordinator), ("hints", self._hints),
                           ("handoff", self._handoff), ("aae", self._aae),
                           ("lock", self._lock), ("replica", self._engine)):
            try:
                yield from part()
            except Exception:
                logger.warning("%s: metrics from %s failed", self.node, name, exc_info=True)

    def _coordinator(self) -> Iterator[Metric]:
        s = self.sources.coordinator() or {}
        ops = CounterMetricFamily("ringlock_coordinator_operations", "Operations this node "
                                  "coordinated or forwarded.", labels=("op",))
        for op in ("get", "put", "delete", "forwarded", "hinted"):
            if op in s:
                ops.add_metric((op,), s[op])
        yield ops
        yield _counter("ringlock_quorum_failures", "Requests whose R or W was not reached.",
                       s.get("quorum_failed", 0))
        yield _gauge("ringlock_coordinator_background_tasks", "Replication and read-repair "
                     "writes still running after their answer.", s.get("background", 0))

    def _hints(self) -> Iterator[Metric]:
        s = self.sources.hints() or {}
        yield _gauge("ringlock_hints_pending", "Hints held for other nodes.", s.get("hints", 0))
        owners = GaugeMetricFamily("ringlock_hints_pending_by_owner", "Hints held, by the "
                                   "node they belong to.", labels=("owner",))
        for owner, count in sorted((s.get("owners") or {}).items()):
            owners.add_metric((owner,), count)
        yield owners

    def _handoff(self) -> Iterator[Metric]:
        s = self.sources.handoff()
        if s is None:
            return
        yield _counter("ringlock_handoff_delivered", "Hints delivered to their owners.",
                       s.get("delivered", 0))
        yield _counter("ringlock_handoff_failed", "Hint deliveries that failed (retried).",
                       s.get("failed", 0))
        yield _counter("ringlock_handoff_rounds", "Handoff rounds run.", s.get("rounds", 0))

    def _aae(self) -> Iterator[Metric]:
        s = self.sources.aae()
        if s is None:
            return
        t = s.get("totals") or {}
        yield _counter("ringlock_aae_exchanges", "Anti-entropy exchanges completed.",
                       t.get("exchanges", 0))
        yield _counter("ringlock_aae_exchange_failures", "Anti-entropy exchanges that failed.",
                       t.get("failures", 0))
        yield _counter("ringlock_aae_keys_repaired", "Keys repaired by anti-entropy.",
                       t.get("keys_repaired", 0))
        traffic = CounterMetricFamily("ringlock_aae_bytes", "Anti-entropy exchange traffic.",
                                      labels=("direction",))
        traffic.add_metric(("sent",), t.get("bytes_sent", 0))
        traffic.add_metric(("received",), t.get("bytes_received", 0))
        yield traffic
        duration = SummaryMetricFamily("ringlock_aae_exchange_duration_seconds",
                                       "Duration of anti-entropy exchanges.")
        duration.add_metric((), count_value=t.get("exchanges", 0),
                            sum_value=t.get("duration_total_s", 0.0))
        yield duration
        yield _gauge("ringlock_aae_exchange_duration_max_seconds", "Longest exchange so far.",
                     t.get("duration_max_s", 0.0))

    def _lock(self) -> Iterator[Metric]:
        server = self.sources.lock()
        if server is None:
            return
        s = server.status()
        for key, name, text in (("term", "ringlock_raft_term", "Raft current term."),
                                ("commit", "ringlock_raft_commit_index", "Raft commit index."),
                                ("applied", "ringlock_raft_applied_index",
                                 "Raft index applied to the lock table."),
                                ("last_index", "ringlock_raft_last_index",
                                 "Raft last log index."),
                                ("leader_id", "ringlock_raft_leader_id",
                                 "Raft leader id as this voter knows it (0: none)."),
                                ("sessions", "ringlock_lock_sessions", "Open lock sessions."),
                                ("waiting_requests", "ringlock_lock_waiting_requests",
                                 "Acquire requests on this voter waiting for a lock.")):
            yield _gauge(name, text, s.get(key, 0))
        yield _gauge("ringlock_raft_is_leader", "1 when this voter is the Raft leader.",
                     int(bool(s.get("is_leader"))))
        yield _counter("ringlock_raft_leader_changes", "Times this voter learnt of a new "
                       "Raft leader.", s.get("leader_changes", 0))
        locks = list(server.fsm.locks.values())
        yield _gauge("ringlock_locks_held", "Locks with at least one holder.",
                     sum(1 for lock in locks if lock.holders))
        yield _gauge("ringlock_lock_waiters", "Sessions queued on held locks.",
                     sum(len(lock.waiters) for lock in locks))

    def _engine(self) -> Iterator[Metric]:
        s = (self.sources.replica() or {}).get("engine")
        if not s:
            return
        for key, text in (("flushes", "Memtable flushes."), ("compactions", "Compactions."),
                          ("trivial_moves", "Compactions that moved a file down a level."),
                          ("stalls", "Writes stopped until a flush or compaction caught up."),
                          ("slowdowns", "Writes slowed for the compactions to catch up.")):
            yield _counter(f"ringlock_lsm_{key}", f"Replica engine: {text}", s.get(key, 0))
        yield _counter("ringlock_lsm_stall_seconds", "Replica engine: time writes spent "
                       "stalled.", s.get("stall_seconds", 0.0))
        traffic = CounterMetricFamily("ringlock_lsm_compaction_bytes", "Replica engine: "
                                      "compaction traffic.", labels=("direction",))
        traffic.add_metric(("read",), s.get("compaction_bytes_read", 0))
        traffic.add_metric(("written",), s.get("compaction_bytes_written", 0))
        yield traffic
        level_bytes = GaugeMetricFamily("ringlock_lsm_level_bytes", "Replica engine: table "
                                        "bytes per level.", labels=("level",))
        level_files = GaugeMetricFamily("ringlock_lsm_level_files", "Replica engine: table "
                                        "files per level.", labels=("level",))
        for level, (size, files) in enumerate(zip(s.get("bytes_per_level", ()),
                                                  s.get("files_per_level", ()), strict=False)):
            level_bytes.add_metric((str(level),), size)
            level_files.add_metric((str(level),), files)
        yield level_bytes
        yield level_files
        yield _gauge("ringlock_lsm_memtable_bytes", "Replica engine: memtable bytes.",
                     s.get("memtable_bytes", 0))


def _counter(name: str, text: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, text, value=value)


def _gauge(name: str, text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, text, value=value)


__all__ = ["BUCKETS", "PATH", "NodeMetrics", "Sources", "StatsCollector", "outcome_of"]
