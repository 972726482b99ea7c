"""Fuzz every operation of docs/openapi.yaml against real nodes (schemathesis, bounded).

DESIGN "Promises": bad input gets a clear 4xx error; it never crashes a node or corrupts
data. Issue 9: "no 5xx, no crash, no change from a rejected request". Schemathesis reads
the document and generates requests for each operation, both ones the document allows
(positive) and ones it forbids (negative: wrong types, missing fields, out-of-range
numbers, unknown parameters, bad headers); Hypothesis runs a fixed number per operation,
derandomized (the same requests on every run, no example database).

Targets:
- A cluster of 3 real `kv serve` processes on 127.0.0.1, all lock voters; every operation
  but the three that change membership is sent to one node that is not the lock leader
  (so lock writes go through forwarding too): the store, the node and admin reads,
  anti-entropy admin, the status page, the internal routes (they share the port, so they
  must survive a stranger too) and the lock service. The nodes run without --auth-file,
  so the document's 401 and 403 are never answered.
- join, leave and remove go to a throwaway one-node cluster: on the shared cluster a
  successful leave or remove would take a member away from every later request. A seed
  the node would dial is replaced by the node's own name (joining itself is answered at
  once): the fuzzer never makes a node connect anywhere, and an unreachable seed is
  retried for 30 s before its 503, too long for this run.

Checks on every answer:
- no 5xx, except a 503 `quorum` to a store request whose own `timeout_ms` was below the
  node's default deadline (the documented answer to a deadline too short to meet), and a
  lock 503 `no_leader` or `unavailable` while the lock service's Raft term moved (an
  election ran during the request: on a loaded machine a leader can miss its heartbeats);
- the answer conforms to the document: status code documented, content type, headers and
  body schema (schemathesis' response checks, minus `positive_data_acceptance`: see
  EXCLUDED_CHECKS); a request the document forbids is refused with a 4xx;
- a write answered 4xx changed nothing: a digest of the cluster (tests/fuzz_probe.py) taken
  before equals the one taken after; `test_digest_sees_a_change` shows the digest moves on
  a real change of each kind;
- every node is still running and serving at the end.

Bounds and substitutions (`adjust`; each replaces a value by another of the same standing
under the document, so a request the document forbids stays forbidden): a waiting acquire
waits at most MAX_FUZZ_WAIT_MS (values above the documented maximum are left alone, so the
bound is still fuzzed); a session opened with a valid ttl lives at least MIN_TTL_MS; a
KeepAlive the node holds (the documented long poll) is abandoned after HELD_S and counted
as held; even positive session ids are pointed at POOL_SESSIONS real sessions (odd ones
stay, mostly unknown), so locks, entries and watches are also granted, not only refused;
an integral float whose integer is even becomes that integer in a lock body (the lock API
takes JSON integers only, and refuses 5.0 with 400); an even `r` or `w` is brought into
1..N; even-length sequencers and contexts of the documented shape are replaced by real
ones seen in earlier answers (a current and a released sequencer are there from the
start), so fenced and causal writes are exercised too.

The closing figures (requests per operation, statuses, time) are printed by the last test
(`pytest -s` shows them), which also checks that every operation of the document was sent
(run the whole file).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error, positive_data_acceptance
from schemathesis.generation import GenerationMode

from tests.cluster import Cluster
from tests.fuzz_probe import (
    HELD_S,
    MAX_FUZZ_WAIT_MS,
    MIN_TTL_MS,
    REQUEST_S,
    Probe,
    Tally,
    diff,
)

DOC = Path(__file__).resolve().parents[1] / "docs" / "openapi.yaml"
EXAMPLES = 40  # per operation and run; derandomized, so every run sends the same requests
DEFAULT_TIMEOUT_MS = 5000  # the node's default deadline (kvstore/config.py timeout_s)
MEMBERSHIP = ("join", "leave", "remove")
WRITES = ("POST", "PUT", "DELETE")
POOL_SESSIONS = 3  # long-lived lock sessions that fuzzed lock requests are pointed at
MAX_U64 = 2**63 - 1
# not_a_server_error: replaced by the stricter check in `run` (documented 503s only).
# positive_data_acceptance: a request the document allows may still be refused for what a
# schema cannot say (r or w above N, a session that does not exist, a name over 256 bytes
# of UTF-8, a value over 16 KiB once base64-decoded, an integer written as 5.0): the
# refusal is still checked (documented status, JSON error, nothing changed).
EXCLUDED_CHECKS = [not_a_server_error, positive_data_acceptance]

schema = schemathesis.openapi.from_path(DOC)
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
schema.config.phases.update(phases=["examples", "fuzzing"])

TALLY = Tally()


@schemathesis.serializer("application/x-msgpack")
def _msgpack(ctx, value):
    """The document types these bodies as strings (opaque msgpack bytes): a str is sent
    as its bytes, anything else (the negative cases) as its JSON text. Packing those with
    msgpack would turn "not a string" into a well-formed map, which the internal status
    op takes."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    return json.dumps(value).encode()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with Cluster(tmp_path_factory.mktemp("fuzz"), size=3, lock_voters=3) as c:
        yield c


