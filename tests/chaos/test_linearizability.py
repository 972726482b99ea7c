"""The Wing-Gong-Lowe search against hand-made histories and against brute force."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from chaos.history import INF, Operation, OpType, Record, pair
from chaos.linearizability import Register, VersionedRegister, check, check_per_key


def op(f, value=None, result=None, start=0, end=1, kind=OpType.OK, process=0, key="k", i=0):
    return Operation(process, f, key, value, result, kind, start, end, i)


def test_sequential_history_is_linearizable():
    ops = [op("write", 1, start=0, end=1), op("read", result=1, start=2, end=3),
           op("cas", [1, 2], start=4, end=5), op("read", result=2, start=6, end=7)]
    v = check(ops, Register())
    assert v.valid and v.operations == 4


def test_stale_read_after_a_completed_write_is_not_linearizable():
    ops = [op("write", 1, start=0, end=1), op("write", 2, start=2, end=3),
           op("read", result=1, start=4, end=5)]
    v = check(ops, Register())
    assert not v.valid
    assert v.stuck[-1].f == "read"


def test_concurrent_write_may_be_read_either_way():
    # write 2 overlaps both reads: one read sees 1 and the later one sees 2: fine
    ops = [op("write", 1, start=0, end=1), op("write", 2, start=2, end=10, process=1),
           op("read", result=1, start=3, end=4), op("read", result=2, start=5, end=6)]
    assert check(ops, Register()).valid
    # but once 2 was read, a later read cannot go back to 1
    ops.append(op("read", result=1, start=7, end=8))
    assert not check(ops, Register()).valid


def test_indeterminate_write_may_take_effect_late_or_never():
    ops = [op("write", 1, start=0, end=1),
           op("write", 2, start=2, end=INF, kind=OpType.INFO, process=1),
           op("read", result=1, start=5, end=6), op("read", result=2, start=7, end=8)]
    assert check(ops, Register()).valid
    never = [ops[0], ops[1], op("read", result=1, start=9, end=10)]
    assert check(never, Register()).valid


def test_failed_write_surely_did_not_happen():
    ops = [op("write", 1, start=0, end=1), op("write", 2, start=2, end=3, kind=OpType.FAIL),
           op("read", result=2, start=4, end=5)]
    assert not check(ops, Register()).valid


def test_cas_must_see_the_expected_value():
    ops = [op("write", 1, start=0, end=1), op("cas", [5, 6], start=2, end=3)]
    assert not check(ops, Register()).valid


def test_versioned_register_follows_the_services_versions():
    ops = [op("write", "a", result=7, start=0, end=1),
           op("cas", [7, "b"], result=9, start=2, end=3),
           op("read", result=["b", 9], start=4, end=5), op("delete", start=6, end=7),
           op("read", result=None, start=8, end=9)]
    assert check(ops, VersionedRegister()).valid
    bad = [*ops[:2], op("cas", [7, "c"], result=12, start=4, end=5)]  # version 7 is gone
    assert not check(bad, VersionedRegister()).valid
    wrong_version = [ops[0], op("read", result=["a", 8], start=2, end=3)]
    assert not check(wrong_version, VersionedRegister()).valid


def test_versioned_register_learns_an_indeterminate_writes_version_from_a_read():
    ops = [op("write", "a", start=0, end=INF, kind=OpType.INFO),
           op("read", result=["a", 5], start=2, end=3),
           op("cas", [5, "b"], result=6, start=4, end=5)]
    assert check(ops, VersionedRegister()).valid
    assert not check([*ops[:2], op("cas", [4, "b"], result=6, start=4, end=5)],
                     VersionedRegister()).valid


def test_keys_are_checked_separately():
    records = [
        Record(OpType.INVOKE, 0, "write", 0, "a", 1), Record(OpType.OK, 0, "write", 1, "a", 1),
        Record(OpType.INVOKE, 1, "read", 2, "b"), Record(OpType.OK, 1, "read", 3, "b", 1),
    ]
    verdicts = check_per_key(pair(records), Register)
    assert verdicts["a"].valid and not verdicts["b"].valid  # b was never written


# -- against brute force ------------------------------------------------------------------


def brute_force(ops: list[Operation]) -> bool:
    """Try every order of the operations that respects real time; info ops may be skipped."""
    ops = [o for o in ops if o.type is not OpType.FAIL
           and not (o.type is OpType.INFO and o.f == "read")]
    optional = [o for o in ops if o.type is OpType.INFO]
    required = [o for o in ops if o.type is OpType.OK]
    for k in range(len(optional) + 1):
        for chosen in itertools.combinations(optional, k):
            for order in itertools.permutations(required + list(chosen)):
                if _respects_real_time(order) and _runs(order):
                    return True
    return False


def _respects_real_time(order) -> bool:
    return all(not (b.end < a.start) for i, a in enumerate(order) for b in order[i + 1:])


def _runs(order) -> bool:
    model, state = Register(), None
    for o in order:
        ok, state = model.step(state, o)
        if not ok:
            return False
    return True


@st.composite
def histories(draw):
    n = draw(st.integers(1, 6))
    ops = []
    for i in range(n):
        start = draw(st.integers(0, 20))
        kind = draw(st.sampled_from([OpType.OK, OpType.OK, OpType.OK, OpType.INFO,
                                     OpType.FAIL]))
        end = INF if kind is OpType.INFO else start + draw(st.integers(0, 8))
        f = draw(st.sampled_from(["read", "write", "cas"]))
        value = (draw(st.integers(0, 2)) if f == "write"
                 else [draw(st.sampled_from([None, 0, 1])), draw(st.integers(0, 2))]
                 if f == "cas" else None)
        result = draw(st.sampled_from([None, 0, 1, 2])) if f == "read" else None
        ops.append(Operation(i, f, "k", value, result, kind, start, end, i))
    return ops


@settings(max_examples=400, deadline=None)
@given(histories())
def test_search_agrees_with_brute_force(ops):
    assert check(ops, Register()).valid == brute_force(ops)


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_histories_of_a_real_register_are_linearizable(data):
    """Run ops against a register at chosen instants inside their intervals: always valid."""
    n = data.draw(st.integers(1, 30))
    state, ops, points = None, [], []
    for i in range(n):
        start = data.draw(st.integers(0, 100))
        end = start + data.draw(st.integers(0, 30))
        points.append((data.draw(st.integers(start, end)), i, start, end))
    for _point, i, start, end in sorted(points):
        f = data.draw(st.sampled_from(["read", "write", "cas"]))
        if f == "write":
            value, result = data.draw(st.integers(0, 3)), None
            state = value
        elif f == "cas":
            value, result = [data.draw(st.integers(0, 3)), data.draw(st.integers(0, 3))], None
            if state != value[0]:
                continue  # a refused cas is a `fail`: it would be dropped anyway
            state = value[1]
        else:
            value, result = None, state
        ops.append(Operation(i, f, "k", value, result, OpType.OK, start, end, i))
    assert check(ops, Register()).valid
