"""The emulator app served by uvicorn in a thread on a free loopback port, for the WebSocket
unit tests: the worker's sync client needs a real socket, and a thread keeps it in-process."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from emulator.app import create_app
from emulator.config import EmulatorConfig
from emulator.dials import Dials


@contextmanager
def serving(config: EmulatorConfig) -> Iterator[tuple[str, Dials]]:
    """(base URL, the app's dials) while the emulator answers on loopback."""
    app = create_app(config)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", ws="websockets-sansio")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the emulator did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}", app.state.dials
    finally:
        server.should_exit = True
        thread.join(timeout=10)
