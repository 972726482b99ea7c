"""The set checker's categories (Jepsen's set workload)."""

from __future__ import annotations

from chaos.checker_set import check
from chaos.history import INF, Operation, OpType


def add(element, kind=OpType.OK, key="s", t=0):
    end = INF if kind is OpType.INFO else t + 1
    return Operation(t, "add", key, element, None, kind, t, end, t)


def final(elements, key="s", kind=OpType.OK):
    return Operation(99, "final-read", key, None, set(elements), kind, 100, 101, 100)


def test_every_acknowledged_add_present_is_valid():
    v = check([add(1), add(2, t=1), add(3, OpType.INFO, t=2), final({1, 2, 3})])
    assert v.valid and v.ok == 2 and v.recovered == (("s", 3),) and v.acknowledged == 2


def test_a_lost_add_is_caught():
    v = check([add(1), add(2, t=1), final({1})])
    assert not v.valid and v.lost == (("s", 2),)


def test_an_element_nobody_added_is_caught():
    v = check([add(1), final({1, 7})])
    assert not v.valid and v.unexpected == (("s", 7),)


def test_a_failed_add_that_shows_up_is_caught():
    v = check([add(1, OpType.FAIL), final({1})])
    assert not v.valid and v.failed_but_present == (("s", 1),)


def test_a_key_without_a_successful_final_read_cannot_pass():
    v = check([add(1), final({1}, kind=OpType.FAIL)])
    assert not v.valid and v.unread_keys == ("s",)


def test_keys_are_separate():
    v = check([add(1, key="a"), add(2, key="b", t=1), final({1}, key="a"), final({1}, key="b")])
    assert v.lost == (("b", 2),) and v.unexpected == (("b", 1),)
