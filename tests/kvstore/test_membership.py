"""Membership on real sockets, several nodes in one process (Dynamo §4.8): join through a
seed, ring dissemination by gossip, failure detection, leave/remove by the claimant, the
ring persisted before it is acted on, and hostile bodies on every endpoint."""

from __future__ import annotations

import asyncio
import io
import json
import random
import socket
import time
from pathlib import Path

import aiohttp
import msgpack
import pytest
from aiohttp import web

from kvstore import claimant, gossip, membership_http, ring_file
from kvstore.errors import InvalidRing, MembershipError
from kvstore.gossip import GossipMessage, NodeState
from kvstore.membership import MAX_OUTSIDERS, RING_FILE, Membership, MembershipConfig
from kvstore.ring import Ring
from tests.waiting import async_wait_until

RING_SIZE = 32
CONFIG = MembershipConfig(interval_s=0.05, join_timeout_s=10.0)


def bind_listener(port: int | None = None) -> socket.socket:
    """A socket bound on 127.0.0.1: to `port`, or to a free port below the kernel's
    ephemeral range, so no outgoing connection of a busy machine takes it while a test
    restarts a node on it."""
    rng = random.Random()
    for _ in range(1000):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port or rng.randrange(20000, 32000)))
            return sock
        except OSError:
            sock.close()
            if port:
                raise
    raise OSError("no free port in 20000..32000")


class Node:
    """One Membership behind its own aiohttp server on 127.0.0.1."""

    def __init__(self, root: Path, port: int | None = None) -> None:
        self.sock = bind_listener(port)
        self.name = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.dir = root / self.name.replace(":", "_")
        self.m = Membership(self.name, self.dir, ring_size=RING_SIZE, config=CONFIG)
        self.runner: web.AppRunner | None = None

    async def start(self) -> Node:
        app = web.Application()
        app.add_routes(self.m.routes())
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.SockSite(self.runner, self.sock).start()
        await self.m.start()
        return self

    async def stop(self) -> None:
        await self.m.stop()
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


async def cluster(root: Path, n: int) -> list[Node]:
    nodes = [await Node(root).start() for _ in range(n)]
    for node in nodes[1:]:
        await node.m.join(nodes[0].name)
    await converge(nodes)
    return nodes


def same_ring(nodes: list[Node]) -> bool:
    rings = {node.m.ring for node in nodes}
    return (len(rings) == 1 and all(node.m.converged() for node in nodes)
            and set(nodes[0].m.ring.members) == {n.name for n in nodes})


async def converge(nodes: list[Node]) -> None:
    """Until `nodes` share one ring whose members are exactly they."""
    assert await async_wait_until(lambda: same_ring(nodes), timeout=30), [
        n.m.ring for n in nodes]


async def stop_all(nodes: list[Node]) -> None:
    for node in nodes:
        await node.stop()


def run(coro) -> None:
    asyncio.run(coro)


def test_4_8_a_new_node_creates_a_one_member_ring_and_persists_it(tmp_path: Path) -> None:
    async def main() -> None:
        node = await Node(tmp_path).start()
        try:
            assert node.m.ring.members == (node.name,)
            assert node.m.ring.version == 1
            on_disk = Ring.from_bytes((node.dir / RING_FILE).read_bytes())
            assert on_disk == node.m.ring
            assert node.m.claimant() == node.name
        finally:
            await node.stop()
    run(main())


def test_4_8_join_through_a_seed_spreads_one_ring_to_everyone(tmp_path: Path) -> None:
    async def main() -> None:
        nodes = await cluster(tmp_path, 4)
        try:
            ring = nodes[0].m.ring
            assert set(ring.members) == {n.name for n in nodes}
            assert ring.version == 4  # v1 (seed alone) + three joins by the claimant
            ring.check()
            for node in nodes:
                assert Ring.from_bytes((node.dir / RING_FILE).read_bytes()) == ring
                assert all(node.m.is_alive(o.name) for o in nodes)
            # every node agrees on one claimant: the lowest name
            assert {n.m.claimant() for n in nodes} == {min(n.name for n in nodes)}
        finally:
            await stop_all(nodes)
    run(main())


