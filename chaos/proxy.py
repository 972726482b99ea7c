"""A TCP proxy in front of a node that delays or holds traffic per source: slow links and the
no-root fallback for partitions.

Theory of operation. The node listens on a private port; the proxy listens on the node's
public address (the one its peers and clients dial) and forwards to the private one. Every
node sends from its own loopback address, so the proxy knows which node a connection comes
from by its source address and applies that link's rule:

- `delay_s`: each chunk is forwarded `delay_s` after it arrived (in order, pipelined, so a
  slow link still carries full throughput: latency, not bandwidth);
- `blocked`: nothing is forwarded in either direction, new connections are accepted but
  hear nothing (as with a silent iptables DROP); when the rule is lifted, what was held is
  delivered, as TCP's retransmissions would after a healed partition.

Rules live in one `Links` table shared by every proxy of a run and can change at any time;
connections look the rule up for every chunk. Only loopback addresses are accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

CHUNK = 64 << 10
LOOPBACK = ipaddress.ip_network("127.0.0.0/8")


@dataclass(frozen=True, slots=True)
class Rule:
    blocked: bool = False
    delay_s: float = 0.0


PASS = Rule()


class Links:
    """The rule for traffic between a source host and a destination proxy (both ways)."""

    def __init__(self) -> None:
        self._rules: dict[tuple[str, str], Rule] = {}
        self.changed = asyncio.Event()

    def set(self, src: str, dst: str, rule: Rule) -> None:
        for host in (src, dst):
            if ipaddress.ip_address(host) not in LOOPBACK:
                raise ValueError(f"{host} is not a loopback address")
        if rule.delay_s < 0:
            raise ValueError("a delay is not negative")
        self._rules[(src, dst)] = rule
        self._kick()

    def heal(self) -> None:
        self._rules.clear()
        self._kick()

    def get(self, src: str, dst: str) -> Rule:
        return self._rules.get((src, dst), PASS)

    def _kick(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()


class Proxy:
    """Forwards `public` (host, port) to `private` (host, port) under the `links` rules."""

    def __init__(self, public: tuple[str, int], private: tuple[str, int], links: Links) -> None:
        self.public, self.private, self.links = public, private, links
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, *self.public)
        if self.public[1] == 0:
            self.public = (self.public[0], self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await t
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        src = writer.get_extra_info("peername")[0]
        try:
            up_r, up_w = await asyncio.open_connection(*self.private)
        except OSError as exc:
            logger.debug("proxy %s: upstream refused: %s", self.public, exc)
            writer.close()
            self._tasks.discard(task)
            return
        try:
            await asyncio.gather(self._pump(reader, up_w, src), self._pump(up_r, writer, src))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for w in (writer, up_w):
                w.close()
            for w in (writer, up_w):
                with contextlib.suppress(OSError, asyncio.CancelledError):
                    await w.wait_closed()
            self._tasks.discard(task)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    src: str) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    writer.write_eof() if writer.can_write_eof() else None
                    return
                while (rule := self.links.get(src, self.public[0])).blocked:
                    await self.links.changed.wait()
                await asyncio.sleep(max(0.0, due + rule.delay_s - loop.time()))
                writer.write(data)
                await writer.drain()

        sender = asyncio.ensure_future(deliver())
        try:
            while True:
                data = await reader.read(CHUNK)
                queue.put_nowait((loop.time(), data))
                if not data:
                    break
            await sender
        finally:
            sender.cancel()


class ProxyNetwork:
    """Link proxies for every node, on an event loop of their own in a background thread.

    `add(public, private)` starts a proxy that holds `public` (the node's name) and forwards
    to `private` (where the node really listens: `kv serve --listen`). `hold(links)` holds
    the traffic of each (src, dst) host pair, `delay(links, s)` slows it, `heal()` lifts
    every rule. The calls are synchronous and thread-safe (the harness's nemesis runs in a
    worker thread); `close()` stops every proxy and the thread.
    """

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="chaos-proxies",
                                        daemon=True)
        self._thread.start()
        self.links: Links = self._call(_new_links)
        self.proxies: list[Proxy] = []

    def _call(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """Run the coroutine function `fn(*args)` on the proxies' loop; its result."""
        return asyncio.run_coroutine_threadsafe(fn(*args), self._loop).result(30)

    def add(self, public: tuple[str, int], private: tuple[str, int]) -> Proxy:
        proxy = Proxy(public, private, self.links)
        self._call(proxy.start)
        self.proxies.append(proxy)
        return proxy

    def hold(self, links: list[tuple[str, str]]) -> None:
        self._set(links, Rule(blocked=True))

    def delay(self, links: list[tuple[str, str]], delay_s: float) -> None:
        self._set(links, Rule(delay_s=delay_s))

    def _set(self, links: list[tuple[str, str]], rule: Rule) -> None:
        async def apply() -> None:
            for src, dst in links:
                self.links.set(src, dst, rule)

        self._call(apply)

    def heal(self) -> None:
        async def apply() -> None:
            self.links.heal()

        self._call(apply)

    def close(self) -> None:
        async def stop() -> None:
            for proxy in self.proxies:
                await proxy.close()

        if self._thread.is_alive():
            self._call(stop)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop.close()


async def _new_links() -> Links:
    return Links()  # created on the proxies' loop, whose Event it uses
