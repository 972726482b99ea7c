"""What tests/test_fuzz_openapi.py needs around each fuzzed request: state digests, settling,
the case adjustments that keep a run bounded, and the tally of what was sent and answered.

"No change from a rejected request" is checked by comparing a digest of the cluster taken
just before a write request with one taken just after it was answered 4xx. The digest is
built to move on any change a request could make:

- the store: every node's storage engine `last_seq` (from `GET /status`), which every write
  to a node's replica store moves, wherever the key lands; with the ring version and
  members each node sees, its pending hints;
- anti-entropy: the target's scheduler settings (`GET /admin/v1/aae`);
- the lock service: the leader's counts of sessions, locks and entries and its last
  generation (`GET /lock/v1/status`), and for a request naming a lock or entry, that lock's
  holders, waiters and lock-delay and that entry's value and version (linearizable reads),
  under the same percent-encoded name the request used.

It can only be trusted while nothing changes by itself, so a run keeps the cluster still
between requests: after a write that succeeded (or answered 503, which may still apply),
`settle` waits until every replica holds the same copy of the key and the engines stopped
moving; fuzzed lock sessions live at least `MIN_TTL_MS` (no session expires during a run,
so nothing is released or granted behind the check's back); a successful schedule change
is undone at once. `test_digest_sees_a_change` proves the digest does move on a real
change of each kind, so an unchanged digest means something.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import time
from collections import Counter, defaultdict
from typing import Any
from urllib.parse import urlsplit

from kvstore import http_codec
from kvstore.errors import InvalidRequest

MIN_TTL_MS = 600_000  # fuzzed sessions outlive the run: none expires behind the check's back
MAX_FUZZ_WAIT_MS = 300  # a waiting acquire may hold the run this long at most
HELD_S = 2.0  # a KeepAlive long poll is held up to 30 s; the fuzzer waits this long
REQUEST_S = 30.0
SETTLE_S = 20.0


class Conn:
    """A keep-alive HTTP connection to one node (reopened when the node closed it)."""

    def __init__(self, node: str) -> None:
        self.host, port = node.rsplit(":", 1)
        self.port = int(port)
        self._conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        for attempt in range(2):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=REQUEST_S)
            try:
                self._conn.request(method, path, body=body, headers=headers or {})
                resp = self._conn.getresponse()
                return resp.status, resp.read()
            except (http.client.HTTPException, ConnectionError):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def json(self, path: str) -> tuple[int, Any]:
        status, body = self.request("GET", path)
        return status, json.loads(body) if body else None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class Probe:
    """Digests and settling for a cluster whose node `target` is being fuzzed."""

    def __init__(self, names: list[str], target: str, lock_peers: dict[int, str]) -> None:
        self.names, self.target = names, target
        self.conns = {name: Conn(name) for name in names}
        self.lock_peers = lock_peers
        self.aae_settings: dict | None = None

    def close(self) -> None:
        for conn in self.conns.values():
            conn.close()

    # -- the digest ----------------------------------------------------------------------

    def digest(self, path: str) -> dict[str, Any]:
        """The cluster's state as a request on `path` could change it (see the docstring)."""
        out: dict[str, Any] = {}
        for name, conn in self.conns.items():
            status, doc = conn.json("/status")
            assert status == 200, (name, status, doc)
            out[name] = {"seq": doc["replica"]["engine"]["last_seq"],
                         "ring_version": doc["ring_version"], "members": doc["members"],
                         "hints": doc["hints"]}
        status, aae = self.conns[self.target].json("/admin/v1/aae")
        assert status == 200, aae
        out["aae"] = aae["settings"]
        if self.lock_peers:
            out["lock"] = self.lock_digest(path)
        return out

    def leader(self, required: bool = True) -> Conn | None:
        for name in self.lock_peers.values():
            with contextlib.suppress(OSError, http.client.HTTPException, ValueError):
                status, doc = self.conns[name].json("/lock/v1/leader")
                if status == 200 and doc.get("address") in self.conns:
                    return self.conns[doc["address"]]
        if not required:
            return None
        raise AssertionError("the lock service has no leader")

    def lock_term(self) -> int:
        """The highest Raft term any lock member reports (it moves with every election)."""
        terms = [0]
        for name in self.lock_peers.values():
            with contextlib.suppress(OSError, http.client.HTTPException, ValueError):
                status, doc = self.conns[name].json("/lock/v1/leader")
                if status == 200:
                    terms.append(doc["term"])
        return max(terms)

    def lock_digest(self, path: str) -> dict[str, Any]:
        leader = self.leader()
        status, doc = leader.json("/lock/v1/status")
        assert status == 200, doc
        out = {k: doc[k] for k in ("sessions", "locks", "entries", "generation")}
        name = lock_name_of(path)
        if name is not None:
            status, lock = leader.json(f"/lock/v1/locks/{name}")
            if status == 200:
                lock.pop("clock")
                for holder in lock["holders"]:
                    holder.pop("lease_expires_at", None)  # moves with KeepAlives
            out["lock"] = (status, lock)
            out["entry"] = leader.json(f"/lock/v1/entries/{name}")
        return out

    # -- keeping the cluster still ---------------------------------------------------------

    def settle(self, method: str, url: str, status: int) -> None:
        """After a write that was not refused: wait until its effects are everywhere."""
        path = urlsplit(url).path
        if path.startswith("/kv/") and method in ("PUT", "DELETE"):
            key = kv_key_of(path)
            if key is not None and status >= 500:
                # Indeterminate: the write may be on some replicas only (its deadline ran
                # out before the others were sent to). A read of all three repairs them.
                self.conns[self.target].request("GET", f"{path}?r=3")
            if key is not None:
                self.wait_copies_equal(key)
            if status >= 500:  # copies may still be on their way
                self.wait_engines_still()
        if path.startswith("/internal/") and status < 300:
            self.wait_engines_still()
        if path == "/admin/v1/aae/schedule" and status == 200 and self.aae_settings:
            status, _ = self.conns[self.target].request(
                "POST", "/admin/v1/aae/schedule", json.dumps(self.aae_settings).encode(),
                {"Content-Type": "application/json"})
            assert status == 200
        if path == "/admin/v1/aae/rebuild" and status == 202:
            self.wait(lambda: self.conns[self.target].json("/admin/v1/aae")[1]["trees"][
                "pending"] == 0, "the queued tree rebuilds")

    def copies(self, key: bytes) -> list[bytes]:
        import msgpack

        out = []
        for conn in self.conns.values():
            status, body = conn.request("POST", "/internal/v1/get",
                                        msgpack.packb({"key": key}, use_bin_type=True),
                                        {"Content-Type": "application/x-msgpack"})
            assert status == 200, body
            out.append(msgpack.unpackb(body, raw=False)["state"])
        return out

    def wait_copies_equal(self, key: bytes) -> None:
        self.wait(lambda: len(set(self.copies(key))) == 1, f"the replicas of {key[:40]!r}")

    def seqs(self) -> list[int]:
        return [conn.json("/status")[1]["replica"]["engine"]["last_seq"]
                for conn in self.conns.values()]

    def wait_engines_still(self, quiet_s: float = 0.1) -> None:
        """Until no engine's last_seq moved for `quiet_s` (late replica writes landed)."""
        last = self.seqs()

        def still() -> bool:
            nonlocal last
            time.sleep(quiet_s)
            now = self.seqs()
            same, last = now == last, now
            return same
        self.wait(still, "the storage engines to stop moving")

    @staticmethod
    def wait(predicate, what: str) -> None:
        deadline = time.monotonic() + SETTLE_S
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {SETTLE_S} s waiting for {what}")
            time.sleep(0.02)


