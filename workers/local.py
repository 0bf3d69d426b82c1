"""Local mode: the same pipeline, run in-process by a small thread pool (no broker).

The CLI uses this when `SPEECHBATCH_API_URL` is unset: items are "published" into an
in-memory queue, countdown retries come back on timers, and a sweeper thread covers
long backoffs, exactly as the Celery deployment would.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Sequence

from workers.pipeline import run_item
from workers.runtime import Runtime
from workers.sweeper import run_sweeper

log = logging.getLogger(__name__)


class LocalRunner:
    """Threads that run published item ids. Use `publish` as the Runtime's publisher."""

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self._queue: queue.Queue[int] = queue.Queue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._timers: list[threading.Timer] = []
        self.runtime: Runtime | None = None

    def publish(self, ids: Sequence[int], countdown: float = 0.0) -> None:
        if countdown > 0:
            for item_id in ids:
                timer = threading.Timer(countdown, self._queue.put, args=(item_id,))
                timer.daemon = True
                timer.start()
                self._timers.append(timer)
        else:
            for item_id in ids:
                self._queue.put(item_id)

    def start(self, runtime: Runtime, *, sweep_interval_s: float = 5.0) -> None:
        self.runtime = runtime
        for n in range(self.concurrency):
            thread = threading.Thread(target=self._work, name=f"local-worker-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)
        sweeper = threading.Thread(
            target=run_sweeper,
            kwargs={
                "rt": runtime,
                "queue_depth": self._queue.qsize,
                "interval_s": sweep_interval_s,
                "stale_s": runtime.lease_s,
                "stop": self._stop,
            },
            name="local-sweeper",
            daemon=True,
        )
        sweeper.start()
        self._threads.append(sweeper)

    def _work(self) -> None:
        assert self.runtime is not None
        while not self._stop.is_set():
            try:
                item_id = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                run_item(self.runtime, item_id)
            except Exception:  # a DB blip must not kill the thread; the sweeper re-runs it
                log.exception("local worker failed on item %s", item_id)

    def stop(self) -> None:
        self._stop.set()
        for timer in self._timers:
            timer.cancel()
        for thread in self._threads:
            thread.join(timeout=5)
