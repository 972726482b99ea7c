"""Snapshots of the lock table: exact round trip, and hostile bytes refused with the state kept."""

from __future__ import annotations

import msgpack
import pytest

from lockservice import commands as c
from lockservice.errors import SnapshotError
from lockservice.fsm import LockStateMachine
from lockservice.results import Granted
from lockservice.sequencer import LockMode
from lockservice.snapshot_format import MAGIC, VERSION

from .harness import Log

X, S = LockMode.EXCLUSIVE, LockMode.SHARED


def busy_log() -> Log:
    """A table with every kind of record: holders, waiters, lock-delay, ephemerals, events."""
    log = Log()
    a, b, d = log.session(ttl_ms=1000), log.session(), log.session()
    log(c.Watch(b, ""))
    log(c.Acquire(a, "gone", X, False, now=0, lock_delay_ms=5000))
    log(c.Acquire(b, "gone", X, True, now=0))
    log(c.Acquire(b, "shared", S, False, now=0))
    log(c.Acquire(d, "shared", S, False, now=0))
    log(c.Acquire(a, "shared", X, True, now=0))
    log(c.Put("eph", b"x", ephemeral_session=d))
    log(c.Put("plain", b"\x00\xff"))
    log(c.ExpireSessions(now=1000))  # a expires: "gone" under lock-delay, b waits
    return log


def test_round_trip_gives_the_same_state_and_the_same_future() -> None:
    log = busy_log()
    copy = LockStateMachine()
    copy.restore(log.fsm.snapshot())
    assert copy.snapshot() == log.fsm.snapshot()
    assert "gone" in copy.delayed and copy.waiters("gone") == log.fsm.waiters("gone")
    for i, cmd in enumerate(
        [c.KeepAlive(2, now=6000), c.Release(3, "shared"), c.Acquire(3, "gone", X, True, now=6000)]
    ):
        assert copy.execute(100 + i, cmd) == log.fsm.execute(100 + i, cmd)
    assert copy.snapshot() == log.fsm.snapshot()
    assert copy.holders("gone")[0].session == 2


def sections() -> list:
    return msgpack.unpackb(busy_log().fsm.snapshot(), raw=False)


def edited(edit) -> bytes:  # type: ignore[no-untyped-def]
    top = sections()
    edit(top)
    return msgpack.packb(top, use_bin_type=True)


def _set(path: tuple[int, ...], value: object):  # type: ignore[no-untyped-def]
    def edit(top: list) -> None:
        node = top
        for i in path[:-1]:
            node = node[i]
        node[path[-1]] = value

    return edit


# Indices: top = [magic, version, clock, generation, revision, sessions, locks, entries];
# sessions sorted by id (a=1 expired; b=2, d=3), locks by name ("gone": no holder, waiter b;
# "shared": holders b and d), entries by name ("eph" owned by d, "plain").
HOSTILE = {
    "empty": b"",
    "not msgpack": b"\xc1\xc1",
    "truncated": busy_log().fsm.snapshot()[:-3],
    "a map": msgpack.packb({"magic": MAGIC}),
    "bad magic": edited(_set((0,), "ringlock-other")),
    "future version": edited(_set((1,), VERSION + 1)),
    "missing section": edited(lambda top: top.pop()),
    "negative clock": edited(_set((2,), -1)),
    "generation behind a holder": edited(_set((3,), 1)),
    "revision behind an entry": edited(_set((4,), 0)),
    "session twice": edited(lambda top: top[5].append(top[5][0])),
    "holder of an unknown session": edited(_set((6, 1, 2, 0, 0), 777)),
    "two exclusive holders": edited(lambda top: [_set((6, 1, 2, i, 1), 1)(top) for i in (0, 1)]),
    "exclusive beside shared": edited(_set((6, 1, 2, 0, 1), 1)),
    "unknown mode": edited(_set((6, 1, 2, 0, 1), 7)),
    "waiter of an unknown session": edited(_set((6, 0, 3, 0, 0), 777)),
    "lost wake-up (free lock with waiters)": edited(_set((6, 0, 1), 0)),
    "ephemeral of a dead session": edited(_set((7, 0, 3), 1)),
    "value not bytes": edited(_set((7, 1, 1), "text")),
    "bool as integer": edited(_set((2,), True)),
    "event kind unknown": edited(lambda top: top[5][0][6].append([99, 42, "x", 0, 0, 0])),
}


@pytest.mark.parametrize("data", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_snapshot_raises_a_clear_error_and_keeps_the_state(data: bytes) -> None:
    log = busy_log()
    before = log.fsm.snapshot()
    with pytest.raises(SnapshotError) as info:
        log.fsm.restore(data)
    assert str(info.value)
    assert log.fsm.snapshot() == before
    log.fsm.check()
    assert isinstance(log.fsm.execute(500, c.Acquire(2, "new", X, False, now=7000)), Granted)


def test_times_past_2_63_round_trip() -> None:
    """A leader's `now` may be as large as the codec allows; now + TTL still restores."""
    log = Log()
    s = log.session(ttl_ms=1000, now=2**63 - 1)
    log(c.Acquire(s, "L", X, False, now=2**63 - 1, lock_delay_ms=500))
    log(c.ExpireSessions(now=2**63 - 1))  # nothing yet: the lease ends past 2**63
    assert log.fsm.lease_end(s) == 2**63 - 1 + 1000
    copy = LockStateMachine()
    copy.restore(log.fsm.snapshot())
    assert copy.snapshot() == log.fsm.snapshot()


def test_client_ids_round_trip_and_a_version_1_snapshot_still_loads() -> None:
    log = busy_log()
    log(c.OpenClientSession(1000, 2000, "principal:ops"))
    copy = LockStateMachine()
    copy.restore(log.fsm.snapshot())
    assert copy.client_sessions == {"principal:ops": 1}
    assert copy.snapshot() == log.fsm.snapshot()
    # Version 1 (before client ids): sessions have 7 fields, none is counted per client.
    old = sections()
    old[1] = 1
    old[5] = [s[:7] for s in old[5]]
    v1 = LockStateMachine()
    v1.restore(msgpack.packb(old, use_bin_type=True))
    assert v1.client_sessions == {} and set(v1.sessions) == {2, 3}
    assert v1.snapshot() == busy_log().fsm.snapshot()


@pytest.mark.parametrize("client", [5, None, b"x"])
def test_a_client_id_that_is_not_a_string_is_refused(client: object) -> None:
    table = LockStateMachine()
    with pytest.raises(SnapshotError, match="client"):
        table.restore(edited(_set((5, 0, 7), client)))
    assert table.sessions == {}
