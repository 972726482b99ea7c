"""The coordinator over real sockets: Dynamo §4.5 (quorums), §4.6 (sloppy quorum, hints),
§4.4 (siblings from concurrent writes), §5 (read repair), and the internal API's refusals.

Each test runs a few nodes in this process (a ReplicaStore and HintStore in tmp_path, an
aiohttp server on a free 127.0.0.1 port, Peers, a Coordinator) over a fixed ring; the
test decides which nodes the failure detector calls alive and which servers run.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import socket
import time

import aiohttp
import msgpack
import pytest
from aiohttp import web

from kvstore import vclock, wire
from kvstore.coordinator import Coordinator
from kvstore.errors import InvalidRequest, QuorumFailed, SequencerRejected
from kvstore.hints import HintStore
from kvstore.peers import Peers
from kvstore.replica import ReplicaStore
from kvstore.replica_api import ReplicaApi
from kvstore.ring import Ring

RING_SIZE = 16


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalNode:
    def __init__(self, name: str, folder, cluster: LocalCluster) -> None:
        self.name, self.folder, self.cluster = name, folder, cluster
        self.runner: web.AppRunner | None = None

    async def open(self) -> None:
        self.replica = await ReplicaStore.open(self.folder / "replicas", node=self.name,
                                               ring_size=RING_SIZE, sync="none")
        self.hints = await HintStore.open(self.folder / "hints", sync="none")
        self.peers = Peers(self.name)
        await self.peers.start()
        self.coordinator = Coordinator(
            self.name, replica=self.replica, hints=self.hints, peers=self.peers,
            ring=lambda: self.cluster.ring, is_alive=lambda n: n not in self.cluster.down,
            n=3, r=2, w=2, timeout_s=3.0, fence=self.cluster.fence)
        self.api = ReplicaApi(replica=self.replica, hints=self.hints,
                              coordinator=self.coordinator)
        await self.serve()

    async def serve(self) -> None:
        app = web.Application()
        app.add_routes(self.api.routes())
        self.runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self.runner.setup()
        host, port = self.name.split(":")
        await web.TCPSite(self.runner, host, int(port)).start()

    async def stop_serving(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def close(self) -> None:
        await self.stop_serving()
        await self.coordinator.close()
        await self.peers.close()
        await self.replica.close()
        await self.hints.close()


class LocalCluster:
    def __init__(self, tmp_path, count: int, fence=None) -> None:
        self.names = [f"127.0.0.1:{free_port()}" for _ in range(count)]
        ring = Ring.new(RING_SIZE)
        for name in self.names:
            ring = ring.join(name)
        self.ring, self.down, self.fence = ring, set(), fence
        self.nodes = {n: LocalNode(n, tmp_path / f"n{i}", self) for i, n in
                      enumerate(self.names)}

    def __getitem__(self, name: str) -> LocalNode:
        return self.nodes[name]

    def primaries(self, key: bytes) -> tuple[str, ...]:
        return self.ring.preference_list(key, 3)

    def outsider(self, key: bytes) -> str:
        return next(n for n in self.names if n not in self.primaries(key))


@contextlib.asynccontextmanager
async def cluster(tmp_path, count: int = 3, fence=None):
    c = LocalCluster(tmp_path, count, fence)
    try:
        for node in c.nodes.values():
            await node.open()
        yield c
    finally:
        for node in c.nodes.values():
            with contextlib.suppress(Exception):
                await node.close()


def run(coro):
    return asyncio.run(coro)


def test_a_put_on_one_node_is_read_on_another(tmp_path) -> None:
    """§4.5: a write acked by W replicas is seen by a read of R (R + W > N)."""
    async def main():
        async with cluster(tmp_path) as c:
            a, b = c.names[0], c.names[1]
            put = await c[a].coordinator.put(b"k", b"v1")
            got = await c[b].coordinator.get(b"k")
            assert got.state.values == [b"v1"] and got.context == put.context
            await c[b].coordinator.put(b"k", b"v2", context=got.context)
            got = await c[a].coordinator.get(b"k", r=3)
            assert got.state.values == [b"v2"]
            big = bytes(range(256)) * 4096  # 1 MiB: the bodies between nodes are larger
            await c[c.names[2]].coordinator.put(b"big", big, w=3)
            assert (await c[a].coordinator.get(b"big", r=3)).state.values == [big]
    run(main())


def test_a_non_replica_forwards_the_write_to_a_primary(tmp_path) -> None:
    """DVV: the coordinator of a write is a replica; others forward (internal coordinate)."""
    async def main():
        async with cluster(tmp_path, 4) as c:
            key = b"forwarded"
            out = c.outsider(key)
            await c[out].coordinator.put(key, b"v", w=3)
            assert c[out].coordinator.counts["forwarded"] == 1
            assert (await c[out].replica.get(key)).siblings == ()
            for p in c.primaries(key):
                assert (await c[p].replica.get(key)).values == [b"v"]
            dots = {s.dot.node for s in (await c[c.primaries(key)[0]].replica.get(key)).siblings}
            assert dots == {c.primaries(key)[0]}
    run(main())


def test_a_forwarded_write_to_a_non_replica_is_not_applied(tmp_path) -> None:
    async def main():
        async with cluster(tmp_path, 4) as c:
            key = b"k"
            out = c.outsider(key)
            req = wire.CoordinateRequest("put", key, b"v")
            with pytest.raises(wire.NotApplied):
                await c[c.names[0]].peers.coordinate(out, req, 2.0)
            assert (await c[out].replica.get(key)).siblings == ()
    run(main())


def test_sloppy_quorum_hints_for_a_primary_known_down(tmp_path) -> None:
    """§4.6: a write for a down owner goes to the next healthy node with a durable hint."""
    async def main():
        async with cluster(tmp_path, 4) as c:
            key = b"hinted"
            p = c.primaries(key)
            fallback = c.outsider(key)
            c.down.add(p[2])
            await c[p[2]].stop_serving()
            await c[p[0]].coordinator.put(key, b"v", w=3)
            assert c[fallback].hints.count(p[2]) == 1
            assert (await c[fallback].hints.get(key)).values == [b"v"]
            assert (await c[fallback].replica.get(key)).siblings == ()
    run(main())


def test_a_primary_failing_mid_request_is_replaced_by_a_spare(tmp_path) -> None:
    """§4.6: the failure detector has not noticed yet; the refused send goes to a spare."""
    async def main():
        async with cluster(tmp_path, 4) as c:
            key = b"late"
            p = c.primaries(key)
            spare = c.outsider(key)
            await c[p[1]].stop_serving()
            await c[p[0]].coordinator.put(key, b"v", w=3)
            assert c[spare].hints.count(p[1]) == 1
    run(main())


def test_a_read_asks_the_next_node_for_a_primary_failing_mid_request(tmp_path) -> None:
    """§4.6 for reads: the spare holding the failed primary's hint answers in its place;
    read repair never writes into a spare's replica store."""
    async def main():
        async with cluster(tmp_path, 4) as c:
            key = b"late-read"
            p = c.primaries(key)
            spare = c.outsider(key)
            first = await c[p[0]].coordinator.put(key, b"v1", w=3)
            await c[p[1]].stop_serving()
            await c[p[0]].coordinator.put(key, b"v2", context=first.context, w=3)
            got = await c[p[2]].coordinator.get(key, r=3)
            assert got.state.values == [b"v2"]
            co = c[p[2]].coordinator  # background repair done: it must not touch the spare
            assert await eventually(async_true(lambda: co.stats()["background"] == 0))
            assert (await c[spare].replica.get(key)).siblings == ()
            assert c[spare].hints.count(p[1]) == 1
    run(main())


