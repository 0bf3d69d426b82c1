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
from celery.signals import setup_logging, worker_shutting_down
from prometheus_client import start_http_server
from pythonjsonlogger.json import JsonFormatter

from emulator.config import EmulatorConfig
from emulator.server import serve
from jobs.api import BoundedHttpToolsProtocol, create_app
from jobs.beat_lease import beat_lease
from jobs.catalog_limits import provider_limits
from jobs.ledger import ItemLedger
from jobs.settings import Settings
from storage.db import open_database
from storage.publisher import CeleryPublisher
from workers.celery_app import create_worker_app, worker_argv
from workers.config import default_threads
from workers.expand import ArchiveResumer
from workers.scheduler import Scheduler
from workers.sweeper import UploadRetention, run_sweeper
from workers.webhook_sender import WebhookSender

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


def serve_metrics(port: int, host: str = "0.0.0.0") -> None:  # noqa: S104 - Prometheus scrapes it
    """Serve this process's Prometheus registry (`workers.metrics`) on `port` (0: none).

    One port per process: a worker's pool is threads, so its one registry holds every
    thread's counts; several workers on one host each take a port of their own. The server
    is a daemon thread of prometheus_client and goes with the process.
    """
    if port:
        start_http_server(port, addr=host)
        logging.getLogger(__name__).info("metrics on port %d", port)


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


def run_worker(
    settings: Settings,
    *,
    threads: int,
    name: str,
    events: bool = False,
    beat_interval_s: float = 0.0,
    metrics_port: int = 0,
) -> None:
    """A Celery worker; with `beat_interval_s` > 0 (`worker --beat`) also the beat loop in a
    thread of this process, stopped when the worker starts shutting down."""
    logging_setup(settings.log_format)
    setup_logging.connect(_leave_logging_alone, weak=False)
    app = create_worker_app(settings, threads=threads, events=events)
    serve_metrics(metrics_port)
    logging.getLogger(__name__).info(
        "worker %s: %d threads, task events %s, beat %s", name, threads,
        "on" if events else "off", f"every {beat_interval_s:g} s" if beat_interval_s else "off",
    )  # fmt: skip
    # Celery's start-up banner is printed, not logged: in JSON mode it would break the lines.
    banner = settings.log_format == "text"
    stop = threading.Event()
    beat = threading.Thread(
        target=beat_loop,
        kwargs={"settings": settings, "interval_s": beat_interval_s, "stop": stop},
        name="beat",
        daemon=True,  # a hard exit must not wait for it; a clean one stops and joins it
    )

    def stop_beat(**_: object) -> None:
        stop.set()

    worker_shutting_down.connect(stop_beat, weak=False)
    if beat_interval_s:
        beat.start()
    try:
        app.worker_main(worker_argv(threads, name, events=events, banner=banner))
    finally:
        stop.set()
        if beat.is_alive():
            beat.join(timeout=30)


def run_beat(settings: Settings, *, interval_s: float, metrics_port: int = 0) -> None:
    """The beat loop until SIGTERM/SIGINT (see `beat_loop`), with its metrics on
    `metrics_port` when it is not 0."""
    logging_setup(settings.log_format)
    serve_metrics(metrics_port)
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    beat_loop(settings, interval_s=interval_s, stop=stop)


def beat_loop(settings: Settings, *, interval_s: float, stop: threading.Event) -> None:
    """Beat until `stop` is set: re-publish due and stale items, expire leases, and run the
    chores (uploads, webhooks, schedules), while this process holds beat's lease
    (`jobs.beat_lease`). `run_beat` and `worker --beat` both run it."""
    ledger = ItemLedger(
        open_database(settings.database_url), CeleryPublisher(settings.broker_url or "")
    )
    lease = beat_lease(settings, ledger.db.sessions, interval_s)
    schedules = Scheduler.from_settings(settings, ledger)
    uploads = UploadRetention.from_settings(settings, ledger.db.sessions)
    webhooks = WebhookSender.from_settings(settings, ledger.db.sessions)
    archives = ArchiveResumer.from_settings(settings, ledger)
    try:
        run_sweeper(
            ledger,
            interval_s=interval_s,
            stale_s=settings.lease_seconds,
            stop=stop,
            chores=[uploads.chore(), webhooks.chore(), schedules.chore(), archives.chore()],
            holds=lease.hold,
        )
    finally:
        lease.release()
        webhooks.close()
        archives.close()
        uploads.close()
        ledger.db.dispose()
        ledger.publisher.close()


def run_emulator(host: str, port: int, config: EmulatorConfig) -> None:
    serve(host, port, config)
