"""The engine against a dict model (hypothesis stateful): puts, deletes, batches, scans,
snapshots, flushes, compactions and reopen, with sizes so tiny that flushes and
compactions really happen; every read is compared with the model."""

from __future__ import annotations

import shutil
import tempfile

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
    rule,
)

from kvstore.lsm import Engine, WriteBatch

OPTIONS = {
    "memtable_bytes": 1024,
    "memtable_entry_overhead": 16,
    "table_file_bytes": 512,
    "level1_bytes": 2048,
    "level_size_ratio": 2,
    "num_levels": 4,
    "l0_compaction_trigger": 2,
    "l0_slowdown_trigger": 3,
    "l0_stop_trigger": 6,
    "block_size": 64,
    "block_cache_bytes": 4096,
    "compaction_process": False,  # in-thread merges: no worker spawn per engine
}

keys = st.sampled_from([b"k%02d" % i for i in range(24)]) | st.binary(min_size=1, max_size=3)
values = st.binary(max_size=40)
bounds = st.none() | keys


def expected_scan(model: dict[bytes, bytes], start, end) -> list[tuple[bytes, bytes]]:
    return [(k, v) for k, v in sorted(model.items())
            if (start is None or k >= start) and (end is None or k < end)]


TOTALS = {"flushes": 0, "compactions": 0}


class EngineMachine(RuleBasedStateMachine):
    snapshots = Bundle("snapshots")

    def __init__(self) -> None:
        super().__init__()
        self.folder = tempfile.mkdtemp(prefix="lsm-stateful-")
        self.db = Engine.open(self.folder, sync="none", **OPTIONS)
        self.model: dict[bytes, bytes] = {}
        self.live: list = []

    @rule(key=keys, value=values)
    def put(self, key, value) -> None:
        self.db.put(key, value)
        self.model[key] = value

    @rule(key=keys)
    def delete(self, key) -> None:
        self.db.delete(key)
        self.model.pop(key, None)

    @rule(ops=st.lists(st.tuples(keys, st.none() | values), max_size=8))
    def batch(self, ops) -> None:
        batch = WriteBatch()
        for key, value in ops:
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        self.db.write(batch)
        for key, value in ops:
            if value is None:
                self.model.pop(key, None)
            else:
                self.model[key] = value

    @rule(key=keys)
    def get(self, key) -> None:
        assert self.db.get(key) == self.model.get(key)

    @rule(start=bounds, end=bounds)
    def scan(self, start, end) -> None:
        assert list(self.db.scan(start, end)) == expected_scan(self.model, start, end)

    @rule(target=snapshots)
    def take_snapshot(self):
        snap = (self.db.snapshot(), dict(self.model))
        self.live.append(snap)
        return snap

    @rule(snap=snapshots, key=keys, start=bounds, end=bounds)
    def read_snapshot(self, snap, key, start, end) -> None:
        snapshot, frozen = snap
        if snapshot._released:
            return
        assert snapshot.get(key) == frozen.get(key)
        assert list(snapshot.scan(start, end)) == expected_scan(frozen, start, end)

    @rule(snap=consumes(snapshots))
    def release_snapshot(self, snap) -> None:
        snap[0].release()

    @rule()
    def flush(self) -> None:
        self.db.flush()

    @rule(start=bounds, end=bounds)
    def compact_range(self, start, end) -> None:
        self.db.compact_range(start, end)

    @precondition(lambda self: True)
    @rule()
    def reopen(self) -> None:
        for snapshot, _ in self.live:
            snapshot.release()
        self.live.clear()
        self.db.close()
        self.db = Engine.open(self.folder, sync="none", **OPTIONS)

    @invariant()
    def engine_invariants_hold(self) -> None:
        self.db.check()

    def teardown(self) -> None:
        for snapshot, _ in self.live:
            snapshot.release()
        stats = self.db.stats()
        TOTALS["flushes"] += stats["flushes"]
        TOTALS["compactions"] += stats["compactions"]
        self.db.close()
        with Engine.open(self.folder, sync="none", **OPTIONS) as db:
            assert list(db.scan()) == expected_scan(self.model, None, None)
        shutil.rmtree(self.folder, ignore_errors=True)


EngineMachine.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestEngineAgainstDictModel = EngineMachine.TestCase


def test_the_machine_really_flushed_and_compacted() -> None:
    """Runs after the machine (file order): the tiny sizes must have made the engine
    flush and compact on its own, or the model comparison proved little."""
    if TOTALS["flushes"] == 0:  # this test run alone: drive one machine run first
        TestEngineAgainstDictModel("runTest").runTest()
    assert TOTALS["flushes"] > 0 and TOTALS["compactions"] > 0, TOTALS
