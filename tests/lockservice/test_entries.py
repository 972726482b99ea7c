"""Chubby §2.3/§2.6 small files: entries with versions, compare-and-set, ephemeral entries."""

from __future__ import annotations

from lockservice import commands as c
from lockservice.results import Deleted, Entry, EntryValue, Reason, Refused, Written

from .harness import Log


def test_versions_come_from_one_revision_so_a_recreated_entry_never_reuses_one() -> None:
    log = Log()
    assert log(c.Put("a", b"1", expected_version=0)) == Written(1)
    assert log(c.Put("a", b"2", expected_version=1)) == Written(2)
    assert log(c.Delete("a", expected_version=2)) == Deleted("a")
    assert log(c.Put("a", b"3", expected_version=0)) == Written(3)  # not 1 again: no ABA
    assert log(c.Get("a")) == EntryValue(Entry("a", b"3", 3, None))


def test_compare_and_set_mismatch_is_refused_and_changes_nothing() -> None:
    log = Log()
    log(c.Put("a", b"1"))
    before = log.fsm.snapshot()
    assert log(c.Put("a", b"2", expected_version=0)) == Refused(
        Reason.VERSION_MISMATCH, "'a' is at version 1, expected 0"
    )
    assert log(c.Put("a", b"2", expected_version=7)).reason is Reason.VERSION_MISMATCH  # type: ignore[union-attr]
    assert log(c.Put("b", b"2", expected_version=1)).reason is Reason.VERSION_MISMATCH  # type: ignore[union-attr]
    assert log(c.Delete("a", expected_version=9)).reason is Reason.VERSION_MISMATCH  # type: ignore[union-attr]
    assert log(c.Delete("zz")).reason is Reason.NOT_FOUND  # type: ignore[union-attr]
    assert log.fsm.snapshot() == before


def test_ephemeral_entries_die_with_a_closed_session_and_move_with_a_put() -> None:
    log = Log()
    a, b = log.session(), log.session()
    log(c.Put("e1", b"x", ephemeral_session=a))
    log(c.Put("e2", b"x", ephemeral_session=a))
    log(c.Put("e2", b"y", ephemeral_session=b))  # now b's
    log(c.CloseSession(a))
    assert log.fsm.get("e1") is None
    assert log.fsm.get("e2") == Entry("e2", b"y", 3, b)


def test_ephemeral_put_for_an_unknown_session_is_refused() -> None:
    log = Log()
    assert log(c.Put("e", b"x", ephemeral_session=5)).reason is Reason.UNKNOWN_SESSION  # type: ignore[union-attr]
    assert log.fsm.entries == {}
