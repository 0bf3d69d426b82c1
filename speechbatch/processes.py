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
from celery.signals import setup_logging
from pythonjsonlogger.json import JsonFormatter

from emulator.config import EmulatorConfig
from emulator.server import serve
from jobs.api import BoundedHttpToolsProtocol, create_app
from jobs.catalog import provider_limits
from jobs.ledger import ItemLedger
from jobs.settings import Settings
from storage.db import open_database
from storage.publisher import CeleryPublisher
from workers.celery_app import create_worker_app, worker_argv
from workers.config import default_threads
from workers.sweeper import UploadRetention, run_sweeper

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def logging_setup(log_format: str = "text", level: int = logging.INFO) -> None:
    """Send every record of this process to stderr: text lines, or (`json`) one JSON object per
    line with `time`, `level`, `logger`, `message` and each `extra=` field as a key (the
    workers' item lines carry job_id, item_id, provider, outcome and error_code)."""
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(levelname)s %(name)s %(message)s",
                rename_fields={"levelname": "level", "name": "logger"},
                timestamp="time",
            )
        )
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    logging.captureWarnings(True)  # warnings too (Celery warns before it sets up logging)


def _leave_logging_alone(**_: object) -> None:
    """A `setup_logging` receiver: while one is connected, Celery configures no logger (and no
    stdout redirect), so its records reach the root handler of `logging_setup` as they are."""


def run_api(settings: Settings, *, host: str, port: int) -> None:
    logging_setup(settings.log_format)
    # log_config=None: uvicorn's loggers propagate to ours instead of printing their own lines.
    # The protocol caps each request head's size and time (431/408), which httptools does not.
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        access_log=False,
        log_config=None,
        http=BoundedHttpToolsProtocol,
    )


def worker_threads(settings: Settings, requested: int | None) -> int:
    """`--concurrency` when given, else derived from the configured provider limits."""
    return requested or default_threads(provider_limits(settings.provider_limits))


def run_worker(settings: Settings, *, threads: int, name: str, events: bool = False) -> None:
    logging_setup(settings.log_format)
    setup_logging.connect(_leave_logging_alone, weak=False)
    app = create_worker_app(settings, threads=threads)
    logging.getLogger(__name__).info(
        "worker %s: %d threads, task events %s", name, threads, "on" if events else "off"
    )
    # Celery's start-up banner is printed, not logged: in JSON mode it would break the lines.
    banner = settings.log_format == "text"
    app.worker_main(worker_argv(threads, name, events=events, banner=banner))


def run_beat(settings: Settings, *, interval_s: float) -> None:
    """The sweeper loop until SIGTERM/SIGINT: re-publish due and stale items, expire leases."""
    logging_setup(settings.log_format)
    ledger = ItemLedger(
        open_database(settings.database_url), CeleryPublisher(settings.broker_url or "")
    )
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    uploads = UploadRetention.from_settings(settings, ledger.db.sessions)
    try:
        run_sweeper(
            ledger,
            interval_s=interval_s,
            stale_s=settings.lease_seconds,
            stop=stop,
            chores=[uploads.chore()],
        )
    finally:
        uploads.close()
        ledger.db.dispose()
        ledger.publisher.close()


def run_emulator(host: str, port: int, config: EmulatorConfig) -> None:
    serve(host, port, config)
