"""The status page's pure parts: the recent-events buffer (kvstore/events.py), the choice of
page or JSON on /status, health verdicts and the /status/v1 document (kvstore/status_page.py).
No I/O: real Ring and LockStateMachine values, real loggers."""

from __future__ import annotations

import json
import logging

import pytest

from kvstore import status_page as sp
from kvstore.events import MAX_TEXT, SOURCES, EventLog
from kvstore.ring import Ring
from lockservice import commands as c
from lockservice.fsm import LockStateMachine
from lockservice.results import Granted, Queued, SessionOpened
from lockservice.sequencer import LockMode

A, B, C, D = "127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003", "127.0.0.1:7009"
CHROME = ("text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,"
          "image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7")
FIREFOX = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


# -- events buffer ----------------------------------------------------------------------------

def test_event_buffer_keeps_the_newest_capacity_events_newest_first() -> None:
    log = EventLog(capacity=3)
    for i in range(5):
        log.add("node", "INFO", f"event {i}", when=100.0 + i)
    assert [e.text for e in log.recent()] == ["event 4", "event 3", "event 2"]
    assert [e.seq for e in log.recent()] == [5, 4, 3]
    assert log.dropped == 2
    assert [e.text for e in log.recent(2)] == ["event 4", "event 3"]
    assert log.recent(0) == []
    assert log.recent(-1) == []
    assert log.recent()[0].to_json() == {"seq": 5, "time": 104.0, "kind": "node",
                                         "level": "INFO", "text": "event 4"}


@pytest.mark.parametrize("capacity", [0, -1, 1.5, "10", None])
def test_event_buffer_refuses_a_capacity_that_is_not_a_positive_int(capacity) -> None:
    with pytest.raises(ValueError, match="capacity"):
        EventLog(capacity=capacity)


def test_handler_turns_records_of_the_source_loggers_into_events_of_their_kind(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # every record reaches the handler; it keeps INFO and up
    log = EventLog()
    log.attach()
    try:
        logging.getLogger("kvstore.gossiper").warning("%s: node %s is down (phi %.1f)",
                                                      A, B, 9.1)
        logging.getLogger("lockservice.server").info("member %d leads term %d", 2, 7)
        logging.getLogger("antientropy.scheduler").info("exchange with %s: 3 repaired", C)
        logging.getLogger("kvstore.handoff").info("handoff to %s started", B)
        logging.getLogger("kvstore.membership").info("ring v1 -> v2")
        logging.getLogger("kvstore.handoff.detail").info("a child logger's line")
        logging.getLogger("kvstore.coordinator").debug("debug chatter stays out")
        logging.getLogger("kvstore.replica").warning("not a source logger")
        logging.getLogger("kvstore.membershipx").warning("a sibling, not a child")
    finally:
        log.detach()
    got = [(e.kind, e.level, e.text) for e in reversed(log.recent())]
    assert got == [
        ("node", "WARNING", f"{A}: node {B} is down (phi 9.1)"),
        ("lock", "INFO", "member 2 leads term 7"),
        ("aae", "INFO", f"exchange with {C}: 3 repaired"),
        ("handoff", "INFO", f"handoff to {B} started"),
        ("membership", "INFO", "ring v1 -> v2"),
        ("handoff", "INFO", "a child logger's line"),
    ]
    assert all(e.time > 0 for e in log.recent())


def test_detach_stops_the_feed_and_attach_twice_adds_one_handler(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    log = EventLog()
    log.attach()
    log.attach()
    logger = logging.getLogger("kvstore.peers")
    try:
        assert logger.handlers.count(log.handler) == 1
        logger.info("peer %s unreachable", B)
    finally:
        log.detach()
    assert log.handler not in logger.handlers
    logger.info("peer %s reachable again", B)
    assert [e.text for e in log.recent()] == [f"peer {B} unreachable"]
    assert set(SOURCES.values()) == {"membership", "node", "lock", "handoff", "aae"}


def test_a_broken_log_call_or_a_huge_message_is_kept_bounded_and_raises_nothing() -> None:
    log = EventLog()

    def record(msg: str, *args: object) -> logging.LogRecord:
        return logging.LogRecord("kvstore.transfer", logging.INFO, __file__, 1, msg, args,
                                 None)

    log.handler.handle(record("%d partitions", "not a number"))  # getMessage would raise
    log.handler.handle(record("x" * (MAX_TEXT * 3)))
    log.handler.handle(logging.LogRecord("kvstore.replica", logging.ERROR, __file__, 1,
                                         "not a source", (), None))
    broken, huge = reversed(log.recent())
    assert (broken.kind, broken.text) == ("handoff", "%d partitions")
    assert huge.text == "x" * MAX_TEXT


# -- page or JSON ---------------------------------------------------------------------------

@pytest.mark.parametrize(("accept", "html"), [
    (CHROME, True),
    (FIREFOX, True),
    ("text/html", True),
    ("text/*", True),
    ("application/json, text/html;q=0.5", False),
    ("text/html;q=0.5, application/json", False),
    ("text/html, application/json", False),  # a tie keeps JSON, the default
    ("*/*", False),
    ("", False),
    (None, False),
    ("application/json", False),
    ("text/html;q=abc", False),  # a malformed quality drops its range
    ("text/html;q=2", False),
    ("text/html;q=0", False),
    ("garbage,,;;;q=,/,text", False),
    ("TEXT/HTML", True),
    ("text/html;level=1;q=0.9, */*;q=0.1", True),
])
def test_status_answers_the_page_only_when_html_is_preferred(accept, html) -> None:
    assert sp.prefers_html(accept) is html


# -- health -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("kw", "verdict"), [
    ({"me": True, "member": True, "alive": False, "suspect": True, "phi": 99}, "alive"),
    ({"me": False, "member": True, "alive": False, "suspect": False, "phi": 0}, "down"),
    ({"me": False, "member": True, "alive": True, "suspect": True, "phi": 0}, "suspect"),
    ({"me": False, "member": True, "alive": True, "suspect": False, "phi": 4.1}, "suspect"),
    ({"me": False, "member": True, "alive": True, "suspect": False, "phi": 3.9}, "alive"),
    ({"me": False, "member": False, "alive": True, "suspect": False, "phi": 0}, "unknown"),
])
def test_health_as_this_node_sees_a_member(kw, verdict) -> None:
    assert sp.health(threshold=8.0, **kw) == verdict


