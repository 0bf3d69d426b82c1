"""The long-running processes, wired from `Settings`: API, worker, beat, emulator.

Each function builds its process's resources, runs until told to stop, and releases them.
The CLI's server commands are thin wrappers around these.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

import uvicorn

from emulator.config import EmulatorConfig
from emulator.server import serve
from jobs.api import create_app
from jobs.catalog import provider_limits
from jobs.ledger import ItemLedger
from jobs.settings import Settings
from storage.db import open_database
from storage.publisher import CeleryPublisher
from workers.celery_app import create_worker_app, worker_argv
from workers.config import default_threads
from workers.sweeper import run_sweeper


def logging_setup(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def run_api(settings: Settings, *, host: str, port: int) -> None:
    logging_setup()
    uvicorn.run(create_app(settings), host=host, port=port, access_log=False)


def worker_threads(settings: Settings, requested: int | None) -> int:
    """`--concurrency` when given, else derived from the configured provider limits."""
    return requested or default_threads(provider_limits(settings.provider_limits))


def run_worker(settings: Settings, *, threads: int, name: str) -> None:
    logging_setup()
    app = create_worker_app(settings, threads=threads)
    logging.getLogger(__name__).info("worker %s: %d threads", name, threads)
    app.worker_main(worker_argv(threads, name))


def run_beat(settings: Settings, *, interval_s: float) -> None:
    """The sweeper loop until SIGTERM/SIGINT: re-publish due and stale items, expire leases."""
    logging_setup()
    ledger = ItemLedger(
        open_database(settings.database_url), CeleryPublisher(settings.broker_url or "")
    )
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        run_sweeper(ledger, interval_s=interval_s, stale_s=settings.lease_seconds, stop=stop)
    finally:
        ledger.db.dispose()
        ledger.publisher.close()


def run_emulator(host: str, port: int, config: EmulatorConfig) -> None:
    serve(host, port, config)