def test_4_8_join_is_idempotent_and_a_joined_node_restarts_into_its_ring(
        tmp_path: Path) -> None:
    async def main() -> None:
        nodes = await cluster(tmp_path, 2)
        try:
            version = nodes[0].m.ring.version
            await nodes[1].m.join(nodes[0].name)  # --join again after a restart: no change
            assert nodes[1].m.ring.version == version
            port = int(nodes[1].name.rsplit(":", 1)[1])
            await nodes[1].stop()
            nodes[1] = await Node(tmp_path, port).start()  # same name, same folder
            assert nodes[1].m.ring == nodes[0].m.ring
            await converge(nodes)
        finally:
            await stop_all(nodes)
    run(main())


def test_4_8_failure_detection_marks_a_silent_node_down_and_up_again(tmp_path: Path) -> None:
    async def main() -> None:
        nodes = await cluster(tmp_path, 3)
        try:
            victim = nodes[2]
            port = int(victim.name.rsplit(":", 1)[1])
            await victim.stop()
            others = nodes[:2]
            assert await async_wait_until(
                lambda: all(not o.m.is_alive(victim.name) for o in others), timeout=30)
            assert all(victim.name not in o.m.alive() for o in others)
            status = others[0].m.status()["members"][victim.name]
            assert status["alive"] is False and status["phi"] > CONFIG.phi_threshold
            nodes[2] = await Node(tmp_path, port).start()
            assert await async_wait_until(
                lambda: all(o.m.is_alive(victim.name) for o in others), timeout=30)
        finally:
            await stop_all(nodes)
    run(main())


def test_4_8_leave_and_remove_go_through_the_claimant(tmp_path: Path) -> None:
    async def main() -> None:
        nodes = await cluster(tmp_path, 4)
        by_name = sorted(nodes, key=lambda n: n.name)
        try:
            leaver = by_name[-1]  # not the claimant: its request is forwarded
            await leaver.m.leave()
            assert leaver.name not in leaver.m.ring.members
            rest = [n for n in nodes if n is not leaver]
            await converge(rest)
            assert set(rest[0].m.ring.members) == {n.name for n in rest}
            # a live node cannot be removed
            victim = by_name[2]
            with pytest.raises(MembershipError, match="alive"):
                await by_name[1].m.remove(victim.name)
            await victim.stop()
            rest = [n for n in rest if n is not victim]
            assert await async_wait_until(
                lambda: all(not n.m.is_alive(victim.name) for n in rest), timeout=30)
            await by_name[1].m.remove(victim.name)
            await converge(rest)
            assert set(rest[0].m.ring.members) == {n.name for n in rest}
            rest[0].m.ring.check()
            with pytest.raises(MembershipError, match="not a member"):
                await rest[0].m.remove(victim.name)
            assert leaver.m.status()["status"] == "left"
            await leaver.m.join(rest[0].name)  # a node that left may join again
            await converge([*rest, leaver])
            assert leaver.name in rest[0].m.ring.members
            assert leaver.m.status()["status"] == "up"
        finally:
            await stop_all(nodes)
    run(main())


# ---------------------------------------------------------------- HTTP endpoints


async def post(session: aiohttp.ClientSession, node: Node, path: str, body: bytes,
               ctype: str = "application/json") -> tuple[int, bytes]:
    async with session.post(f"http://{node.name}{path}", data=io.BytesIO(body),
                            headers={"Content-Type": ctype}) as resp:
        return resp.status, await resp.read()


