"""Local mode: the same pipeline, run in-process by a small thread pool (no broker).

Items are "published" into an `InMemoryPublisher`; runner threads take each id once it is
due (countdown retries included), and a sweeper thread covers long backoffs and expired
leases, exactly as beat does beside a Celery deployment.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from storage.publisher import InMemoryPublisher
from workers.pipeline import run_item
from workers.runtime import Runtime
from workers.sweeper import Chore, run_sweeper

log = logging.getLogger(__name__)


class LocalRunner:
    """`threads` threads running the ids `publisher` hands out, plus a sweeper thread."""

    def __init__(
        self,
        runtime: Runtime,
        publisher: InMemoryPublisher,
        *,
        threads: int,
        chores: Sequence[Chore] = (),
    ) -> None:
        """`chores` run beside the sweep, as beat's do (local mode: upload retention)."""
        self.runtime, self.publisher, self.threads = runtime, publisher, threads
        self.chores = chores
        self._stop = threading.Event()
        self._running: list[threading.Thread] = []

    def start(self, *, sweep_interval_s: float = 5.0) -> None:
        for n in range(self.threads):
            thread = threading.Thread(target=self._work, name=f"local-worker-{n}", daemon=True)
            thread.start()
            self._running.append(thread)
        sweeper = threading.Thread(
            target=run_sweeper,
            args=(self.runtime.ledger,),
            kwargs={
                "interval_s": sweep_interval_s,
                "stale_s": self.runtime.config.lease_s,
                "stop": self._stop,
                "chores": self.chores,
            },
            name="local-sweeper",
            daemon=True,
        )
        sweeper.start()
        self._running.append(sweeper)

    def _work(self) -> None:
        while not self._stop.is_set():
            item_id = self.publisher.take(timeout_s=0.2)
            if item_id is None:
                continue
            try:
                run_item(self.runtime, item_id)
            except Exception:  # a DB blip must not kill the thread; the sweeper re-runs it
                # Its job and provider are not at hand: run_item raised before or after them.
                log.exception("local worker failed on item %s", item_id, extra={"item_id": item_id})

    def stop(self) -> None:
        self._stop.set()
        for thread in self._running:
            thread.join(timeout=5)
