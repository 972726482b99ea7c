"""Transfer planning (Dynamo §4.9: "when a node is added, the nodes that no longer own a
key range transfer it to the new node"), pure: which partitions a node pushes, to whom,
and which it drops, for joins, leaves and removes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from kvstore.ring import Ring
from kvstore.transfer import Push, plan

Q, N = 32, 3
NODES = [f"n{i}:1" for i in range(6)]


def ring_of(count: int) -> Ring:
    r = Ring.new(Q)
    for n in NODES[:count]:
        r = r.join(n)
    return r


def holders(ring: Ring, p: int) -> tuple[str, ...]:
    out = ring.preference_list_for(p, N)
    assert isinstance(out, tuple)
    return out


def test_4_9_after_a_join_old_holders_push_to_the_newcomer_and_leavers_drop() -> None:
    old = ring_of(4)
    new = old.join(NODES[4])
    for me in NODES[:4]:
        held = [p for p in range(Q) if me in holders(old, p)]
        for push in plan(old, new, me, held, N):
            if me in holders(new, push.partition):
                assert not push.drop and push.targets == (NODES[4],)
            else:
                assert push.drop and push.targets == holders(new, push.partition)
        pushed = {push.partition for push in plan(old, new, me, held, N)}
        assert pushed == {p for p in held if holders(old, p) != holders(new, p)}


def test_4_9_after_a_leave_every_partition_of_the_leaver_goes_to_all_new_holders() -> None:
    old = ring_of(4)
    leaver = NODES[1]
    new = old.leave(leaver)
    held = [p for p in range(Q) if leaver in holders(old, p)]
    pushes = plan(old, new, leaver, held, N)
    assert [p.partition for p in pushes] == sorted(held)
    assert all(p.drop and p.targets == holders(new, p.partition) for p in pushes)


def test_4_9_after_a_remove_survivors_rebuild_the_missing_copy() -> None:
    old = ring_of(5)
    dead = NODES[2]
    new = old.remove(dead)
    for p in range(Q):
        if dead not in holders(old, p):
            continue
        newcomers = set(holders(new, p)) - set(holders(old, p))
        pushers = {me for me in holders(old, p) if me != dead
                   for push in plan(old, new, me, [p], N) if set(push.targets) & newcomers}
        assert pushers == set(holders(old, p)) - {dead}  # every surviving copy is pushed


def test_without_a_base_only_partitions_held_but_not_owned_move() -> None:
    ring = ring_of(4)
    me = NODES[0]
    held = list(range(Q))  # say a stale coordinator wrote everywhere
    pushes = plan(None, ring, me, held, N)
    assert {p.partition for p in pushes} == {p for p in held if me not in holders(ring, p)}
    assert all(p.drop for p in pushes)


def test_a_node_holding_nothing_owes_nothing() -> None:
    old = ring_of(3)
    assert plan(old, old.join(NODES[3]), NODES[0], [], N) == []
    assert plan(old, old, NODES[0], range(Q), N) == []


def test_a_joiner_pushes_what_it_held_alone_to_its_new_co_holders() -> None:
    alone = Ring.new(Q).join(NODES[5])
    cluster = ring_of(3).join(NODES[5])
    pushes = plan(alone, cluster, NODES[5], range(Q), N)
    for push in pushes:
        want = tuple(t for t in holders(cluster, push.partition) if t != NODES[5])
        assert push.targets == want or push == Push(push.partition,
                                                     holders(cluster, push.partition), True)


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 5), st.data())
def test_every_new_holder_gets_each_partition_from_a_surviving_old_holder(count, data) -> None:
    old = ring_of(count)
    op = data.draw(st.sampled_from(["join", "leave"]) if count > 2 else st.just("join"))
    node = NODES[count] if op == "join" else data.draw(st.sampled_from(NODES[:count]))
    new = old.join(node) if op == "join" else old.leave(node)
    for p in range(Q):
        got = set(holders(old, p))
        for me in holders(old, p):  # every old holder runs its plan (the leaver included)
            for push in plan(old, new, me, [p], N):
                got |= set(push.targets)
        assert set(holders(new, p)) <= got