def test_a_write_that_cannot_reach_w_is_indeterminate(tmp_path) -> None:
    """§4.5 with the DESIGN's rule: W not reached says the write may have been applied."""
    async def main():
        async with cluster(tmp_path, 3) as c:
            key = b"k"
            p = c.primaries(key)
            await c[p[1]].stop_serving()
            await c[p[2]].stop_serving()
            with pytest.raises(QuorumFailed) as info:
                await c[p[0]].coordinator.put(key, b"v", w=2)
            assert info.value.indeterminate and info.value.got == 1
            assert (await c[p[0]].replica.get(key)).values == [b"v"]  # it was applied here
            c.down.update(p)
            with pytest.raises(QuorumFailed) as info:
                await c[p[0]].coordinator.get(key)
            assert not info.value.indeterminate
    run(main())


def test_a_silent_replica_makes_the_deadline_answer(tmp_path) -> None:
    """A peer that accepts connections and never answers: QuorumFailed at the deadline."""
    async def main():
        async with cluster(tmp_path, 3) as c:
            key = b"k"
            p = c.primaries(key)
            await c[p[1]].stop_serving()
            await c[p[2]].stop_serving()
            host, port = p[1].split(":")
            held: list[asyncio.StreamWriter] = []

            async def silent(reader, writer) -> None:
                held.append(writer)  # read nothing, answer nothing

            hang = await asyncio.start_server(silent, host, int(port))
            async with hang:
                with pytest.raises(QuorumFailed) as info:
                    await c[p[0]].coordinator.put(key, b"v", w=3, timeout_s=0.3)
                assert info.value.indeterminate
                for writer in held:
                    writer.close()
                    await writer.wait_closed()
    run(main())


def test_no_primary_up_fails_without_applying(tmp_path) -> None:
    async def main():
        async with cluster(tmp_path, 4) as c:
            key = b"k"
            out = c.outsider(key)
            c.down.update(c.primaries(key))
            with pytest.raises(QuorumFailed) as info:
                await c[out].coordinator.put(key, b"v")
            assert not info.value.indeterminate
            for node in c.nodes.values():
                assert (await node.replica.get(key)).siblings == ()
    run(main())