def test_admin_endpoints_join_members_remove(tmp_path: Path) -> None:
    async def main() -> None:
        seed = await Node(tmp_path).start()
        joiner = await Node(tmp_path).start()
        try:
            async with aiohttp.ClientSession() as s:
                status, body = await post(s, joiner, "/admin/v1/join",
                                          json.dumps({"seed": seed.name}).encode())
                assert status == 200, body
                assert set(json.loads(body)["members"]) == {seed.name, joiner.name}
                await converge([seed, joiner])
                async with s.get(f"http://{seed.name}/admin/v1/members") as resp:
                    doc = await resp.json()
                assert doc["converged"] is True and doc["members"][joiner.name]["member"]
                status, body = await post(s, seed, "/admin/v1/remove",
                                          json.dumps({"node": joiner.name}).encode())
                assert status == 409 and json.loads(body)["error"] == "membership"
                assert seed.m.ring.members == joiner.m.ring.members  # nothing changed
                # the claimant itself leaves: its later requests go to the next claimant
                third = await Node(tmp_path).start()
                await third.m.join(seed.name)
                nodes = [seed, joiner, third]
                await converge(nodes)
                first = min(nodes, key=lambda n: n.name)
                assert first.m.claimant() == first.name
                status, body = await post(s, first, "/admin/v1/leave", b"")
                assert status == 202, body
                assert await async_wait_until(
                    lambda: first.m.status()["status"] == "left", timeout=30)
                rest = [n for n in nodes if n is not first]
                await converge(rest)
                assert set(rest[0].m.ring.members) == {n.name for n in rest}
                assert await async_wait_until(first.m._leave_task.done, timeout=30)
                status, body = await post(s, first, "/admin/v1/leave", b"{}")
                assert status == 409 and b"not a ring member" in body
        finally:
            await stop_all([seed, joiner, *([third] if "third" in locals() else [])])
    run(main())


HOSTILE_GOSSIP = [
    b"", b"\xc1", b"not msgpack at all", msgpack.packb([1, 2, 3]),
    msgpack.packb({"from": "a:1", "states": {}}),
    msgpack.packb({"from": "", "states": {}, "ring": None}),
    msgpack.packb({"from": "a:1", "states": {"b:2": [1, 2]}, "ring": None}),
    msgpack.packb({"from": "a:1", "states": {"b:2": [1, 2, "zombie", 0, 0]}, "ring": None}),
    msgpack.packb({"from": "a:1", "states": {"b:2": [-1, 2, "up", 0, 0]}, "ring": None}),
    msgpack.packb({"from": "a:1", "states": {}, "ring": b"\x00garbage"}),
    msgpack.packb({"from": "a:1", "states": {}, "ring": Ring.new(64).join("x:1").to_bytes()}),
    msgpack.packb({"from": "a:1", "states": {}, "ring": "text"}),
]
HOSTILE_CHANGE = [
    b"", b"\xc1", msgpack.packb({"op": "join"}),
    msgpack.packb({"op": "explode", "node": "a:1", "hops": 0}),
    msgpack.packb({"op": "join", "node": "", "hops": 0}),
    msgpack.packb({"op": "join", "node": "a:1", "hops": -1}),
    msgpack.packb({"op": "join", "node": 7, "hops": 0}),
    msgpack.packb({"op": "join", "node": "a:1", "hops": 0, "extra": 1}),
    msgpack.packb({"op": "join", "node": "a:1", "hops": 1, "ring": 5}),
    msgpack.packb({"op": "join", "node": "a:1", "hops": 1, "ring": b"\x00not a ring"}),
]
HOSTILE_ADMIN = [
    ("/admin/v1/join", b"{"), ("/admin/v1/join", b"[]"), ("/admin/v1/join", b"{}"),
    ("/admin/v1/join", b'{"seed": 5}'), ("/admin/v1/join", b"x" * 10000),
    ("/admin/v1/remove", b'{"node": "nocolon"}'), ("/admin/v1/leave", b'{"now": 1}'),
]


