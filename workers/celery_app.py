"""The Celery app for workers, and the thin tasks on it.

A task takes an item id (or a group of them, `process_items`) and calls the Celery-free
pipeline; the pipeline never raises for provider or input problems, so Celery only retries
what the broker itself loses (late ack + reject-on-worker-lost redeliver a killed worker's
message; the claim dedups, and a group's finished items are skipped).

Each worker also consumes its own direct queue (`worker_direct`), where `speechbatch
worker-check` sends the canary task (`workers/canary.py`) that proves it still consumes, and
where its own self-check (`workers/self_check.py`) sends one every few seconds.

`app` (module attribute, built from the environment on first access) is for Celery's own
tools: `celery -A workers.celery_app inspect ping`, Flower. Workers run `speechbatch worker`.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import Celery
from celery.signals import worker_ready, worker_shutdown, worker_shutting_down

from jobs.catalog_limits import provider_limits
from jobs.settings import Settings, get_settings
from storage.publisher import (
    TASK_EXPAND_ARCHIVE,
    TASK_PROCESS_ITEM,
    TASK_PROCESS_ITEMS,
    CeleryPublisher,
    celery_config,
)
from workers.canary import register_canary
from workers.config import default_threads
from workers.expand import run_expansion
from workers.pipeline import run_item, run_items
from workers.runtime import Runtime, build_runtime, freeze_start_up_heap, warm_up
from workers.self_check import install_self_check

# Per-item INFO lines that repeat `workers.pipeline`'s own "item N outcome X" line: Celery's
# "received"/"succeeded" and httpx's "HTTP Request". At hundreds of items a second they cost
# a noticeable share of a worker's one GIL; warnings and errors from them still show.
QUIET_LOGGERS = ("celery.app.trace", "celery.worker.strategy", "httpx")
# Logged once the worker's pools are open and its heap is frozen (benchmarks wait for it).
WARMED_UP = "worker warmed up"
log = logging.getLogger(__name__)


def create_worker_app(settings: Settings, *, threads: int, events: bool | None = None) -> Celery:
    """A worker app whose process-wide Runtime is built on first use and closed on shutdown.

    `events` (default: SPEECHBATCH_TASK_EVENTS) turns on Celery's task events, also for
    `celery -A workers.celery_app worker`, which does not get `worker_argv`'s `-E`.
    """
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    if not settings.broker_url:
        raise ValueError("SPEECHBATCH_BROKER_URL is not set; workers need a Redis broker.")
    app = Celery("speechbatch")
    app.conf.update(celery_config(settings.broker_url))
    app.conf.worker_direct = True  # the canary's route to this one worker
    events = settings.task_events if events is None else events
    app.conf.worker_send_task_events = events
    app.conf.task_send_sent_event = events  # tasks sent through this app (the canary's)
    lock = threading.Lock()
    holder: list[Runtime] = []

    def runtime() -> Runtime:
        with lock:
            if not holder:
                publisher = CeleryPublisher(settings.broker_url or "")
                holder.append(build_runtime(settings, publisher, threads=threads))
            return holder[0]

    def warm(**_: Any) -> None:  # off the consumer's thread: a down database must not stall it
        def start_up() -> None:
            warm_up(runtime(), threads)
            log.info("%s: %d start-up objects frozen", WARMED_UP, freeze_start_up_heap())

        threading.Thread(target=start_up, name="speechbatch-warm-up", daemon=True).start()

    worker_ready.connect(warm, weak=False)
    stopping = threading.Event()

    @app.task(name=TASK_PROCESS_ITEM, ignore_result=True)  # type: ignore[untyped-decorator]
    def process_item(item_id: int) -> str:
        return run_item(runtime(), int(item_id)).value

    @app.task(name=TASK_PROCESS_ITEMS, ignore_result=True)  # type: ignore[untyped-decorator]
    def process_items(item_ids: list[int]) -> int:
        return len(run_items(runtime(), [int(item_id) for item_id in item_ids], stopping))

    @app.task(name=TASK_EXPAND_ARCHIVE, ignore_result=True)  # type: ignore[untyped-decorator]
    def expand_archive(job_id: str) -> str:
        return run_expansion(runtime(), str(job_id)).value

    def shutting_down(**_: Any) -> None:
        stopping.set()

    worker_shutting_down.connect(shutting_down, weak=False)

    register_canary(app, settings.broker_url)
    install_self_check(app, settings.broker_url, interval_s=settings.worker_self_check_seconds)

    def close(**_: Any) -> None:
        with lock:
            if holder:
                runtime = holder.pop()
                runtime.close()
                runtime.ledger.publisher.close()

    worker_shutdown.connect(close, weak=False)
    return app


def worker_argv(
    threads: int, name: str = "celery@%h", *, events: bool = False, banner: bool = True
) -> list[str]:
    """Arguments for `app.worker_main`: a pool of `threads` threads.

    `name` is the Celery node name (`%h` = this host); it must be unique per worker, since the
    canary reaches a worker through the queue named after it. `events` sends task events
    (`-E`, for Flower and `celery events`); each costs a broker write per task state, so
    they are off unless asked for, and with them the worker sends Celery's heartbeat events
    too (Flower counts a worker without them as offline after a few seconds). Without
    `banner` Celery prints no start-up banner (it is not a log record, so it would break
    one-JSON-object-per-line logs).
    """
    return [
        *([] if banner else ["--quiet"]),
        "worker",
        f"--hostname={name}",
        "--pool=threads",
        f"--concurrency={threads}",
        "--loglevel=INFO",
        "--without-gossip",
        "--without-mingle",
        *(["-E"] if events else ["--without-heartbeat"]),
    ]


def __getattr__(name: str) -> Celery:
    """`app`: the worker app for the environment's settings, for `celery -A workers.celery_app`.

    Built on first access, so importing this module reads no settings.
    """
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    settings = get_settings()
    app = create_worker_app(
        settings, threads=default_threads(provider_limits(settings.provider_limits))
    )
    globals()["app"] = app
    return app
