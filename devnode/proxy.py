"""A byte-level TCP relay in front of the gRPC server, so the node can freeze like a hung host.

A frozen in-process gRPC server would still answer HTTP/2 pings from its transport threads, so the
client would never notice. Relaying the bytes ourselves lets :meth:`Relay.set_frozen` stop all
traffic (pings included) while keeping every TCP connection open, and lets a stop close client
connections the way a killed process does.
"""

from __future__ import annotations

import asyncio
import contextlib


class Relay:
    """Listens on the public port and pipes each connection to the internal gRPC port."""

    def __init__(self, host: str, port: int, target_port: int) -> None:
        self.host = host
        self.port = port
        self.target_port = target_port
        self._server: asyncio.Server | None = None
        self._thawed = asyncio.Event()
        self._thawed.set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(
            self._accept, self.host, self.port, reuse_address=True
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    def set_frozen(self, frozen: bool) -> None:
        if frozen:
            self._thawed.clear()
        else:
            self._thawed.set()

    async def stop(self) -> None:
        """Stop listening and drop every relayed connection at once."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
        self._server = None
        self._thawed.set()

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_w.transport.abort()
            return
        self._writers.update((client_w, server_w))
        pumps = [
            asyncio.ensure_future(self._pump(client_r, server_w)),
            asyncio.ensure_future(self._pump(server_r, client_w)),
        ]
        self._tasks.update(pumps)
        try:
            await asyncio.gather(*pumps, return_exceptions=True)
        finally:
            self._tasks.difference_update(pumps)
            for writer in (client_w, server_w):
                self._writers.discard(writer)
                writer.transport.abort()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await self._thawed.wait()
                data = await reader.read(65536)
                if not data:
                    break
                await self._thawed.wait()  # bytes read just before a freeze are held, not sent
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.transport.abort()