def test_hostile_bodies_get_400_and_change_nothing(tmp_path: Path) -> None:
    async def main() -> None:
        nodes = await cluster(tmp_path, 2)
        target = nodes[0]
        ring_before = target.m.ring
        try:
            async with aiohttp.ClientSession() as s:
                for body in HOSTILE_GOSSIP:
                    status, answer = await post(s, target, "/internal/v1/gossip", body,
                                                "application/x-msgpack")
                    assert status == 400, (body, answer)
                    assert json.loads(answer)["error"] == "bad_request"
                too_big = b"\x00" * (gossip.MAX_MESSAGE_BYTES + 1)
                status, answer = await post(s, target, "/internal/v1/gossip", too_big,
                                            "application/x-msgpack")
                assert status == 400 and b"limit" in answer
                # a valid message over 1 MiB goes out (the membership client) and arrives
                # whole (read in chunks); states of non-members are kept only up to a bound
                many = {f"10.0.{i // 250}.{i % 250}:{7000 + i}".ljust(255, "x"):
                        NodeState(1, 1) for i in range(4090)}
                big = GossipMessage("10.9.9.9:1", many).encode()
                assert len(big) > membership_http.LARGE_BODY
                answer = await membership_http.post(s, target.name, "/internal/v1/gossip",
                                                    big, 30.0)
                assert gossip.decode_message(answer).sender == target.name
                shown = set(target.m.status()["members"])
                assert len(shown & set(many)) == MAX_OUTSIDERS
                assert set(target.m.states()) == {n.name for n in nodes}
                for body in HOSTILE_CHANGE:
                    status, answer = await post(s, target, "/internal/v1/gossip/change", body,
                                                "application/x-msgpack")
                    assert status == 400, (body, answer)
                for path, body in HOSTILE_ADMIN:
                    status, answer = await post(s, target, path, body)
                    assert status == 400, (path, body, answer)
                    assert json.loads(answer)["message"]
            assert target.m.ring == ring_before
            assert (target.dir / RING_FILE).read_bytes() == ring_before.to_bytes()
            await converge(nodes)
        finally:
            await stop_all(nodes)
    run(main())


# ---------------------------------------------------------------- the claimant (pure)


def test_4_8_the_claimant_is_the_lowest_named_live_member() -> None:
    ring = Ring.new(16).join("b:2").join("a:1").join("c:3")
    assert claimant.claimant(ring, lambda n: True) == "a:1"
    assert claimant.claimant(ring, lambda n: n != "a:1") == "b:2"
    assert claimant.claimant(ring, lambda n: False) is None
    assert claimant.claimant(Ring.new(16), lambda n: True) is None


def test_4_8_changes_are_idempotent_and_refusals_say_why() -> None:
    ring = Ring.new(16).join("a:1").join("b:2")
    joined = claimant.next_ring(ring, "join", "c:3", node_alive=True)
    assert joined.version == ring.version + 1 and "c:3" in joined.members
    assert claimant.next_ring(joined, "join", "c:3", node_alive=True) is joined
    left = claimant.next_ring(joined, "leave", "c:3", node_alive=True)
    assert "c:3" not in left.members
    assert claimant.next_ring(left, "leave", "c:3", node_alive=True) is left
    with pytest.raises(MembershipError, match="alive"):
        claimant.next_ring(joined, "remove", "c:3", node_alive=True)
    removed = claimant.next_ring(joined, "remove", "c:3", node_alive=False)
    assert removed.members == ring.members
    with pytest.raises(MembershipError, match="not a member"):
        claimant.next_ring(ring, "remove", "z:9", node_alive=False)
    alone = Ring.new(16).join("a:1")
    with pytest.raises(MembershipError, match="last member"):
        claimant.next_ring(alone, "leave", "a:1", node_alive=True)
    with pytest.raises(MembershipError, match="unknown operation"):
        claimant.next_ring(ring, "promote", "a:1", node_alive=True)
    with pytest.raises(MembershipError):
        claimant.next_ring(ring, "join", "", node_alive=True)  # not a node name


# ---------------------------------------------------------------- the ring file


def test_a_damaged_ring_file_stops_the_node_instead_of_starting_on_a_guess(
        tmp_path: Path) -> None:
    async def main() -> None:
        folder = tmp_path / "n"
        folder.mkdir()
        good = Ring.new(RING_SIZE).join("127.0.0.1:1").to_bytes()
        for damaged in (b"", b"\x00" * 10, good[:-3], good[:5] + b"\xff" + good[6:]):
            (folder / RING_FILE).write_bytes(damaged)
            m = Membership("127.0.0.1:1", folder, ring_size=RING_SIZE, config=CONFIG)
            with pytest.raises(InvalidRing):
                await m.start()
            await m.stop()
            assert (folder / RING_FILE).read_bytes() == damaged  # left for the operator
    run(main())