@dataclass
class Target:
    """A node under fuzz: its base URL, the probe around it, and lock sessions of its own."""

    base_url: str
    probe: Probe
    sessions: list[int] = field(default_factory=list)
    # Real values seen in answers (acquire's sequencers, the store's contexts), handed back
    # in later requests in place of generated ones (see `adjust`).
    seen: dict[str, list[str]] = field(default_factory=lambda: {"sequencer": [],
                                                                "context": []})

    def remember(self, case, response) -> None:
        if response.status_code == 200 and case.operation.path.endswith("/acquire"):
            self.seen["sequencer"].append(response.json()["sequencer"])
        context = response.headers.get("X-Ringlock-Context")
        if context and case.operation.path == "/kv/{key}":
            self.seen["context"].append(context)

    @property
    def name(self) -> str:
        return urlsplit(self.base_url).netloc


@pytest.fixture(scope="module")
def target(cluster):
    """A lock voter that is not the leader, with POOL_SESSIONS sessions opened on it."""
    probe = Probe(cluster.names, cluster.names[0], cluster.lock_peers)
    try:
        probe.wait(lambda: probe.leader(required=False), "a lock leader")
        leader = probe.leader()
        name = next(n for n in cluster.names if probe.conns[n] is not leader)
        probe.target = name
        probe.aae_settings = probe.conns[name].json("/admin/v1/aae")[1]["settings"]
        sessions = []
        for _ in range(POOL_SESSIONS):
            status, doc = cluster.json(name, "POST", "/lock/v1/sessions",
                                       {"ttl_ms": 3_600_000})
            assert status == 201, doc
            sessions.append(doc["session"])
        target = Target(f"http://{name}", probe, sessions)
        # A current sequencer and one whose lock was released (no longer current).
        for lock, release in (("fuzz-held", False), ("fuzz-released", True)):
            status, grant = cluster.json(name, "POST", f"/lock/v1/locks/{lock}/acquire",
                                         {"session": sessions[0]})
            assert status == 200, grant
            target.seen["sequencer"].append(grant["sequencer"])
            if release:
                assert cluster.json(name, "POST", f"/lock/v1/locks/{lock}/release",
                                    {"session": sessions[0]})[0] == 204
        yield target
    finally:
        probe.close()


@pytest.fixture(scope="module")
def throwaway(tmp_path_factory):
    """A one-node cluster for the membership changes."""
    with Cluster(tmp_path_factory.mktemp("fuzz-throwaway"), size=1) as c:
        probe = Probe(c.names, c.names[0], {})
        yield Target(f"http://{c.names[0]}", probe), c
        probe.close()


@pytest.fixture(scope="module")
def http():
    with requests.Session() as session:
        yield session


