"""A small TCP fault proxy for tests (toxiproxy is not available here).

It listens on a free 127.0.0.1 port, forwards to an upstream 127.0.0.1 port and can,
at any moment: pass traffic, blackhole it (connections stay open, bytes vanish),
reset every connection and refuse new ones, close a connection after N bytes, delay
each chunk, or limit bandwidth. It runs its own event loop in a thread so that
synchronous and asynchronous tests can use it alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from dataclasses import dataclass

from robodensity.app.embedded import free_port


@dataclass
class Faults:
    blackhole: bool = False
    refuse: bool = False
    close_after_bytes: int | None = None
    delay_s: float = 0.0
    bytes_per_s: float | None = None


class FaultProxy:
    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = free_port()
        self.faults = Faults()
        self.connections = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="faultproxy", daemon=True)
        self._server: asyncio.Server | None = None

    # -- control (any thread) ----------------------------------------------------
    def __enter__(self) -> FaultProxy:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", self.port), self._loop
        ).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.reset()
        if self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def heal(self) -> None:
        self.faults = Faults()

    def blackhole(self) -> None:
        """Keep connections open but drop every byte both ways (a hung peer, a dead route)."""
        self.faults = Faults(blackhole=True)

    def partition(self) -> None:
        """Reset every connection and refuse new ones until healed."""
        self.faults = Faults(refuse=True)
        self.reset()

    def reset(self) -> None:
        """Close every open connection with a TCP reset."""
        asyncio.run_coroutine_threadsafe(self._reset_all(), self._loop).result(10)

    def set(self, **faults: object) -> None:
        self.faults = Faults(**faults)  # type: ignore[arg-type]

    # -- proxy (its own loop) ------------------------------------------------------
    async def _reset_all(self) -> None:
        for w in list(self._writers):
            _abort(w)
        self._writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.faults.refuse:
            _abort(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            _abort(writer)
            return
        self.connections += 1
        self._writers |= {writer, up_writer}
        budget = [self.faults.close_after_bytes]
        await asyncio.gather(
            self._pipe(reader, up_writer, budget), self._pipe(up_reader, writer, budget), return_exceptions=True
        )
        for w in (writer, up_writer):
            self._writers.discard(w)
            with contextlib.suppress(Exception):
                w.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, budget: list[int | None]) -> None:
        try:
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                f = self.faults
                if f.refuse:
                    break
                if f.blackhole:
                    continue
                if f.delay_s:
                    await asyncio.sleep(f.delay_s)
                if f.bytes_per_s:
                    await asyncio.sleep(len(chunk) / f.bytes_per_s)
                if budget[0] is not None:
                    if len(chunk) >= budget[0]:
                        writer.write(chunk[: budget[0]])
                        await writer.drain()
                        _abort(writer)
                        return
                    budget[0] -= len(chunk)
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with RST rather than FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport = writer.transport
    transport.abort()
