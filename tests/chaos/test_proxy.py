"""The link proxy on real sockets: pass, hold while blocked (then deliver), delay."""

from __future__ import annotations

import asyncio
import time

import pytest

from chaos.proxy import Links, Proxy, Rule

A, B, C = "127.0.0.11", "127.0.0.12", "127.0.0.13"


async def _with_proxy(body):
    handlers = set()

    async def echo(reader, writer):
        handlers.add(asyncio.current_task())
        try:
            while data := await reader.read(1024):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()
            await writer.wait_closed()

    server = await asyncio.start_server(echo, B, 0)
    links = Links()
    proxy = Proxy((B, 0), (B, server.sockets[0].getsockname()[1]), links)
    await proxy.start()
    try:
        await body(links, proxy.public[1])
    finally:
        await proxy.close()
        server.close()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()


async def _client(src, port):
    return await asyncio.open_connection(B, port, local_addr=(src, 0))


def test_traffic_passes_then_is_held_while_blocked_and_delivered_after_heal():
    async def body(links, port):
        r, w = await _client(A, port)
        w.write(b"ping")
        assert await asyncio.wait_for(r.readexactly(4), 5) == b"ping"
        links.set(A, B, Rule(blocked=True))
        w.write(b"held")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(r.readexactly(4), 0.3)
        r2, w2 = await _client(C, port)  # another source is not affected
        w2.write(b"free")
        assert await asyncio.wait_for(r2.readexactly(4), 5) == b"free"
        links.heal()
        assert await asyncio.wait_for(r.readexactly(4), 5) == b"held"
        for writer in (w, w2):
            writer.close()
            await writer.wait_closed()

    asyncio.run(_with_proxy(body))


def test_delay_applies_to_each_direction_and_keeps_order():
    async def body(links, port):
        links.set(A, B, Rule(delay_s=0.15))
        r, w = await _client(A, port)
        start = time.monotonic()
        for i in range(5):
            w.write(b"%d" % i)
            await w.drain()
        got = await asyncio.wait_for(r.readexactly(5), 5)
        assert got == b"01234"
        assert time.monotonic() - start >= 0.3  # there and back, 0.15 s each way
        w.close()
        await w.wait_closed()

    asyncio.run(_with_proxy(body))


def test_rules_refuse_non_loopback_hosts_and_negative_delays():
    async def body():
        links = Links()
        with pytest.raises(ValueError, match="loopback"):
            links.set("10.1.1.1", B, Rule(blocked=True))
        with pytest.raises(ValueError, match="negative"):
            links.set(A, B, Rule(delay_s=-1))
        assert links.get(A, B) == Rule()

    asyncio.run(body())
