"""A TCP proxy that can turn into a silent peer: the half-open broker of celery#9705.

Killing Redis makes the kernel answer with RST, so clients see the failure at once; a
firewall that DROPs packets (or a frozen VM) sends nothing, and a client blocked on a read
waits for as long as its own timeouts allow. This proxy sits between the processes under
test and the real Redis and has two modes:

- forwarding: bytes pass both ways, one upstream connection per accepted client;
- black hole: accepted connections stay open but no byte moves in either direction, and
  new connections are accepted (the kernel completes the handshake) but never answered.

`restore()` resumes every held connection where it stopped, as TCP retransmission does when
a DROP rule is lifted: nothing held is lost or reordered, and a client that gave up meanwhile
just closes. `restore(resume_held=False)` is the harsher case of celery#9705: the flows that
were open stay silent for good (a firewall or NAT that forgot them, a failed-over server that
never knew them), and only new connections work, so a client must notice and reconnect.

The proxy's own kernel keeps ACKing, so TCP keepalive cannot see this black hole: what it
tests is application-level timeouts and health checks, which is what a client can rely on
when the peer is a hung process rather than a dead link.

The event loop runs in a daemon thread; the public methods are called from the test thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from concurrent.futures import Future
from typing import Any

_CHUNK = 64 * 1024


class BlackHoleProxy:
    """Forward 127.0.0.1:`port` to `upstream`; `blackhole()` silences it, `restore()` resumes."""

    def __init__(self, upstream_host: str, upstream_port: int, host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.host = host
        self.port = 0
        self.accepted = 0  # connections accepted since start
        self.accepted_while_dark = 0  # ... of which while black-holed: clients trying to reconnect
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._dark = False
        # One gate per live connection: set = bytes move. Dead flows are dropped from here,
        # so nothing ever opens their gate again.
        self._gates: dict[asyncio.StreamWriter, asyncio.Event] = {}
        self._writers: set[asyncio.StreamWriter] = set()

    def url(self, scheme: str = "redis", path: str = "") -> str:
        return f"{scheme}://{self.host}:{self.port}{path}"

    def start(self) -> BlackHoleProxy:
        self._thread.start()
        self._call(self._start())
        return self

    def blackhole(self) -> None:
        """From now on no byte moves and new connections hang; returns once in effect."""
        self._call(self._set_open(False))

    def restore(self, *, resume_held: bool = True) -> None:
        """Forward again: new connections work; held ones resume, or stay silent for good."""
        self._call(self._set_open(True, resume_held=resume_held))

    def stop(self) -> None:
        """Close the listener and every connection, then end the loop thread."""
        if not self._thread.is_alive():
            return
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def _call(self, coroutine: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(10)

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _set_open(self, value: bool, *, resume_held: bool = True) -> None:
        self._dark = not value
        if value and not resume_held:
            self._gates.clear()
        for gate in self._gates.values():
            if value:
                gate.set()
            else:
                gate.clear()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        current = asyncio.current_task()
        handlers = [task for task in asyncio.all_tasks() if task is not current]
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Ending quietly on cancel: asyncio's server logs a handler task that ends cancelled.
        with contextlib.suppress(asyncio.CancelledError):
            await self._serve(reader, writer)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        gate = asyncio.Event()
        if self._dark:
            self.accepted_while_dark += 1
        else:
            gate.set()
        self._gates[writer] = gate
        self._writers.add(writer)
        try:
            await gate.wait()  # a SYN "dropped": connected, but nothing reaches Redis
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            except OSError:
                return
            self._writers.add(up_writer)
            try:
                await asyncio.gather(
                    self._pump(reader, up_writer, gate), self._pump(up_reader, writer, gate)
                )
            finally:
                self._writers.discard(up_writer)
        finally:
            self._gates.pop(writer, None)
            self._writers.discard(writer)
            writer.close()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, gate: asyncio.Event
    ) -> None:
        """Copy one direction, pausing before each read and each write while the gate is shut."""
        try:
            while True:
                await gate.wait()
                data = await reader.read(_CHUNK)
                if not data:
                    break
                await gate.wait()  # bytes read just before the switch are held too
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(ConnectionError, OSError):
                writer.close()
