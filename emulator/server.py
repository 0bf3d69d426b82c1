"""Run the emulator as its own process (`speechbatch emulator` calls `serve`).

One uvicorn process on one event loop, access log off: the emulator must not be the
bottleneck of a benchmark, and all its state (caps, counters, scripts) lives in that loop.
"""

from __future__ import annotations

import uvicorn

from emulator.app import create_app
from emulator.config import EmulatorConfig


def serve(host: str, port: int, config: EmulatorConfig) -> None:
    """Serve the emulator on host:port until interrupted."""
    uvicorn.run(
        create_app(config),
        host=host,
        port=port,
        access_log=False,
        log_level="warning",
        workers=1,
        # Celery workers keep connections alive between tasks; don't drop them under them.
        timeout_keep_alive=30,
    )