def test_concurrent_writes_become_siblings_and_the_merged_context_resolves_them(
        tmp_path) -> None:
    """§4.4: writes with the same context are concurrent; a write with the read's context
    replaces every sibling it saw."""
    async def main():
        async with cluster(tmp_path) as c:
            a, b = c.names[0], c.names[1]
            base = await c[a].coordinator.put(b"k", b"base")
            await asyncio.gather(c[a].coordinator.put(b"k", b"x", context=base.context, w=3),
                                 c[b].coordinator.put(b"k", b"y", context=base.context, w=3))
            got = await c[b].coordinator.get(b"k", r=3)
            assert sorted(got.state.values) == [b"x", b"y"]
            await c[a].coordinator.put(b"k", b"xy", context=got.context, w=3)
            got = await c[c.names[2]].coordinator.get(b"k", r=3)
            assert got.state.values == [b"xy"]
    run(main())


def test_read_repair_brings_a_stale_replica_up_to_date(tmp_path) -> None:
    """§5: a replica that answered an older version is sent the merged state."""
    async def main():
        async with cluster(tmp_path) as c:
            key = b"k"
            p = c.primaries(key)
            await c[p[0]].coordinator.put(key, b"old", w=3)
            old = await c[p[2]].replica.get(key)
            new = await c[p[0]].replica.coordinate(key, old.clock, b"new", deleted=False,
                                                   timestamp=9)
            await c[p[1]].replica.merge(key, new)  # p[2] missed it
            got = await c[p[2]].coordinator.get(key, r=3)
            assert got.state.values == [b"new"]

            async def repaired() -> bool:
                return (await c[p[2]].replica.get(key)).values == [b"new"]
            assert await eventually(repaired)
            assert c[p[2]].coordinator.counts["read_repairs"] == 1
    run(main())


async def eventually(check, timeout: float = 30.0) -> bool:
    """Poll an async predicate until it holds or `timeout` seconds pass (monotonic)."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() >= deadline:
            return bool(await check())
        await asyncio.sleep(0.02)
    return True


def async_true(predicate):
    async def check() -> bool:
        return bool(predicate())
    return check


def test_sequencers_need_a_lock_service_and_a_current_token(tmp_path) -> None:
    async def reject(token: str) -> None:
        if token != "current":
            raise SequencerRejected("generation 3 is behind 4")

    async def main():
        async with cluster(tmp_path / "a") as c:
            with pytest.raises(InvalidRequest, match="no lock service"):
                await c[c.names[0]].coordinator.put(b"k", b"v", sequencer="tok")
        async with cluster(tmp_path / "b", fence=reject) as c:
            n = c[c.names[0]]
            with pytest.raises(SequencerRejected):
                await n.coordinator.put(b"k", b"v", sequencer="old")
            for node in c.nodes.values():
                assert (await node.replica.get(b"k")).siblings == ()
            await n.coordinator.put(b"k", b"v", sequencer="current")
            assert (await n.coordinator.get(b"k")).state.values == [b"v"]
    run(main())


HOSTILE = [("get", b"\xc1"), ("merge", msgpack.packb({"key": b"k", "state": b"\x01zz"})),
           ("merge_many", msgpack.packb({"items": [[b"k", 5]]})),
           ("hint", msgpack.packb({"owner": "", "key": b"k", "state": b""})),
           ("coordinate", msgpack.packb({"op": "put", "key": b"k", "value": b"v", "w": 99})),
           ("coordinate", msgpack.packb({"op": "put", "key": b"k", "value": b"v",
                                         "context": b"!!"}))]


def test_hostile_internal_bodies_get_400_and_change_nothing(tmp_path) -> None:
    async def main():
        async with cluster(tmp_path) as c:
            node = c.names[0]
            async with aiohttp.ClientSession() as http:
                for op, body in HOSTILE:
                    async with http.post(f"http://{node}/internal/v1/{op}", data=body) as resp:
                        assert resp.status == 400, (op, resp.status)
                        err = msgpack.unpackb(await resp.read())
                        assert err["error"] in ("wire", "invalid_request", "invalid_context")
                        assert err["message"]
                async with http.get(f"http://{node}/internal/v1/get") as resp:
                    assert resp.status == 405
                big = io.BytesIO(b"\x00" * (wire.MAX_BODY_BYTES + 1))
                async with http.post(f"http://{node}/internal/v1/get", data=big) as resp:
                    assert resp.status == 413
            for n in c.nodes.values():
                assert n.replica.stats()["coordinates"] == 0
                assert n.replica.partitions() == set() and n.hints.count() == 0
            st = await c[c.names[1]].peers.status(node, 2.0)
            assert st["node"] == node and st["hints"] == 0
    run(main())


def test_timestamps_of_vclock_updates_increase(tmp_path) -> None:
    async def main():
        async with cluster(tmp_path) as c:
            co = c[c.names[0]].coordinator
            stamps = [co._timestamp() for _ in range(100)]
            assert stamps == sorted(set(stamps))
            assert vclock.context(vclock.SiblingSet()) == (await co.get(b"absent")).context
    run(main())