def test_a_leftover_temp_file_is_ignored_and_writes_replace_atomically(tmp_path: Path) -> None:
    folder = tmp_path / "n"
    folder.mkdir()
    ring = Ring.new(RING_SIZE).join("127.0.0.1:1")
    (folder / (RING_FILE + ".tmp")).write_bytes(b"half a ring")  # a crash mid-write
    ring_file.write_atomically(folder / RING_FILE, ring.to_bytes())
    assert ring_file.read_ring(folder / RING_FILE) == ring
    assert not (folder / (RING_FILE + ".tmp")).exists()
    assert ring_file.read_ring(folder / "absent") is None
    ring_file.remove_durably(folder / RING_FILE)
    ring_file.remove_durably(folder / RING_FILE)  # removing twice is fine
    assert ring_file.read_ring(folder / RING_FILE) is None


def test_4_8_a_stall_of_our_own_loop_convicts_nobody(tmp_path: Path) -> None:
    """Cassandra's local-pause rule: when our own round runs late, the silence we saw
    meanwhile is forgiven, not counted against the others."""
    async def main() -> None:
        nodes = await cluster(tmp_path, 2)
        a, b = nodes
        try:
            await b.m.gossiper.stop()  # b's heartbeat stops rising from here on
            skew = {"s": 0.0}
            a.m.gossiper._clock = lambda: time.monotonic() + skew["s"]
            skew["s"] = 5.0  # a's next round is 5 s late, as after a stalled event loop
            await asyncio.sleep(CONFIG.interval_s * 3)
            assert a.m.is_alive(b.name)
            # without a late round, the same silence is convicted
            assert await async_wait_until(lambda: not a.m.is_alive(b.name), timeout=30)
        finally:
            await stop_all(nodes)
    run(main())


def test_4_8_a_lone_node_with_a_higher_ring_version_still_joins(tmp_path: Path) -> None:
    async def main() -> None:
        seed = await Node(tmp_path).start()
        lone = Node(tmp_path)
        lone.dir.mkdir(parents=True)
        ring = Ring.new(RING_SIZE).join(lone.name)
        for other in ("127.0.0.1:1", "127.0.0.1:2"):
            ring = ring.join(other).leave(other)  # a cluster whose others all left: v5
        (lone.dir / RING_FILE).write_bytes(ring.to_bytes())
        await lone.start()
        try:
            assert lone.m.ring.version == 5 and lone.m.ring.members == (lone.name,)
            await lone.m.join(seed.name)
            assert lone.m.ring.version == 2 == seed.m.ring.version
            await converge([seed, lone])
        finally:
            await stop_all([seed, lone])
    run(main())


def port_between(lo: int, hi: int) -> int:
    """A free port in [lo, hi): names compare as strings, so ports of one length order
    the nodes' names the way a test needs."""
    sock = None
    for port in random.sample(range(lo, hi), 200):
        try:
            sock = bind_listener(port)
        except OSError:
            continue
        sock.close()
        return port
    raise OSError(f"no free port in {lo}..{hi}")


def test_4_8_a_change_forwarded_to_a_claimant_that_has_not_heard_of_its_ring_does_not_fork_it(
        tmp_path: Path) -> None:
    """The claimant is the lowest-named live member, so a node that joins with a name below
    the seed's is the claimant of the very ring that made it a member, before gossip has
    brought it that ring. A join forwarded to it at once must not be decided on its old
    one-member ring: that would make a second ring of the same version, and whichever won
    would drop members of the other."""
    async def main() -> None:
        seed = await Node(tmp_path, port_between(23000, 26000)).start()
        low = await Node(tmp_path, port_between(20000, 23000)).start()
        high = await Node(tmp_path, port_between(26000, 29000)).start()
        nodes = [seed, low, high]
        try:
            await seed.m.change("join", low.name)
            assert seed.m.claimant() == low.name and low.m.ring.members == (low.name,)
            ring = await seed.m.change("join", high.name)  # decided by `low`
            assert set(ring.members) == {n.name for n in nodes}
            await converge(nodes)
        finally:
            await stop_all(nodes)
    run(main())