def adjust(case, target: Target) -> None:
    """The bounds and substitutions of the module docstring, applied to a request in place.

    Each replaces a value by another of the same standing under the document (5.0 and 4
    are both integers to JSON Schema), so a request the document forbids stays forbidden."""
    body, op = case.body, case.operation.path
    if op in ("/lock/v1/sessions/{id}/watches",) and _pooled(case.path_parameters["id"]):
        case.path_parameters["id"] = _session(target, case.path_parameters["id"])
    headers = case.headers or {}
    for header, kind in (("X-Ringlock-Sequencer", "sequencer"), ("X-Ringlock-Context",
                                                                  "context")):
        if _replaceable(headers.get(header), kind):
            headers[header] = _seen(target, kind, headers[header])
    query = case.query or {}
    for name in ("r", "w"):  # even levels in the document's 1..64 become 1..N (N = 3)
        if type(query.get(name)) is int and 1 <= query[name] <= 64 and query[name] % 2 == 0:
            query[name] = query[name] // 2 % 3 + 1
    if isinstance(body, dict) and isinstance(body.get("sequencer"), str) and len(
            body["sequencer"]) % 2 == 0:  # the document allows any string here
        body["sequencer"] = _seen(target, "sequencer", body["sequencer"])
    if not isinstance(body, dict):
        return
    if op.startswith("/lock/v1/"):
        for name, value in list(body.items()):
            if type(value) is float and value.is_integer() and int(value) % 2 == 0:
                body[name] = int(value)  # the lock API takes JSON integers only (not 5.0)
    if op == "/lock/v1/sessions" and type(body.get("ttl_ms")) is int and (
            1 <= body["ttl_ms"] < MIN_TTL_MS):
        body["ttl_ms"] = MIN_TTL_MS
    if op.endswith("/acquire") and type(body.get("wait_ms")) is int and (
            MAX_FUZZ_WAIT_MS < body["wait_ms"] <= 300_000):
        body["wait_ms"] = MAX_FUZZ_WAIT_MS
    for name in ("session", "ephemeral_session"):
        if op.startswith("/lock/v1/") and _pooled(body.get(name)):
            body[name] = _session(target, body[name])
    if op == "/admin/v1/join" and _dialable(body.get("seed")):
        body["seed"] = target.name  # joining itself: answered at once, nothing dialled


def _pooled(value: object) -> bool:
    """Even positive ids name one of the pool's sessions; others stay as generated."""
    return type(value) is int and 0 < value <= MAX_U64 and value % 2 == 0


