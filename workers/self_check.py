"""The worker's self-check: it runs the canary on itself and exits once it stops consuming.

A supervisor restarts a process that exits, not one that is merely unhealthy: Docker's
`restart: unless-stopped` ignores the healthcheck, and systemd sees a live process. A worker
stuck on a dead broker connection (celery#8030, #9705) is exactly that: alive, consuming
nothing. So each worker process runs `SelfCheck` on a thread: every `interval_s` it sends
`workers.canary`'s canary to its own direct queue, as `speechbatch worker-check` does, and
after `failures_to_exit` failures in a row it logs why and exits with status 1, for Docker
or systemd (`Restart=on-failure`) to start a fresh process.

The exit is immediate (`os._exit`): a worker that cannot run a canary cannot be trusted to
finish a warm shutdown either, and the items it held come back through their leases and
late acks, like a killed worker's (design §1).

Two kinds of failed canary do not count, because restarting would not help:
- the checker could not reach the broker at all: Celery reconnects by itself, and every
  worker restarting at once in a Redis outage would only add to it;
- tasks finished in this process since the previous check: every thread was busy, so the
  canary waited behind items, but the worker is consuming.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

import redis
from celery import Celery
from celery.signals import task_postrun, worker_ready, worker_shutdown, worker_shutting_down

from storage.publisher import CeleryPublisher
from workers.canary import check_worker

log = logging.getLogger(__name__)
FAILURES_TO_EXIT = 3
CANARY_TIMEOUT_S = 10.0  # the compose healthcheck's `worker-check --timeout`
EXIT_STATUS = 1


def exit_process(reason: str) -> None:
    """End the whole process with EXIT_STATUS (SystemExit in a thread ends only the thread)."""
    logging.shutdown()  # flush the line that says why
    os._exit(EXIT_STATUS)


class SelfCheck:
    """Canaries to `node` every `interval_s`; `on_failed(reason)` after enough failures."""

    def __init__(
        self,
        app: Celery,
        client: redis.Redis[Any],
        node: str,
        *,
        interval_s: float,
        timeout_s: float = CANARY_TIMEOUT_S,
        failures_to_exit: int = FAILURES_TO_EXIT,
        on_failed: Callable[[str], None] = exit_process,
    ) -> None:
        self.app, self.client, self.node = app, client, node
        self.interval_s, self.timeout_s = interval_s, timeout_s
        self.failures_to_exit, self.on_failed = failures_to_exit, on_failed
        self.checks = 0
        self.streak = 0  # failed canaries in a row that count
        self._finished = 0  # tasks this process finished
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def task_finished(self) -> None:
        """Note that this process finished a task (it is consuming)."""
        with self._lock:
            self._finished += 1

    def _finished_count(self) -> int:
        with self._lock:
            return self._finished

    def run(self) -> None:
        """Check until stopped, or until `on_failed` was called."""
        seen = self._finished_count()
        while not self._stop.wait(self.interval_s):
            result = check_worker(self.app, self.client, self.node, self.timeout_s)
            if self._stop.is_set():  # shutting down: the worker stopped consuming on purpose
                return
            self.checks += 1
            finished = self._finished_count()
            busy, seen = finished != seen, finished
            if result.ok or busy:
                self.streak = 0
                if not result.ok:
                    log.info("self-check: %s, but tasks finished meanwhile", result.message)
                continue
            if result.broker_down:
                log.warning("self-check not counted, the broker is unreachable: %s", result.message)
                continue
            self.streak += 1
            log.warning(
                "self-check failed (%d of %d): %s",
                self.streak,
                self.failures_to_exit,
                result.message,
            )
            if self.streak >= self.failures_to_exit:
                log.critical(
                    "worker %s ran no canary %d times in a row; exiting with status %d so that "
                    "its supervisor restarts it (last: %s)",
                    self.node,
                    self.streak,
                    EXIT_STATUS,
                    result.message,
                )
                self.on_failed(result.message)
                return

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="self-check", daemon=True)
        self._thread.start()

    def stop(self, *, wait: bool = True) -> None:
        self._stop.set()
        if wait and self._thread is not None:
            self._thread.join(timeout=self.timeout_s + 5)


def install_self_check(app: Celery, broker_url: str, *, interval_s: float) -> None:
    """Run a SelfCheck in `app`'s worker once it is ready (0 = never), stop it on shutdown.

    It publishes through a connection of its own, like `speechbatch worker-check` from outside.
    """
    if interval_s <= 0:
        return
    running: list[tuple[SelfCheck, CeleryPublisher]] = []

    def on_ready(sender: Any, **_: Any) -> None:
        if sender.app is not app:
            return
        publisher = CeleryPublisher(broker_url)
        check = SelfCheck(
            publisher.app,
            publisher.redis,
            str(sender.hostname),
            interval_s=interval_s,
            timeout_s=min(CANARY_TIMEOUT_S, interval_s),
        )
        running.append((check, publisher))
        check.start()

    def on_task_done(sender: Any = None, **_: Any) -> None:
        if running and getattr(sender, "app", None) is app:
            running[0][0].task_finished()

    def on_shutting_down(**_: Any) -> None:
        # A warm shutdown stops consuming while items finish: that must not count as hung.
        # (Called in the signal handler, so only set the flag.)
        for check, _publisher in running:
            check.stop(wait=False)

    def on_shutdown(**_: Any) -> None:
        while running:
            check, publisher = running.pop()
            check.stop()
            publisher.close()

    worker_ready.connect(on_ready, weak=False)
    task_postrun.connect(on_task_done, weak=False)
    worker_shutting_down.connect(on_shutting_down, weak=False)
    worker_shutdown.connect(on_shutdown, weak=False)
