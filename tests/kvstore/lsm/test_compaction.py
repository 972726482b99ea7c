"""Leveled compaction choices and the drop rules (compaction.py)."""

from __future__ import annotations

from kvstore.lsm.coding import KIND_DELETE, KIND_VALUE
from kvstore.lsm.compaction import drop_obsolete, pick_compaction, pick_range_compaction
from kvstore.lsm.options import Options
from kvstore.lsm.version import FileMeta, Version, VersionEdit, apply_edit

OPTS = Options(l0_compaction_trigger=2, level1_bytes=1000, level_size_ratio=10,
               num_levels=4)


def meta(number: int, smallest: bytes, largest: bytes, size: int = 100) -> FileMeta:
    return FileMeta(number, size, smallest, largest, 1, 1, 1)


def version(*added) -> Version:
    return apply_edit(Version.empty(4), VersionEdit(added=list(added)))


def test_nothing_to_do_below_every_budget() -> None:
    assert pick_compaction(version((0, meta(1, b"a", b"b"))), OPTS, {}) is None


def test_level0_by_file_count_takes_overlapping_tables_and_their_level1_overlaps() -> None:
    v = version((0, meta(1, b"a", b"c")), (0, meta(2, b"b", b"d")), (0, meta(3, b"x", b"z")),
                (1, meta(4, b"c", b"e")), (1, meta(5, b"f", b"g")))
    c = pick_compaction(v, OPTS, {})
    assert c is not None and c.level == 0
    assert sorted(f.number for f in c.inputs) == [1, 2]
    assert [f.number for f in c.overlaps] == [4]
    edit = c.edit([meta(9, b"a", b"e")])
    assert sorted(edit.deleted) == [(0, 1), (0, 2), (1, 4)]
    assert edit.added == [(1, meta(9, b"a", b"e"))]
    apply_edit(v, edit).check()


def test_deeper_level_by_size_round_robin_after_compact_pointer() -> None:
    v = version((1, meta(1, b"a", b"b", 600)), (1, meta(2, b"c", b"d", 600)),
                (2, meta(3, b"c", b"c")))
    c = pick_compaction(v, OPTS, {})
    assert c is not None and c.level == 1 and [f.number for f in c.inputs] == [1]
    assert c.is_trivial_move
    c = pick_compaction(v, OPTS, {1: b"b"})
    assert c is not None and [f.number for f in c.inputs] == [2]
    assert [f.number for f in c.overlaps] == [3]
    assert c.edit([]).compact_pointers == [(1, b"d")]


def test_range_compaction_takes_every_table_meeting_the_range() -> None:
    v = version((1, meta(1, b"a", b"b")), (1, meta(2, b"c", b"d")), (1, meta(3, b"x", b"y")))
    c = pick_range_compaction(v, 1, b"b", b"c")
    assert c is not None and [f.number for f in c.inputs] == [1, 2]
    assert pick_range_compaction(v, 1, b"e", b"f") is None


V, D = KIND_VALUE, KIND_DELETE


def test_newest_version_wins_and_hidden_versions_are_dropped() -> None:
    entries = [(b"a", 9, V, b"9"), (b"a", 5, V, b"5"), (b"a", 2, D, b""), (b"b", 3, V, b"3")]
    kept = list(drop_obsolete(entries, smallest_snapshot=100, may_exist_below=lambda k: True))
    assert kept == [(b"a", 9, V, b"9"), (b"b", 3, V, b"3")]


def test_versions_a_snapshot_can_see_are_kept() -> None:
    entries = [(b"a", 9, V, b"9"), (b"a", 5, V, b"5"), (b"a", 2, V, b"2")]
    kept = list(drop_obsolete(entries, smallest_snapshot=6, may_exist_below=lambda k: True))
    assert kept == [(b"a", 9, V, b"9"), (b"a", 5, V, b"5")]


def test_tombstone_dropped_only_where_no_deeper_level_may_hold_the_key() -> None:
    entries = [(b"a", 9, D, b""), (b"a", 4, V, b"4"), (b"b", 8, D, b"")]
    kept = list(drop_obsolete(entries, 100, may_exist_below=lambda k: k == b"b"))
    assert kept == [(b"b", 8, D, b"")]
    kept = list(drop_obsolete(entries, 5, may_exist_below=lambda k: False))
    # Snapshot 5 still sees a=4, so the newer tombstones are not yet visible to all.
    assert kept == entries
