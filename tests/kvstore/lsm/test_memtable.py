"""The memtable (memtable.py): newest version per key, older ones only for snapshots,
ordered iteration in internal order, byte accounting."""

from __future__ import annotations

import threading

from hypothesis import given, settings
from hypothesis import strategies as st

from kvstore.lsm.coding import KIND_DELETE, KIND_VALUE
from kvstore.lsm.memtable import MemTable


def test_get_returns_the_newest_version_at_or_below_the_read_seq() -> None:
    m = MemTable()
    m.add(1, KIND_VALUE, b"a", b"1")
    m.add(2, KIND_VALUE, b"a", b"2", keep_from=1)
    m.add(3, KIND_DELETE, b"a", b"", keep_from=1)
    assert m.get(b"a", 3) == (b"a", 3, KIND_DELETE, b"")
    # Version 2 was not kept (no snapshot at 2 or above); a reader at 1 still sees 1.
    assert [e[1] for e in m.entries()] == [3, 1]
    assert m.get(b"a", 1) == (b"a", 1, KIND_VALUE, b"1")
    assert m.get(b"a", 0) is None
    assert m.get(b"b", 9) is None
    m.check()


def test_overwrite_without_snapshot_drops_the_old_version_and_its_bytes() -> None:
    m = MemTable(entry_overhead=10)
    m.add(1, KIND_VALUE, b"k", b"x" * 100)
    before = m.approximate_bytes
    m.add(2, KIND_VALUE, b"k", b"y" * 10)
    assert m.approximate_bytes == before - 90
    assert [e[1] for e in m.entries()] == [2]
    m.check()


def test_entries_are_in_internal_order_and_respect_the_range() -> None:
    m = MemTable()
    m.add(1, KIND_VALUE, b"c", b"c1")
    m.add(2, KIND_VALUE, b"a", b"a2")
    m.add(3, KIND_VALUE, b"c", b"c3", keep_from=2)
    m.add(4, KIND_VALUE, b"b", b"b4")
    assert [(k, s) for k, s, _, _ in m.entries()] == [(b"a", 2), (b"b", 4), (b"c", 3),
                                                       (b"c", 1)]
    assert [k for k, *_ in m.entries(b"b", b"c")] == [b"b"]
    assert [k for k, *_ in m.entries(None, b"b")] == [b"a"]
    assert [k for k, *_ in m.entries(b"bb", None)] == [b"c", b"c"]


def test_entries_under_concurrent_writes_stay_ordered() -> None:
    m = MemTable()
    lock = threading.Lock()
    for i in range(0, 6000, 2):
        m.add(i + 1, KIND_VALUE, b"%06d" % i, b"v")
    stop = threading.Event()

    def writer() -> None:
        seq = 10_000
        i = 1
        while not stop.is_set() and i < 6000:
            with lock:
                m.add(seq, KIND_VALUE, b"%06d" % i, b"w", keep_from=-1)
            seq += 1
            i += 2

    t = threading.Thread(target=writer)
    t.start()
    try:
        for _ in range(5):
            keys = [k for k, seq, _, _ in m.entries(lock=lock) if seq < 10_000]
            assert keys == [b"%06d" % i for i in range(0, 6000, 2)]
    finally:
        stop.set()
        t.join()
    m.check()


ops = st.lists(
    st.tuples(st.sampled_from([b"a", b"b", b"c", b"d"]), st.booleans(), st.booleans()),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(ops)
def test_reads_at_every_snapshot_match_a_model(script: list[tuple[bytes, bool, bool]]) -> None:
    """A snapshot taken at seq s (passed as keep_from to later writes) reads exactly
    what the model held at s."""
    m = MemTable()
    history: dict[bytes, list[tuple[int, bytes | None]]] = {}
    snapshots: list[int] = []
    for seq, (key, is_put, take_snapshot) in enumerate(script, start=1):
        value = b"v%d" % seq if is_put else b""
        m.add(seq, KIND_VALUE if is_put else KIND_DELETE, key, value,
              keep_from=max(snapshots, default=-1))
        history.setdefault(key, []).append((seq, value if is_put else None))
        if take_snapshot:
            snapshots.append(seq)
    m.check()
    for snap in [*snapshots, len(script)]:
        for key, versions in history.items():
            expected = [v for s, v in versions if s <= snap]
            got = m.get(key, snap)
            if not expected:
                assert got is None
            else:
                assert got is not None
                assert (got[3] if got[2] == KIND_VALUE else None) == expected[-1]