def kv_key_of(path: str) -> bytes | None:
    """The key a `/kv/...` request path names, as the node parses it (None: not a key)."""
    try:
        return http_codec.parse_key(path[len("/kv/"):])
    except InvalidRequest:
        return None


def lock_name_of(path: str) -> str | None:
    """The (still percent-encoded) lock or entry name in a `/lock/v1/` path, or None."""
    for prefix in ("/lock/v1/locks/", "/lock/v1/entries/"):
        if path.startswith(prefix):
            name = path[len(prefix):]
            for suffix in ("/acquire", "/release"):
                name = name.removesuffix(suffix) if prefix == "/lock/v1/locks/" else name
            return name or None
    return None


def diff(before: Any, after: Any, where: str = "") -> list[str]:
    """Human lines naming every place two digests differ."""
    if isinstance(before, dict) and isinstance(after, dict):
        lines = []
        for k in sorted(set(before) | set(after), key=str):
            lines += diff(before.get(k), after.get(k), f"{where}/{k}")
        return lines
    return [] if before == after else [f"{where}: {before!r} -> {after!r}"]


class Tally:
    """Requests per operation and the statuses seen, for the run's closing figures."""

    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()
        self.statuses: dict[str, Counter[int]] = defaultdict(Counter)
        self.held: Counter[str] = Counter()
        self.rejected_writes = 0
        self.started = time.monotonic()

    def add(self, label: str, status: int | None) -> None:
        self.requests[label] += 1
        if status is None:
            self.held[label] += 1
        else:
            self.statuses[label][status] += 1

    def all_statuses(self) -> Counter[int]:
        total: Counter[int] = Counter()
        for c in self.statuses.values():
            total.update(c)
        return total

    def report(self) -> str:
        lines = [f"{label}: {n} requests, statuses "
                 f"{dict(sorted(self.statuses[label].items()))}"
                 + (f", {self.held[label]} held long polls" if self.held[label] else "")
                 for label, n in sorted(self.requests.items())]
        total = self.all_statuses()
        lines.append(f"total: {sum(self.requests.values())} requests over "
                     f"{len(self.requests)} operations in "
                     f"{time.monotonic() - self.started:.1f} s; {len(total)} distinct "
                     f"statuses {dict(sorted(total.items()))}; "
                     f"{self.rejected_writes} refused writes checked for no change")
        return "\n".join(lines)
