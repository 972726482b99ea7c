"""A TCP relay in front of each lock-service member that a test can cut, for one client only.

`Partition(targets)` listens on a free 127.0.0.1 port per target and relays bytes both
ways on its own event loop thread. `cut()` cuts the client off as a network partition
does: relayed connections go silent (bytes are read and dropped, nothing is answered or
closed) and new connections are accepted and left silent too; `heal()` relays new
connections again. Other clients, talking to
the members directly, are not affected. `close()` stops everything it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

from tests.raft.procs import free_ports


class Partition:
    def __init__(self, targets: list[int]) -> None:
        self.targets = targets
        self.ports = free_ports(len(targets))
        self.is_cut = False
        self._loop = asyncio.new_event_loop()
        self._servers: list[asyncio.Server] = []
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result()

    @property
    def addresses(self) -> list[str]:
        return [f"127.0.0.1:{p}" for p in self.ports]

    async def _start(self) -> None:
        for port, target in zip(self.ports, self.targets, strict=True):
            server = await asyncio.start_server(
                lambda r, w, t=target: self._relay(r, w, t), "127.0.0.1", port)
            self._servers.append(server)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     target: int) -> None:
        self._writers.add(writer)
        try:
            if self.is_cut:
                await self._drain(reader)
                return
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target)
            self._writers.add(up_writer)
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        except (OSError, asyncio.CancelledError):  # closing: end quietly (asyncio's stream
            pass  # server logs a cancelled connection task as an error)
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                if self.is_cut:
                    await self._drain(reader)
                    return
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            if not self.is_cut:
                writer.close()

    @staticmethod
    async def _drain(reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(OSError):
            while await reader.read(65536):
                pass

    def cut(self) -> None:
        self.is_cut = True

    def heal(self) -> None:
        """New connections are relayed again (the ones that went silent stay silent)."""
        self.is_cut = False

    def close(self) -> None:
        async def stop() -> None:
            for server in self._servers:
                server.close()
            for writer in list(self._writers):
                writer.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for server in self._servers:
                await server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()