def _session(target: Target, value: int) -> int:
    return target.sessions[value // 2 % len(target.sessions)] if target.sessions else value


_SHAPE = {"context": re.compile(r"[A-Za-z0-9_-]+"),  # the document's Context pattern
          "sequencer": re.compile(r"[\x20-\x7e]{1,4096}")}


def _replaceable(value: object, kind: str) -> bool:
    """Even-length strings of the shape the document allows are replaced by a real value
    of `kind`; the rest (odd lengths, what the document forbids) stay as generated."""
    return (isinstance(value, str) and len(value) % 2 == 0
            and bool(_SHAPE[kind].fullmatch(value)))


def _seen(target: Target, kind: str, value: str) -> str:
    pool = target.seen[kind]
    return pool[len(value) // 2 % len(pool)] if pool else value


def _dialable(seed: object) -> bool:
    """Whether the node would take `seed` as a node name and dial it (membership_http)."""
    if not isinstance(seed, str):
        return False
    host, _, port = seed.rpartition(":")
    return bool(host) and port.isascii() and port.isdigit() and len(port) <= 5 and (
        1 <= int(port) <= 65535) and len(seed.encode("utf-8", "replace")) <= 255


def allowed_503(case, response, term_before: int | None, probe: Probe) -> bool:
    """Whether a 503 is the documented answer to what this request asked for, or to a
    lock-service election that ran meanwhile (a loaded machine can starve a leader)."""
    if case.operation.path == "/kv/{key}":
        ms = (case.query or {}).get("timeout_ms")
        return type(ms) is int and 1 <= ms < DEFAULT_TIMEOUT_MS
    if term_before is not None and response.json().get("error") in ("no_leader",
                                                                     "unavailable"):
        return probe.lock_term() != term_before
    return False


def run(case, target: Target, http: requests.Session) -> None:
    adjust(case, target)
    probe = target.probe
    write = case.method.upper() in WRITES
    path = case.formatted_path
    before = probe.digest(path) if write else None
    held = case.operation.path.endswith("/keepalive")
    term = probe.lock_term() if case.operation.path.startswith("/lock/v1/") else None
    try:
        response = case.call(base_url=target.base_url, session=http,
                             timeout=HELD_S if held else REQUEST_S)
    except requests.exceptions.ReadTimeout:
        if not held:
            raise
        TALLY.add(case.operation.label, None)  # the documented long poll
        return
    status = response.status_code
    TALLY.add(case.operation.label, status)
    target.remember(case, response)
    if status >= 500 and not (status == 503 and allowed_503(case, response, term, probe)):
        raise AssertionError(f"{case.operation.label} answered {status}: "
                             f"{response.text[:500]}\n{case.as_curl_command()}")
    case.validate_response(response, excluded_checks=EXCLUDED_CHECKS)
    if write and 400 <= status < 500:
        TALLY.rejected_writes += 1
        after = probe.digest(path)
        changes = diff(before, after)
        assert not changes, (f"{case.operation.label} answered {status} but changed:\n"
                             + "\n".join(changes) + f"\n{case.as_curl_command()}")
    elif write:
        probe.settle(case.method.upper(), response.request.url, status)


def test_digest_sees_a_change(cluster, target) -> None:
    """The "no change" check can fail: a real change of each kind moves the digest."""
    probe, node = target.probe, target.name

    def moved(path: str, method: str, url: str, payload: object = None,
              raw: bytes | None = None) -> list[str]:
        before = probe.digest(path)
        if raw is not None:
            status = cluster.http(node, method, url, raw)[0]
        else:
            status = cluster.json(node, method, url, payload)[0]
        assert status < 300, (url, status)
        probe.settle(method, f"http://{node}{url}", status)
        return diff(before, probe.digest(path))

    assert len(moved("/kv/seen", "PUT", "/kv/seen", raw=b"v")) == len(cluster.names)
    session = target.sessions[0]
    name = "/lock/v1/locks/digest-check"
    assert {"/lock/locks", "/lock/generation", "/lock/lock"} <= {
        line.split(":")[0] for line in moved(name, "POST", name + "/acquire",
                                             {"session": session})}
    entry = "/lock/v1/entries/digest-check"
    assert "/lock/entry" in {line.split(":")[0] for line in moved(
        entry, "PUT", entry, {"value": "AA=="})}
    assert moved("/", "POST", "/lock/v1/sessions", {"ttl_ms": MIN_TTL_MS})
    before = probe.digest("/")
    assert cluster.json(node, "POST", "/admin/v1/aae/schedule", {"keys_per_s": 123})[0] == 200
    assert [line.split(":")[0] for line in diff(before, probe.digest("/"))] == [
        "/aae/keys_per_s"]
    probe.settle("POST", f"http://{node}/admin/v1/aae/schedule", 200)  # restores it
    assert diff(before, probe.digest("/")) == []


FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))


@schema.exclude(operation_id=list(MEMBERSHIP)).parametrize()
@FUZZ
def test_cluster_operations(case, cluster, target, http) -> None:
    run(case, target, http)


@schema.include(operation_id=list(MEMBERSHIP)).parametrize()
@FUZZ
def test_membership_operations_on_a_throwaway_node(case, throwaway, http) -> None:
    run(case, throwaway[0], http)


def test_nodes_survived_and_figures(cluster, throwaway) -> None:
    """Every node still runs and serves; the run's figures (see the module docstring)."""
    for node in [*cluster.nodes, *throwaway[1].nodes]:
        assert node.running, node.output()[-3000:]
        assert cluster.http(node.name, "GET", "/health")[0] == 200
        errors = [line for line in node.output().splitlines()
                  if " ERROR " in line or line.startswith("Traceback")]
        assert not errors, "\n".join(errors[:20])  # no handler or background task failed
    print("\n" + TALLY.report())
    every = {result.ok().label for result in schema.get_all_operations()}
    assert set(TALLY.requests) == every, every ^ set(TALLY.requests)
    assert len(TALLY.all_statuses()) >= 5