# -- the document -----------------------------------------------------------------------------

def ring3(size: int = 16) -> Ring:
    return Ring.new(size).join(A).join(B).join(C)


def test_members_view_gives_each_node_its_health_and_partitions() -> None:
    ring = ring3()
    membership = {
        A: {"alive": True, "phi": 0.0, "status": "up"},
        B: {"alive": False, "phi": 30.0, "status": "up"},
        C: {"alive": True, "phi": 0.2, "status": "up"},
        D: {"alive": False, "phi": 0.0, "status": "left"},  # gossip knows it; not a member
    }
    rows = sp.members_view(A, ring, membership, suspect=lambda n: n == C, threshold=8.0,
                           voters=[A, C])
    assert [r["name"] for r in rows] == [A, B, C, D]
    assert {r["name"]: r["health"] for r in rows} == {A: "alive", B: "down", C: "suspect",
                                                       D: "unknown"}
    assert [r["self"] for r in rows] == [True, False, False, False]
    assert [r["lock_voter"] for r in rows] == [True, False, True, False]
    assert sum(r["partitions"] for r in rows) == ring.ring_size
    assert rows[3]["partitions"] == 0 and rows[3]["status"] == "left"
    assert {r["name"]: r["partitions"] for r in rows[:3]} == {
        n: ring.owners.count(n) for n in (A, B, C)}


def test_ring_view_lists_the_owner_of_every_partition() -> None:
    ring = ring3(32)
    view = sp.ring_view(ring)
    assert view["version"] == ring.version and view["ring_size"] == 32
    assert len(view["owners"]) == 32 and set(view["owners"]) == {A, B, C}
    assert view["members"] == list(ring.members)


def lock_table() -> LockStateMachine:
    """Three sessions: 1 holds "jobs/a" exclusively, 2 waits for it, 3 holds "jobs/b"
    shared; index = session id."""
    fsm = LockStateMachine()
    index = 0

    def apply(cmd: c.Command):
        nonlocal index
        index += 1
        return fsm.apply(index, c.encode(cmd))

    s1 = apply(c.OpenSession(ttl_ms=10_000, now=1_000))
    s2 = apply(c.OpenSession(ttl_ms=12_000, now=1_000))
    s3 = apply(c.OpenSession(ttl_ms=10_000, now=2_000))
    assert all(isinstance(s, SessionOpened) for s in (s1, s2, s3))
    assert isinstance(apply(c.Acquire(1, "jobs/a", LockMode.EXCLUSIVE, False, now=2_000)),
                      Granted)
    assert isinstance(apply(c.Acquire(2, "jobs/a", LockMode.EXCLUSIVE, True, now=2_000)),
                      Queued)
    assert isinstance(apply(c.Acquire(3, "jobs/b", LockMode.SHARED, False, now=3_000)),
                      Granted)
    return fsm


def test_lock_tables_list_sessions_and_locks_of_the_applied_table() -> None:
    tables = sp.lock_tables(lock_table())
    assert tables["clock"] == 3_000
    assert tables["sessions_total"] == 3 and tables["locks_total"] == 2
    assert tables["sessions"] == [
        {"id": 1, "ttl_ms": 10_000, "expires_in_ms": 8_000, "held": ["jobs/a"], "waiting": []},
        {"id": 2, "ttl_ms": 12_000, "expires_in_ms": 10_000, "held": [],
         "waiting": ["jobs/a"]},
        {"id": 3, "ttl_ms": 10_000, "expires_in_ms": 9_000, "held": ["jobs/b"], "waiting": []},
    ]
    assert tables["locks"] == [
        {"name": "jobs/a", "mode": "exclusive", "holders": [{"session": 1, "generation": 1}],
         "waiters": 1, "delay_ms": 0},
        {"name": "jobs/b", "mode": "shared", "holders": [{"session": 3, "generation": 2}],
         "waiters": 0, "delay_ms": 0},
    ]


