"""Celery task events from a real `speechbatch worker` on the real Redis: a Celery event
receiver (what Flower and `celery events` run) sees the worker's task events and heartbeats
with SPEECHBATCH_TASK_EVENTS=true, and nothing from it without."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery

from tests.e2e.stack import CLI, Proc
from workers.canary import check_worker

pytestmark = pytest.mark.integration


class Events:
    """Every event on the broker's event exchange while open, from a receiver in a thread."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        self.seen: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._receiver: Any = None

    def _run(self) -> None:
        with self.app.connection_for_read() as connection:
            self._receiver = self.app.events.Receiver(connection, handlers={"*": self._keep})
            self._receiver.capture(limit=None, timeout=None, wakeup=False)

    def _keep(self, event: dict[str, Any]) -> None:
        with self._lock:
            self.seen.append(event)

    def of(self, hostname: str) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self.seen if e.get("hostname") == hostname]

    def wait_for(self, found: Callable[[], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not found():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    @contextmanager
    def listening(self) -> Iterator[Events]:
        """Receive until the block ends, once a probe event sent now has come back."""
        thread = threading.Thread(target=self._run, daemon=True)
        thread.start()
        probe = f"probe-{uuid.uuid4().hex[:8]}@test"
        with self.app.events.default_dispatcher(hostname=probe) as dispatcher:
            # The subscription may not exist yet: send until one comes back.
            for _ in range(100):
                dispatcher.send("worker-heartbeat")
                if self.wait_for(lambda: bool(self.of(probe)), 0.1):
                    break
        assert self.of(probe), "the event receiver never started"
        try:
            yield self
        finally:
            if self._receiver is not None:
                self._receiver.should_stop = True
            thread.join(timeout=10)


@contextmanager
def worker(redis_url: str, workdir: Path, **env: str) -> Iterator[str]:
    """A real `speechbatch worker` (no self-check canaries); yields its node name."""
    name = f"events-{uuid.uuid4().hex[:8]}@{socket.gethostname()}"
    inherited = {k: v for k, v in os.environ.items() if k != "SPEECHBATCH_TASK_EVENTS"}
    environment = {
        **inherited,
        "SPEECHBATCH_BROKER_URL": redis_url,
        "SPEECHBATCH_DATABASE_URL": f"sqlite:///{workdir / 'unused.db'}",
        "SPEECHBATCH_WORKER_SELF_CHECK_SECONDS": "0",
        **env,
    }
    proc = Proc(
        "worker", [CLI, "worker", "--concurrency", "2", "--name", name], environment, workdir
    )
    proc.start(lambda: " ready." in proc.log_path.read_text(errors="replace"))
    try:
        yield name
    finally:
        proc.stop()


def ran_canary(app: Celery, redis_url: str, node: str) -> None:
    """Run one real task on `node` (the canary) and see it done."""
    with redis.Redis.from_url(redis_url) as client:
        result = check_worker(app, client, node, timeout_s=20)
    assert result.ok, result.message


def test_with_task_events_a_receiver_sees_the_workers_tasks_and_heartbeats(
    redis_url: str, tmp_path: Path
) -> None:
    """SPEECHBATCH_TASK_EVENTS=true: the worker's heartbeats (Flower's "online") and the
    received/started/succeeded events of a task it ran reach a receiver on the broker."""
    app = Celery(broker=redis_url)
    with (
        Events(app).listening() as events,
        worker(redis_url, tmp_path, SPEECHBATCH_TASK_EVENTS="true") as node,
    ):
        assert events.wait_for(
            lambda: any(e["type"] == "worker-heartbeat" for e in events.of(node)), 10
        ), "no heartbeat from the worker"
        ran_canary(app, redis_url, node)

        # The canary's own events, by its task id: messages an earlier test of this process
        # left in the queue may reach this worker first.
        def canary_ids() -> list[str]:
            return [
                e["uuid"]
                for e in events.of(node)
                if e["type"] == "task-received" and e.get("name") == "speechbatch.canary"
            ]

        assert events.wait_for(lambda: bool(canary_ids()), 10), "no task-received for the canary"
        canary = canary_ids()[0]
        wanted = {"task-received", "task-started", "task-succeeded"}
        assert events.wait_for(
            lambda: wanted <= {e["type"] for e in events.of(node) if e.get("uuid") == canary},
            10,
        )


def test_without_task_events_the_worker_sends_none(redis_url: str, tmp_path: Path) -> None:
    """By default the worker runs a task and the same receiver sees no event from it at all
    (neither task events nor heartbeats: no broker traffic for them)."""
    app = Celery(broker=redis_url)
    with Events(app).listening() as events, worker(redis_url, tmp_path) as node:
        ran_canary(app, redis_url, node)
        time.sleep(2.5)  # past a heartbeat interval (2 s) and any event in flight
        assert events.of(node) == []
