"""The lock and election checkers catch overlap, repeated generations and stale writes."""

from __future__ import annotations

from chaos.checker_lock import check, check_election
from chaos.history import INF, Operation, OpType


def o(process, f, start, end, result=None, value=None, kind=OpType.OK, key="L"):
    return Operation(process, f, key, value, result, kind, start, end, start)


def test_clean_handover_is_valid():
    ops = [o(1, "acquire", 0, 1, result=5), o(1, "write", 2, 3, value=5),
           o(1, "release", 4, 5), o(2, "acquire", 4, 6, result=9), o(2, "write", 7, 8, value=9)]
    v = check(ops)
    assert v.valid and v.acquisitions == 2 and v.accepted_writes == 2


def test_overlapping_holders_are_caught():
    ops = [o(1, "acquire", 0, 1, result=5), o(2, "acquire", 2, 3, result=6),
           o(1, "release", 4, 5)]
    v = check(ops)
    assert not v.valid and len(v.overlaps) == 1
    first, second = v.overlaps[0]
    assert (first.process, second.process) == (1, 2)


def test_a_lost_record_ends_belief_before_the_next_grant():
    ops = [o(1, "acquire", 0, 1, result=5), o(1, "lost", 3, 3),
           o(2, "acquire", 2, 4, result=6)]
    assert check(ops).valid
    # a holder that never learned it lost the lock believes for ever: caught
    assert not check([ops[0], ops[2]]).valid


def test_an_indeterminate_acquire_confers_nothing():
    ops = [o(1, "acquire", 0, INF, kind=OpType.INFO), o(2, "acquire", 2, 3, result=6)]
    assert check(ops).valid


def test_generations_must_increase_between_sequential_grants():
    ops = [o(1, "acquire", 0, 1, result=5), o(1, "release", 2, 2),
           o(2, "acquire", 3, 4, result=5), o(2, "release", 5, 5),
           o(3, "acquire", 6, 7, result=4)]
    v = check(ops)
    assert not v.valid and len(v.generation_violations) >= 2


def test_a_stale_write_after_a_newer_one_is_caught():
    ops = [o(2, "write", 0, 1, value=9), o(1, "write", 2, 3, value=5)]
    v = check(ops)
    assert not v.valid and [(a.value, b.value) for a, b in v.fencing_violations] == [(9, 5)]
    concurrent = [o(2, "write", 0, 5, value=9), o(1, "write", 2, 3, value=5)]
    assert check(concurrent).valid  # overlapping in time: either order was possible


def test_one_leader_at_a_time():
    ok = [o(1, "campaign", 0, 1), o(1, "resign", 2, 3), o(2, "campaign", 1, 4)]
    assert check_election(ok).valid
    bad = [o(1, "campaign", 0, 1), o(2, "campaign", 1, 2)]
    v = check_election(bad)
    assert not v.valid and v.acquisitions == 2


def test_a_lost_record_written_late_ends_belief_at_the_instant_it_carries():
    ops = [o(1, "acquire", 0, 1, result=5), o(2, "acquire", 3, 4, result=6),
           o(1, "lost", 6, 6, value=2)]  # recorded at 6, after the op in flight; lost at 2
    assert check(ops).valid
    assert not check([*ops[:2], o(1, "lost", 6, 6)]).valid  # no instant: ends at 6
