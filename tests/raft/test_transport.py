"""The HTTP transport and the Raft endpoint on real sockets (no core involved): messages
arrive in order and batched, a dead peer costs dropped messages and an unreachable report,
and the endpoint refuses what it cannot decode."""

from __future__ import annotations

import asyncio
import socket

import aiohttp
import pytest
from aiohttp import web

from raft import codec
from raft.messages import Entry, Message, MessageType
from raft.server import raft_routes
from raft.transport import CONTENT_TYPE, RAFT_PATH, HttpTransport, source_address


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def start_endpoint(node_id: int, got: list[Message], **kw) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.add_routes(raft_routes(node_id, got.extend, **kw))
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"127.0.0.1:{port}"


def append(i: int, to: int = 2) -> Message:
    return Message(MessageType.APPEND, to=to, sender=1, term=1, index=i - 1,
                   entries=(Entry(1, i, data=b"x" * 10),))


async def wait_for(cond, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("stream", [True, False], ids=["websocket", "post"])
def test_messages_arrive_in_order_in_few_batches(stream: bool) -> None:
    async def main() -> None:
        got: list[Message] = []
        runner, addr = await start_endpoint(2, got)
        t = HttpTransport(1, {2: addr}, stream=stream)
        await t.start()
        try:
            sent = [append(i) for i in range(1, 501)]
            for m in sent:
                t.send([m])
            await wait_for(lambda: len(got) == 500)
            assert got == sent
            assert t.sent_batches < 500  # queued messages went out together
        finally:
            await t.close()
            await runner.cleanup()

    asyncio.run(main())


def test_dead_peer_is_reported_and_messages_dropped() -> None:
    async def main() -> None:
        unreachable: list[int] = []
        t = HttpTransport(1, {3: f"127.0.0.1:{free_port()}"}, on_unreachable=unreachable.append)
        await t.start()
        try:
            t.send([append(1, to=3), append(2, to=3)])
            t.send([append(3, to=9)])  # no address at all
            await wait_for(lambda: unreachable)
            assert unreachable[0] == 3
            assert t.dropped >= 3
        finally:
            await t.close()

    asyncio.run(main())


def test_a_refused_stream_frame_reconnects_for_the_next_batch() -> None:
    async def main() -> None:
        got: list[Message] = []
        runner, addr = await start_endpoint(2, got)
        t = HttpTransport(1, {2: addr, 5: addr})
        await t.start()
        try:
            t.send([append(1, to=5)])  # node 2 listens at 5's address: refused, closed
            await asyncio.sleep(0.2)
            t.send([append(2)])
            await wait_for(lambda: got)
            assert got == [append(2)]
        finally:
            await t.close()
            await runner.cleanup()

    asyncio.run(main())


@pytest.mark.parametrize(
    ("body", "ctype", "status", "fragment"),
    [
        (b"\x93\x01", CONTENT_TYPE, 400, "not valid msgpack"),
        (codec.encode_messages([append(1, to=5)]), CONTENT_TYPE, 400, "is for node 5"),
        (codec.encode_messages([append(1)]), "application/json", 415, "content type"),
        (b"\x00" * 5000, CONTENT_TYPE, 413, "over 4096"),
    ],
)
def test_endpoint_refuses_bad_bodies(body: bytes, ctype: str, status: int,
                                     fragment: str) -> None:
    async def main() -> None:
        got: list[Message] = []
        runner, addr = await start_endpoint(2, got, max_body=4096)
        try:
            async with aiohttp.ClientSession() as s, s.post(
                f"http://{addr}{RAFT_PATH}", data=body, headers={"Content-Type": ctype}
            ) as resp:
                assert resp.status == status
                assert fragment in await resp.text()
            assert got == []
        finally:
            await runner.cleanup()

    asyncio.run(main())


@pytest.mark.parametrize("address, source", [
    ("127.0.0.11:7000", ("127.0.0.11", 0)),
    ("127.0.0.1:7000", None),  # the default loopback: the OS picks, as before
    ("10.1.2.3:7000", None),
    ("raft-0.raft.svc:7000", None),
    ("[::1]:7000", None),
])
def test_source_address_only_pins_extra_loopback_addresses(address, source) -> None:
    assert source_address(address) == source


@pytest.mark.parametrize("stream", [True, False], ids=["websocket", "post"])
def test_a_node_on_its_own_loopback_address_sends_from_it(stream: bool) -> None:
    """Chaos runs cut links with firewall rules on two nodes' addresses: node 1 on
    127.0.0.11 must reach node 2 from 127.0.0.11, not from the default 127.0.0.1."""
    async def main() -> None:
        seen: list[str] = []

        @web.middleware
        async def remember(request, handler):
            seen.append(request.remote)
            return await handler(request)

        got: list[Message] = []
        app = web.Application(middlewares=[remember])
        app.add_routes(raft_routes(2, got.extend))
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.12", port).start()
        t = HttpTransport(1, {1: "127.0.0.11:1", 2: f"127.0.0.12:{port}"}, stream=stream)
        await t.start()
        try:
            t.send([append(1)])
            await wait_for(lambda: len(got) == 1)
            assert seen and set(seen) == {"127.0.0.11"}
        finally:
            await t.close()
            await runner.cleanup()

    asyncio.run(main())
