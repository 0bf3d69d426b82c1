"""Run the emulator as its own process (`speechbatch emulator` calls `serve`).

One uvicorn process on one event loop, access log off: the emulator must not be the
bottleneck of a benchmark, and all its state (caps, counters, scripts) lives in that loop.
"""

from __future__ import annotations

import logging

import uvicorn

from emulator.app import create_app
from emulator.config import EmulatorConfig
from emulator.faults import StreamCut


def serve(host: str, port: int, config: EmulatorConfig) -> None:
    """Serve the emulator on host:port until interrupted."""
    logging.getLogger("uvicorn.error").addFilter(_quiet_cuts)
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


def _quiet_cuts(record: logging.LogRecord) -> bool:
    """Drop uvicorn's traceback for a `cut` fault: the emulator broke that answer on purpose."""
    error = record.exc_info[1] if record.exc_info else None
    while error is not None and not isinstance(error, StreamCut):
        error = error.__cause__ or error.__context__
    return error is None
