"""Publishing item ids to the Celery broker by task name (the API never imports workers/).

`celery_config` is the one place the Celery/Redis delivery settings live, shared by the
API's publisher and the worker app, so the visibility timeout can never disagree.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from celery import Celery

TASK_PROCESS_ITEM = "speechbatch.process_item"
QUEUE = "speechbatch"
VISIBILITY_TIMEOUT_S = 3600
# Redis lists kombu uses for one queue under the default priority steps [0, 3, 6, 9].
_PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")


def celery_config(broker_url: str) -> dict[str, Any]:
    """Delivery settings: at-least-once with late acks; the database dedups (design §1)."""
    transport = {
        "visibility_timeout": VISIBILITY_TIMEOUT_S,
        "socket_timeout": 10,
        "socket_connect_timeout": 5,
        "retry_on_timeout": True,
        "health_check_interval": 10,
    }
    return {
        "broker_url": broker_url,
        "broker_transport_options": transport,
        "result_backend": None,
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "worker_pool": "threads",
        "task_default_queue": QUEUE,
        "task_serializer": "json",
        "accept_content": ["json"],
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "worker_send_task_events": False,
        "task_send_sent_event": False,
        "worker_hijack_root_logger": False,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "enable_utc": True,
    }


def send_items(app: Celery, ids: Sequence[int], countdown: float = 0.0) -> None:
    """Publish one message per item id over one pooled producer connection."""
    options: dict[str, Any] = {
        "queue": QUEUE,
        "retry": True,
        "retry_policy": {"max_retries": 2, "interval_start": 0, "interval_step": 0.5},
    }
    if countdown > 0:
        options["countdown"] = countdown
    with app.producer_or_acquire() as producer:
        for item_id in ids:
            app.send_task(TASK_PROCESS_ITEM, args=[item_id], producer=producer, **options)


def queue_depth(app: Celery) -> int:
    """Messages waiting in the broker for our queue (all priority lists)."""
    with app.connection_for_write() as conn:
        client = conn.default_channel.client
        return sum(int(client.llen(QUEUE + suffix)) for suffix in _PRIORITY_SUFFIXES)


class CeleryPublisher:
    """A producer-only Celery app bound to the broker; call it with (ids, countdown)."""

    def __init__(self, broker_url: str) -> None:
        self.app = Celery("speechbatch-api", set_as_current=False)
        self.app.conf.update(celery_config(broker_url))

    def __call__(self, ids: Sequence[int], countdown: float = 0.0) -> None:
        send_items(self.app, ids, countdown)

    def depth(self) -> int:
        return queue_depth(self.app)

    def ping(self) -> None:
        with self.app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
