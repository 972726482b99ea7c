"""The block cache: LRU, bounded in bytes, safe from several threads."""

from __future__ import annotations

import threading

import pytest

from kvstore.lsm.cache import BlockCache


def test_lru_eviction_by_charge() -> None:
    c = BlockCache(100)
    c.insert((1, 0), "a", 40)
    c.insert((1, 4096), "b", 40)
    assert c.get((1, 0)) == "a"  # now (1, 4096) is least recently used
    c.insert((2, 0), "c", 40)
    assert c.get((1, 4096)) is None
    assert c.get((1, 0)) == "a" and c.get((2, 0)) == "c"
    assert c.usage == 80 and len(c) == 2
    stats = c.stats()
    assert stats["hits"] == 3 and stats["misses"] == 1


def test_replace_erase_and_oversize() -> None:
    c = BlockCache(100)
    c.insert("k", 1, 30)
    c.insert("k", 2, 50)
    assert c.get("k") == 2 and c.usage == 50
    c.insert("huge", 3, 101)
    assert c.get("huge") is None and c.get("k") == 2
    c.erase("k")
    assert c.usage == 0 and c.get("k") is None
    c.insert("x", 1, 10)
    c.clear()
    assert len(c) == 0 and c.usage == 0
    with pytest.raises(ValueError):
        BlockCache(-1)


def test_concurrent_use_keeps_usage_consistent() -> None:
    c = BlockCache(10_000)

    def worker(t: int) -> None:
        for i in range(3000):
            key = (t, i % 97)
            if c.get(key) is None:
                c.insert(key, i, 1 + i % 50)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert c.usage <= c.capacity
    assert c.usage == sum(charge for _, charge in c._map.values())


def test_offer_admits_a_block_on_its_second_offer() -> None:
    c = BlockCache(1 << 20)
    assert c.offer((1, 0), "a", 10) is False  # read once: not cached
    assert c.get((1, 0)) is None
    assert c.offer((1, 0), "a", 10) is True  # read again: reuse shown, cached
    assert c.get((1, 0)) == "a"
    small = BlockCache(0)
    for i in range(5000):  # the window of remembered offers stays bounded
        small.offer((2, i), "x", 1)
    assert len(small._offered) <= small._offer_window


def test_probe_touch_and_admit_as_a_point_read_uses_them() -> None:
    """The point read's lock-free path: probe (no counting), touch (a hit: counted and
    most recently used), admit (the doorkeeper: yes only on the second miss)."""
    c = BlockCache(100)
    assert c.probe(7) is None and c.hits == 0
    assert c.admit(7) is False and c.admit(7) is True and c.admit(7) is False
    c.insert(7, "a", 40)
    c.insert(8, "b", 40)
    item = c.probe(7)
    assert item is not None and c.touch(7, item) == "a" and c.hits == 1
    c.insert(9, "c", 40)  # evicts 8, the least recently used now
    assert c.probe(8) is None and c.probe(7) is not None and c.probe(9) is not None
