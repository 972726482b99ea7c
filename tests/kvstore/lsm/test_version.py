"""Versions and edits (version.py): level invariants and where a read looks."""

from __future__ import annotations

import pytest

from kvstore.lsm.version import FileMeta, Version, VersionEdit, apply_edit


def meta(number: int, smallest: bytes, largest: bytes, size: int = 100) -> FileMeta:
    return FileMeta(number, size, smallest, largest, 1, 1, 1)


def test_apply_edit_adds_and_deletes_and_keeps_levels_ordered() -> None:
    v = Version.empty(4)
    v = apply_edit(v, VersionEdit(added=[(0, meta(1, b"a", b"m")), (0, meta(2, b"c", b"z")),
                                         (1, meta(4, b"n", b"z")), (1, meta(3, b"a", b"f"))]))
    assert [f.number for f in v.levels[0]] == [2, 1]  # newest first
    assert [f.number for f in v.levels[1]] == [3, 4]  # by key
    v.check()
    v2 = apply_edit(v, VersionEdit(deleted=[(0, 1)]))
    assert [f.number for f in v2.levels[0]] == [2]
    assert [f.number for f in v.levels[0]] == [2, 1]  # the old version is unchanged


def test_apply_edit_refuses_overlap_in_a_sorted_level_and_unknown_deletes() -> None:
    v = apply_edit(Version.empty(3), VersionEdit(added=[(1, meta(1, b"a", b"m"))]))
    with pytest.raises(ValueError, match="overlap"):
        apply_edit(v, VersionEdit(added=[(1, meta(2, b"m", b"z"))]))
    with pytest.raises(ValueError, match="not in the version"):
        apply_edit(v, VersionEdit(deleted=[(2, 1)]))
    with pytest.raises(ValueError, match="level"):
        apply_edit(v, VersionEdit(added=[(3, meta(5, b"a", b"b"))]))


def test_tables_for_key_tries_l0_newest_first_then_one_table_per_level() -> None:
    v = apply_edit(Version.empty(4), VersionEdit(added=[
        (0, meta(7, b"a", b"k")), (0, meta(9, b"f", b"z")), (0, meta(8, b"x", b"z")),
        (1, meta(3, b"a", b"d")), (1, meta(4, b"e", b"h")),
        (2, meta(1, b"a", b"z")),
    ]))
    assert [(lvl, f.number) for lvl, f in v.tables_for_key(b"g")] == [
        (0, 9), (0, 7), (1, 4), (2, 1)]
    assert [f.number for _, f in v.tables_for_key(b"dd")] == [7, 1]  # gap in L1
    assert [f.number for _, f in v.tables_for_key(b"zz")] == []
    for k in (b"0", b"a", b"d", b"dd", b"e", b"g", b"h", b"k", b"x", b"z", b"zz"):
        assert v.candidates(k) == list(v.tables_for_key(k))  # the read path's list form


def test_overlapping_at_level0_grows_to_cover_chained_ranges() -> None:
    v = apply_edit(Version.empty(3), VersionEdit(added=[
        (0, meta(1, b"a", b"c")), (0, meta(2, b"b", b"f")), (0, meta(3, b"e", b"h")),
        (0, meta(4, b"x", b"z"))]))
    assert {f.number for f in v.overlapping(0, b"a", b"a")} == {1, 2, 3}
    assert {f.number for f in v.overlapping(0, None, None)} == {1, 2, 3, 4}
    assert v.overlapping(0, b"i", b"w") == []


def test_key_may_exist_below_looks_only_at_deeper_levels() -> None:
    v = apply_edit(Version.empty(4), VersionEdit(added=[
        (1, meta(1, b"a", b"c")), (3, meta(2, b"m", b"p"))]))
    assert v.key_may_exist_below(0, b"b")
    assert not v.key_may_exist_below(1, b"b")
    assert v.key_may_exist_below(2, b"n")
    assert not v.key_may_exist_below(3, b"n")
    assert not v.key_may_exist_below(0, b"x")