def test_lock_tables_cut_long_lists_but_give_the_totals() -> None:
    tables = sp.lock_tables(lock_table(), limit=1)
    assert [s["id"] for s in tables["sessions"]] == [1]
    assert [lk["name"] for lk in tables["locks"]] == ["jobs/a"]
    assert (tables["sessions_total"], tables["locks_total"]) == (3, 2)


def test_lock_view_on_a_node_without_a_lock_service() -> None:
    view = sp.lock_view({}, None, health_of={})
    assert view["configured"] is False and view["member"] is False
    assert view["voters"] == [] and view["leader"] is None
    assert "no lock service" in view["note"]


def test_lock_view_on_a_node_that_only_knows_the_voters_says_it_is_not_a_member() -> None:
    view = sp.lock_view({1: A, 2: B, 3: C}, None, health_of={A: "alive", B: "down"})
    assert view["configured"] is True and view["member"] is False
    assert "not a lock member" in view["note"]
    assert view["voters"] == [
        {"id": 1, "address": A, "health": "alive", "leader": False},
        {"id": 2, "address": B, "health": "down", "leader": False},
        {"id": 3, "address": C, "health": "unknown", "leader": False}]
    assert "sessions" not in view and "locks" not in view


def test_lock_view_on_a_voter_shows_leader_raft_progress_sessions_and_locks() -> None:
    raft = {"role": "follower", "term": 4, "commit": 9, "applied": 9, "last_index": 9,
            "vote": 2}
    tables = sp.lock_tables(lock_table())
    view = sp.lock_view({1: A, 2: B, 3: C}, 1, health_of={A: "alive", B: "alive"},
                        leader={"leader": 2, "address": B, "term": 4}, raft=raft,
                        tables=tables)
    assert view["member"] is True and view["member_id"] == 1
    assert view["leader"] == {"id": 2, "address": B, "term": 4}
    assert [v["leader"] for v in view["voters"]] == [False, True, False]
    assert view["raft"] == {"role": "follower", "term": 4, "commit": 9, "applied": 9,
                            "last_index": 9}
    assert view["sessions"] == tables["sessions"] and view["locks"] == tables["locks"]
    no_leader = sp.lock_view({1: A}, 1, health_of={}, leader={"leader": None,
                                                              "address": None, "term": 1})
    assert no_leader["leader"] is None and "no leader known" in no_leader["note"]


def test_document_is_json_with_every_part_and_the_newest_events() -> None:
    ring = ring3()
    events = EventLog()
    for i in range(sp.MAX_EVENTS + 5):
        events.add("node", "INFO", f"e{i}", when=float(i))
    members = sp.members_view(A, ring, {B: {"alive": True}, C: {"alive": True}},
                              suspect=lambda n: False, threshold=8.0)
    lock = sp.lock_view({1: A}, None, health_of={A: "alive"})
    doc = json.loads(json.dumps(sp.document(A, ring, members, lock, events, now=12.5)))
    assert doc["version"] == sp.DOC_VERSION == 1
    assert (doc["node"], doc["time"]) == (A, 12.5)
    assert doc["ring"]["owners"] == list(ring.owners)
    assert [m["health"] for m in doc["members"]] == ["alive"] * 3
    assert doc["lock"]["member"] is False
    items = doc["events"]["items"]
    assert len(items) == sp.MAX_EVENTS
    assert items[0]["text"] == f"e{sp.MAX_EVENTS + 4}" and items[-1]["text"] == "e5"
    assert doc["events"]["dropped"] == 0 and doc["events"]["capacity"] == events.capacity


def test_the_page_files_are_package_data_and_load_nothing_from_elsewhere() -> None:
    from importlib import resources

    static = resources.files("kvstore").joinpath("static")
    html = static.joinpath(sp.PAGE_FILE).read_text("utf-8")
    for name in sp.ASSETS:
        assert f"status/static/{name}" in html
        text = static.joinpath(name).read_text("utf-8")
        assert "http://" not in text.replace("http://www.w3.org/2000/svg", "")
        assert "https://" not in text
    assert "http://" not in html and "https://" not in html
    assert "innerHTML" not in static.joinpath("status.js").read_text("utf-8")


def test_pyproject_ships_every_file_of_the_page_as_package_data() -> None:
    import fnmatch
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    config = tomllib.loads((root / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["kvstore"]
    files = sorted(p.name for p in (root / "kvstore" / "static").iterdir())
    assert files == sorted([sp.PAGE_FILE, *sp.ASSETS])
    for name in files:  # a non-editable install (pip install .) carries only what matches
        assert any(fnmatch.fnmatch(f"static/{name}", pat) for pat in patterns), name
