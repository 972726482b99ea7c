"""The engine's API and its promises (engine.py): reads see writes, batches are atomic,
scans and snapshots are consistent, data survives reopen, compaction drops what is dead,
group commit shares fsyncs, writes stall when level 0 is deep, damage is reported."""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path

import pytest

from kvstore.lsm import (
    CorruptionError,
    Engine,
    EngineClosedError,
    InvalidArgumentError,
    LockHeldError,
    StorageError,
    WriteBatch,
)
from kvstore.lsm.filesystem import FaultInjectionFileSystem
from tests.waiting import wait_until

# Tiny sizes so that a few thousand writes flush, compact and reach deeper levels.
TINY = {
    "memtable_bytes": 16 * 1024,
    "memtable_entry_overhead": 32,
    "table_file_bytes": 8 * 1024,
    "level1_bytes": 32 * 1024,
    "block_size": 512,
    "block_cache_bytes": 64 * 1024,
    "compaction_process": False,  # in-thread merges: no worker spawn per engine
}


def key(i: int) -> bytes:
    return b"key%06d" % i


def open_tiny(path: Path, sync: str = "none", **extra) -> Engine:
    return Engine.open(str(path), sync=sync, **{**TINY, **extra})


def fill(db: Engine, n: int, seed: int = 0) -> dict[bytes, bytes]:
    rng = random.Random(seed)
    model: dict[bytes, bytes] = {}
    for _ in range(n):
        k = key(rng.randrange(n // 2))
        if rng.random() < 0.15:
            db.delete(k)
            model.pop(k, None)
        else:
            v = os.urandom(rng.randrange(0, 60))
            db.put(k, v)
            model[k] = v
    return model


def test_put_get_delete_and_missing_keys(tmp_path: Path) -> None:
    with Engine.open(str(tmp_path), sync="always") as db:
        assert db.get(b"a") is None
        db.put(b"a", b"1")
        db.put(bytearray(b"b"), memoryview(b"2"))
        assert db.get(b"a") == b"1"
        assert db.get(b"b") == b"2"
        db.put(b"a", b"")
        assert db.get(b"a") == b""  # an empty value is a value, not a delete
        db.delete(b"a")
        db.delete(b"never-written")
        assert db.get(b"a") is None


def test_bad_arguments_raise_clear_errors_and_change_nothing(tmp_path: Path) -> None:
    with Engine.open(str(tmp_path), sync="none") as db:
        db.put(b"k", b"v")
        with pytest.raises(TypeError, match=r"key must be bytes.*not str"):
            db.put("k", b"v")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="value must be bytes"):
            db.put(b"k", 5)  # type: ignore[arg-type]
        with pytest.raises(InvalidArgumentError, match="empty"):
            db.get(b"")
        with pytest.raises(InvalidArgumentError, match="limit"):
            db.put(b"x" * (64 * 1024 + 1), b"v")
        with pytest.raises(TypeError, match="WriteBatch"):
            db.write([(b"k", b"v")])  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            db.scan("a", None)  # type: ignore[arg-type]
        assert db.get(b"k") == b"v"
        assert db.stats()["last_seq"] == 1
    with pytest.raises(InvalidArgumentError, match="sync must be one of"):
        Engine.open(str(tmp_path), sync="sometimes")
    with pytest.raises(InvalidArgumentError, match=r"unknown engine option.*memtable_size"):
        Engine.open(str(tmp_path), memtable_size=5)
    with pytest.raises(InvalidArgumentError, match="memtable_bytes must be positive"):
        Engine.open(str(tmp_path), memtable_bytes=0)


def test_batches_apply_all_or_nothing_and_in_order(tmp_path: Path) -> None:
    with Engine.open(str(tmp_path), sync="always") as db:
        db.put(b"gone", b"x")
        batch = WriteBatch().put(b"a", b"1").put(b"a", b"2").delete(b"gone").put(b"c", b"3")
        db.write(batch)
        assert [db.get(k) for k in (b"a", b"gone", b"c")] == [b"2", None, b"3"]
        bad = WriteBatch().put(b"z", b"1")
        with pytest.raises(TypeError):
            bad.put(None, b"2")  # type: ignore[arg-type]
        db.write(WriteBatch())  # empty: a no-op
        assert db.stats()["last_seq"] == 5


def test_data_survives_close_and_reopen_through_flushes_and_compactions(tmp_path) -> None:
    db = open_tiny(tmp_path)
    model = fill(db, 6000)
    stats = db.stats()
    assert stats["flushes"] > 3 and stats["compactions"] > 0
    assert sum(stats["files_per_level"][1:]) > 0
    db.check()
    db.close()
    with open_tiny(tmp_path) as db:
        assert list(db.scan()) == sorted(model.items())
        for k in list(model)[:200]:
            assert db.get(k) == model[k]
        db.check()


def test_recovery_replays_the_log_without_a_clean_close(tmp_path: Path) -> None:
    db = Engine.open(str(tmp_path), sync="always")
    db.put(b"a", b"1")
    db.write(WriteBatch().put(b"b", b"2").delete(b"a"))
    # Simulate a crash: drop the engine without close (release only its folder lock).
    db._closing = True
    with db._mutex:
        db._bg_cv.notify_all()
    for t in db._threads:
        t.join()
    db._lock_file.close()
    with Engine.open(str(tmp_path), sync="always") as db2:
        assert db2.get(b"a") is None and db2.get(b"b") == b"2"
        assert db2.stats()["recovered_records"] == 2
        assert db2.stats()["last_seq"] == 3
    db._log.close()
    db._manifest.close()
    db.tables.close()


def test_scan_ranges_and_consistency_under_later_writes(tmp_path: Path) -> None:
    with open_tiny(tmp_path) as db:
        model = fill(db, 3000, seed=3)
        items = sorted(model.items())
        assert list(db.scan(key(100), key(200))) == [kv for kv in items
                                                     if key(100) <= kv[0] < key(200)]
        assert list(db.scan(key(200), key(100))) == []
        it = db.scan()
        first = next(it)
        for k in list(model)[:300]:  # writes after the scan began are not seen by it
            db.delete(k)
        db.put(b"key", b"new")
        db.flush()
        db.compact_range()
        assert [first, *it] == items
        assert db.get(b"key") == b"new"


def test_snapshot_reads_the_past_across_flush_and_compaction(tmp_path: Path) -> None:
    with open_tiny(tmp_path) as db:
        model = fill(db, 2000, seed=5)
        snap = db.snapshot()
        for k in list(model):
            db.put(k, b"overwritten")
        db.delete(next(iter(model)))
        db.compact_range()
        assert list(snap.scan()) == sorted(model.items())
        for k in list(model)[:50]:
            assert snap.get(k) == model[k]
            assert db.get(k) in (b"overwritten", None)
        snap.release()
        with pytest.raises(InvalidArgumentError, match="after release"):
            snap.get(b"x")
        db.compact_range()  # with the snapshot gone the old versions go too
        assert db.stats()["live_snapshots"] == 0


def test_full_compaction_drops_tombstones_and_old_versions(tmp_path: Path) -> None:
    with open_tiny(tmp_path) as db:
        for round_ in range(3):
            for i in range(1500):
                db.put(key(i), b"%d" % round_ * 20)
        for i in range(0, 1500, 2):
            db.delete(key(i))
        db.compact_range()
        stats = db.stats()
        live = sum(len(key(i)) + 20 for i in range(1, 1500, 2))
        assert stats["files_per_level"][0] == 0
        assert stats["table_bytes"] < 3 * live  # one version of half the keys, no tombstones
        count = 0
        for name in os.listdir(tmp_path):
            if name.endswith(".sst"):
                count += 1
        assert count == sum(stats["files_per_level"])  # obsolete tables were deleted
        assert len(list(db.scan())) == 750


def test_an_open_scan_keeps_its_tables_until_closed(tmp_path: Path) -> None:
    with open_tiny(tmp_path) as db:
        model = fill(db, 3000, seed=7)
        db.flush()
        scan = db.scan()
        pinned = {f"{n:06d}.sst" for n in scan._version.numbers()}
        assert pinned
        fill(db, 3000, seed=8)
        db.compact_range()
        assert pinned <= set(os.listdir(tmp_path))  # still there: the scan refers to them
        assert list(scan) == sorted(model.items())
        db.compact_range()
        assert not pinned & set(os.listdir(tmp_path))


def test_a_point_read_pin_keeps_its_tables_until_unpinned(tmp_path: Path) -> None:
    """get() pins the current version without the mutex (engine._pin); a compaction that
    replaces it meanwhile must not delete its tables until the last pin is dropped."""
    with open_tiny(tmp_path) as db:
        model = fill(db, 3000, seed=9)
        db.flush()
        version = db._pin()
        pinned = {f"{n:06d}.sst" for n in version.numbers()}
        assert pinned
        fill(db, 3000, seed=10)
        db.compact_range()
        assert db._state.version is not version and version.refs == 0
        assert pinned <= set(os.listdir(tmp_path))  # still there: the pin refers to them
        for k, v in list(model.items())[:50]:  # the pinned tables still read
            for _, meta in version.tables_for_key(k):
                hit = db.tables.reader(meta.number).get(k, db._last_seq)
                if hit is not None:
                    break
            assert hit is not None and hit[2] == v
        db._unpin(version)
        assert not pinned & set(os.listdir(tmp_path))  # the last pin retired the version
        assert id(version) not in db._live_versions


def test_group_commit_shares_fsyncs_between_concurrent_writers(tmp_path: Path) -> None:
    with Engine.open(str(tmp_path), sync="always") as db:
        threads = [threading.Thread(target=lambda t=t: [db.put(b"t%d-%d" % (t, i), b"v")
                                                        for i in range(60)])
                   for t in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stats = db.stats()
        assert stats["puts"] == 960
        assert stats["log_syncs"] < 960  # some writers shared a leader's fsync
        assert all(db.get(b"t%d-%d" % (t, i)) == b"v" for t in range(16) for i in range(60))


@pytest.mark.parametrize("sync", ["always", "interval", "none"])
def test_every_sync_policy_keeps_data_across_reopen(tmp_path: Path, sync: str) -> None:
    with open_tiny(tmp_path, sync=sync, sync_interval_ms=5) as db:
        model = fill(db, 300 if sync == "always" else 1500, seed=11)
    with open_tiny(tmp_path, sync=sync) as db:
        assert list(db.scan()) == sorted(model.items())


def test_interval_policy_syncs_in_the_background(tmp_path: Path) -> None:
    with Engine.open(str(tmp_path), sync="interval", sync_interval_ms=1) as db:
        db.put(b"a", b"1")
        wait_until(lambda: db.stats()["log_syncs"])
        assert db.stats()["log_syncs"] >= 1


def test_writes_stall_and_say_so_when_level0_is_too_deep(tmp_path: Path) -> None:
    with open_tiny(tmp_path, l0_compaction_trigger=2, l0_slowdown_trigger=2,
                   l0_stop_trigger=3) as db:
        with db._compact_lock:  # hold compaction off so level 0 fills up
            done = threading.Event()

            def writer() -> None:
                fill(db, 4000, seed=13)
                done.set()

            t = threading.Thread(target=writer)
            t.start()
            wait_until(lambda: db.stats()["files_per_level"][0] >= 3
                       and db.stats()["stalls"] > 0)
            stats = db.stats()
            assert stats["stalls"] > 0 and stats["files_per_level"][0] == 3
            assert not done.is_set()  # stopped at l0_stop_trigger until compaction runs
        t.join()
        stats = db.stats()
        assert stats["stall_seconds"] > 0 and stats["slowdowns"] > 0


def test_two_engines_cannot_open_one_folder(tmp_path: Path) -> None:
    with Engine.open(str(tmp_path)), pytest.raises(LockHeldError):
        Engine.open(str(tmp_path))
    Engine.open(str(tmp_path)).close()


def test_use_after_close_raises(tmp_path: Path) -> None:
    db = Engine.open(str(tmp_path))
    db.close()
    db.close()  # idempotent
    for call in (lambda: db.put(b"a", b"b"), lambda: db.get(b"a"), lambda: db.scan(),
                 lambda: db.snapshot(), lambda: db.flush()):
        with pytest.raises(EngineClosedError):
            call()


def test_torn_log_tail_reopens_with_every_complete_record(tmp_path: Path) -> None:
    rng = random.Random(17)
    base = tmp_path / "base"
    with Engine.open(str(base), sync="always") as db:
        for i in range(40):
            db.write(WriteBatch().put(key(i), b"v" * i).put(b"pair%d" % i, b"p"))
        log_name = max(n for n in os.listdir(base) if n.endswith(".log"))
    data = (base / log_name).read_bytes()
    sizes = sorted({0, len(data) - 1, *(rng.randrange(len(data)) for _ in range(10))})
    for size in sizes:
        folder = tmp_path / f"cut{size}"
        folder.mkdir()
        for name in os.listdir(base):
            if name != "LOCK":
                (folder / name).write_bytes((base / name).read_bytes())
        (folder / log_name).write_bytes(data[:size])
        with Engine.open(str(folder), sync="always") as db:
            got = dict(db.scan())
            n = sum(1 for i in range(40) if key(i) in got)
            assert all(key(i) in got for i in range(n))  # a prefix of the writes
            for i in range(40):  # each batch all or nothing
                assert (key(i) in got) == (b"pair%d" % i in got)
            if size == len(data) - 1:  # only the last record lost its final byte
                assert n == 39
                assert db.stats()["torn_tails"] == 1


def test_damage_in_the_middle_of_the_log_is_reported_at_open(tmp_path: Path) -> None:
    with Engine.open(str(tmp_path), sync="always") as db:
        for i in range(200):
            db.put(key(i), b"x" * 100)
        log_name = max(n for n in os.listdir(tmp_path) if n.endswith(".log"))
    path = tmp_path / log_name
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptionError) as info:
        Engine.open(str(tmp_path), sync="always")
    assert info.value.path.endswith(log_name)
    # The failed open released the folder's lock: a repaired folder opens again.
    path.write_bytes(bytes(data[: len(data) // 3 - 200]))
    Engine.open(str(tmp_path), sync="always").close()


def test_flipped_byte_in_an_sstable_is_a_corruption_error_not_wrong_data(tmp_path) -> None:
    with Engine.open(str(tmp_path), sync="none", block_size=256,
                     block_cache_bytes=1) as db:
        for i in range(2000):
            db.put(key(i), b"value-%06d" % i)
        db.compact_range()
    tables = sorted(n for n in os.listdir(tmp_path) if n.endswith(".sst"))
    path = tmp_path / tables[0]
    data = bytearray(path.read_bytes())
    data[len(data) // 4] ^= 0x20  # inside a data block
    path.write_bytes(bytes(data))
    with Engine.open(str(tmp_path), sync="none", block_size=256, block_cache_bytes=1) as db:
        errors = wrong = 0
        for i in range(2000):
            try:
                value = db.get(key(i))
            except CorruptionError as exc:
                assert exc.path.endswith(tables[0])
                errors += 1
                continue
            if value != b"value-%06d" % i:
                wrong += 1
        assert errors > 0 and wrong == 0
        with pytest.raises(CorruptionError):
            list(db.scan())


def test_background_io_error_makes_the_engine_read_only_with_a_clear_error(tmp_path) -> None:
    fs = FaultInjectionFileSystem()
    db = Engine.open(str(tmp_path), sync="none", fs=fs, **TINY)
    db.put(b"a", b"1")
    fs.fail_syncs = True
    with pytest.raises((StorageError, OSError)):
        for i in range(5000):
            db.put(key(i), b"x" * 50)
    assert db.stats()["background_error"] is not None
    assert db.get(b"a") == b"1"  # reads still work
    with pytest.raises(StorageError, match="read-only"):
        db.put(b"b", b"2")
    fs.fail_syncs = False
    db.close()


def test_flush_and_compaction_during_concurrent_synced_writes(tmp_path: Path) -> None:
    """flush() switches the log through the writer queue, so it never closes a log a
    group-commit leader is appending to with the mutex released."""
    with open_tiny(tmp_path, sync="always") as db:
        errors: list[BaseException] = []

        def writer(t: int) -> None:
            try:
                for i in range(40):
                    db.write(WriteBatch().put(b"w%d-%d" % (t, i), b"v" * 30)
                             .put(b"x%d-%d" % (t, i), b"v"))
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(t,)) for t in range(6)]
        for t in threads:
            t.start()
        for _ in range(10):
            db.flush()
        db.compact_range()
        for t in threads:
            t.join()
        assert not errors
        assert db.stats()["background_error"] is None
        got = dict(db.scan())
        assert len(got) == 6 * 40 * 2


def test_compaction_in_a_worker_process_gives_the_same_contents(tmp_path: Path) -> None:
    with open_tiny(tmp_path, compaction_process=True) as db:
        assert db._worker_process_ok()
        model = fill(db, 4000, seed=21)
        snap = db.snapshot()
        for k in list(model)[:100]:
            db.delete(k)
        db.compact_range()
        stats = db.stats()
        assert stats["compactions"] > 0 and stats["files_per_level"][0] == 0
        assert list(snap.scan()) == sorted(model.items())  # the worker kept snapshot data
        snap.release()
        for k in list(model)[:100]:
            del model[k]
        assert list(db.scan()) == sorted(model.items())
        assert db._executor is not None and not db._process_failed  # the worker merged
        db.check()
    with open_tiny(tmp_path) as db:
        assert list(db.scan()) == sorted(model.items())


def test_a_table_missing_from_the_folder_is_reported_at_open(tmp_path: Path) -> None:
    with open_tiny(tmp_path) as db:
        fill(db, 1000)
        db.compact_range()
    table = sorted(p for p in tmp_path.iterdir() if p.suffix == ".sst")[0]
    table.unlink()
    with pytest.raises(CorruptionError, match="missing") as info:
        open_tiny(tmp_path)
    assert info.value.path.endswith(table.name)


def test_a_folder_with_data_but_no_current_is_refused(tmp_path: Path) -> None:
    with open_tiny(tmp_path) as db:
        fill(db, 500)
    (tmp_path / "CURRENT").unlink()
    with pytest.raises(StorageError, match="no CURRENT"):
        open_tiny(tmp_path)


def test_lookups_the_bloom_filter_answers_cost_no_seeks(tmp_path: Path) -> None:
    """A table whose filter rules a key out is not charged a seek: only block reads in
    vain count towards a seek compaction."""
    with open_tiny(tmp_path, l0_compaction_trigger=8, l0_slowdown_trigger=8,
                   l0_stop_trigger=12, idle_compaction_ms=0) as db:
        fill(db, 600, seed=23)
        db.flush()
        assert db.stats()["files_per_level"][0] >= 2
        reads = 0
        for _ in range(100):
            for i in range(20):
                db.get(key(i * 13) + b"-absent")
                reads += 1
        charged = len(db._seeks_left) and sum(
            100 - left for left in db._seeks_left.values())  # 100: the minimum allowance
        assert charged < reads // 10  # ~1% false positives per table, not one per read
        assert db.stats()["seek_compactions"] == 0


def test_reads_that_waste_table_lookups_trigger_a_seek_compaction(tmp_path: Path) -> None:
    """LevelDB's allowed_seeks: level-0 tables that reads keep consulting in vain are
    merged down, so later reads consult fewer tables; contents do not change. Only a
    block read in vain counts (a lookup the bloom filter answers is nearly free), so the
    filters here are nearly useless (1 bit per key: most absent keys pass them)."""
    with open_tiny(tmp_path, l0_compaction_trigger=8, l0_slowdown_trigger=8,
                   l0_stop_trigger=12, bloom_bits_per_key=1, idle_compaction_ms=0) as db:
        model = fill(db, 600, seed=23)
        db.flush()
        before = db.stats()["files_per_level"][0]
        assert before >= 2
        for _ in range(200):
            for i in range(20):
                db.get(key(i * 13) + b"-absent")  # inside the tables' key ranges
            if db.stats()["seek_compactions"]:
                break
        # the compaction thread (or its worker process, which may take seconds to start
        # on a busy machine) does the work
        wait_until(lambda: db.stats()["files_per_level"][0] < before)
        stats = db.stats()
        assert stats["seek_compactions"] >= 1
        assert stats["files_per_level"][0] < before
        assert list(db.scan()) == sorted(model.items())


def test_level0_is_folded_into_level1_once_writes_pause(tmp_path: Path) -> None:
    """Idle compaction: L0 tables below the count trigger are merged into level 1 once no
    write has come for idle_compaction_ms, so later reads consult one table per level;
    contents do not change. With idle_compaction_ms=0 they stay."""
    with open_tiny(tmp_path / "off", l0_compaction_trigger=8, l0_slowdown_trigger=8,
                   l0_stop_trigger=12, idle_compaction_ms=0) as db:
        fill(db, 600, seed=29)
        db.flush()
        before = db.stats()["files_per_level"][0]
        time.sleep(0.3)
        stats = db.stats()
        assert before >= 1 and stats["files_per_level"][0] == before
        assert stats["idle_compactions"] == 0
    with open_tiny(tmp_path / "on", l0_compaction_trigger=8, l0_slowdown_trigger=8,
                   l0_stop_trigger=12, idle_compaction_ms=50) as db:
        model = fill(db, 600, seed=29)
        db.flush()
        wait_until(lambda: db.stats()["files_per_level"][0] == 0)
        stats = db.stats()
        assert stats["idle_compactions"] >= 1 and sum(stats["files_per_level"][1:]) > 0
        assert list(db.scan()) == sorted(model.items())
        for k, v in model.items():
            assert db.get(k) == v
        db.check()
        # A write moves the last sequence number: the next flush's table waits its turn.
        db.put(b"late", b"1")
        db.flush()
        wait_until(lambda: db.stats()["files_per_level"][0] == 0)
        assert db.get(b"late") == b"1"


def test_idle_compaction_ms_must_not_be_negative(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="idle_compaction_ms"):
        open_tiny(tmp_path, idle_compaction_ms=-1)


def test_a_small_idle_compaction_does_not_start_the_worker_process(tmp_path: Path) -> None:
    """Reopening flushes the log to a level-0 table; folding that into level 1 once idle
    is merged in the compaction thread, not in a newly spawned worker process."""
    with open_tiny(tmp_path, idle_compaction_ms=50) as db:
        model = fill(db, 300, seed=31)
        db.flush()
        wait_until(lambda: db.stats()["files_per_level"][0] == 0)
        assert db.stats()["files_per_level"][1] >= 1
    with open_tiny(tmp_path, idle_compaction_ms=0) as db:
        db.put(key(5), b"new")  # in the log only: the next open flushes it to L0
        model[key(5)] = b"new"
    with open_tiny(tmp_path, compaction_process=True, idle_compaction_ms=50) as db:
        before = db.stats()
        assert before["files_per_level"][0] == 1  # overlaps a level-1 table: a merge
        wait_until(lambda: db.stats()["files_per_level"][0] == 0)
        stats = db.stats()
        assert stats["idle_compactions"] == 1
        assert stats["compactions"] == before["compactions"] + 1
        assert db._executor is None  # no worker was started for it
        assert list(db.scan()) == sorted(model.items())
