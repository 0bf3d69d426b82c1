"""The publisher seam: handing item ids to whatever runs items, by task name.

`Publisher` is what the API, the ledger and the sweeper code against. `CeleryPublisher` writes
to the Redis broker (the API never imports workers/, it names the task); `InMemoryPublisher`
keeps ids in this process, for local mode and tests.

`celery_config` is the one place the Celery/Redis delivery settings live, shared by the
API's publisher and the worker app, so the visibility timeout can never disagree.

Immediate messages for many items are written by `bulk_messages` + pipelined LPUSH: kombu
spends ~360 µs of Python per `send_task`, so a 100k-item job took 36 s to publish. The
messages are the ones kombu writes for this queue (Celery task protocol 2, JSON, base64
body), each with its own task id and delivery tag; a test compares them field by field.

A big batch goes as messages of up to `IDS_PER_MESSAGE` ids (`message_groups`): a worker
spends about as much CPU taking one message off the broker as on an item's own claim and
outcome (bench/overhead.py), so grouping divides that cost. Groups shrink toward the end of
a batch, to single ids for its last `SPREAD`: a group is never bigger than the ids behind it
divided by `SPREAD`, so while a thread works through its group one item after another, up
to `SPREAD` other threads still find work, and the job does not end waiting on a few groups.
"""

from __future__ import annotations

import base64
import heapq
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import redis
from celery import Celery

TASK_PROCESS_ITEM = "speechbatch.process_item"
TASK_PROCESS_ITEMS = "speechbatch.process_items"  # several ids, run one after another
TASK_EXPAND_ARCHIVE = "speechbatch.expand_archive"  # list an archive job's prefix into items
IDS_PER_MESSAGE = 16
SPREAD = 32
QUEUE = "speechbatch"
VISIBILITY_TIMEOUT_S = 3600
# A countdown longer than the visibility timeout makes Redis redeliver the message again and
# again (kombu#337); anything past a tenth of it waits in the database for the sweeper instead.
MAX_COUNTDOWN_S = VISIBILITY_TIMEOUT_S / 10
# Redis lists kombu uses for one queue under the default priority steps [0, 3, 6, 9].
_PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")


class Publisher(Protocol):
    """Delivers item ids to runners; a lost or repeated delivery is harmless (design §1)."""

    def publish(self, ids: Sequence[int], countdown: float = 0.0) -> None:
        """Deliver `ids` now, or after `countdown` seconds (at most MAX_COUNTDOWN_S)."""

    def depth(self) -> int:
        """How many deliveries wait to be taken (the sweeper re-publishes only at 0)."""

    def start_expansion(self, job_id: str) -> None:
        """Ask for an archive job's listing to go on (`workers.expand`); losing the message
        is harmless: beat resumes expansions nobody holds."""

    def ping(self) -> None:
        """Raise unless the broker answers (for /healthz)."""

    def close(self) -> None:
        """Release connections."""


def celery_config(broker_url: str) -> dict[str, Any]:
    """Delivery settings: at-least-once with late acks; the database dedups (design §1).

    The socket settings bound how long a silent broker (half-open TCP, celery#9705) can stall
    a worker. Kombu runs some Redis calls synchronously on the worker's event loop (binding
    refresh, unacked restore), and each waits `socket_timeout` per attempt on a dead flow;
    redis-py's timeout retry (on a fresh socket, which is what heals a dead flow) doubles that
    per layer. Measured in tests/chaos (60 s black hole, then the old flows stay dead): with
    10 s, workers consumed again ~22 s after the network came back; with 5 s, ~12 s. 5 s is
    still far above any reply time of the small commands a worker sends. BRPOP itself is
    checked by kombu: no reply within 1 s + `health_check_interval` drops the connection.
    Keepalive probes let the kernel end idle flows that a NAT or firewall has forgotten,
    before a command waits on them (the chaos proxy cannot show this: its kernel ACKs).
    """
    keepalive = {  # idle 30 s, then 3 probes 10 s apart: a dead idle flow ends within a minute
        getattr(socket, name): value
        for name, value in (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3))
        if hasattr(socket, name)
    }
    transport = {
        "visibility_timeout": VISIBILITY_TIMEOUT_S,
        "socket_timeout": 5,
        "socket_connect_timeout": 3,
        "socket_keepalive": True,
        "socket_keepalive_options": keepalive,
        "retry_on_timeout": True,
        "health_check_interval": 5,
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
    if countdown > MAX_COUNTDOWN_S:
        raise ValueError(
            f"countdown {countdown:.0f} s exceeds {MAX_COUNTDOWN_S:.0f} s (a tenth of the broker's "
            "visibility timeout); leave the item to the sweeper instead"
        )
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


_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
BULK_BATCH = 2000


def message_groups(ids: Sequence[int]) -> list[list[int]]:
    """`ids` in order, cut into the groups that travel as one message each: at most
    IDS_PER_MESSAGE ids, and at most 1/SPREAD of the ids after the group."""
    groups, at = [], 0
    while at < len(ids):
        size = max(1, min(IDS_PER_MESSAGE, (len(ids) - at) // (SPREAD + 1)))
        groups.append(list(ids[at : at + size]))
        at += size
    return groups


def task_call(group: Sequence[int]) -> tuple[str, list[Any]]:
    """The task name and arguments that run `group`: `process_item(id)` for one id."""
    if len(group) == 1:
        return TASK_PROCESS_ITEM, [group[0]]
    return TASK_PROCESS_ITEMS, [list(group)]


def bulk_messages(groups: Sequence[Sequence[int]], *, reply_to: str, origin: str) -> list[str]:
    """Celery protocol-2 messages running each group, as kombu's Redis channel stores them."""
    messages = []
    for group in groups:
        task_id = str(uuid.uuid4())
        task, args = task_call(group)
        body = json.dumps([args, {}, _EMBED]).encode()
        messages.append(
            json.dumps(
                {
                    "body": base64.b64encode(body).decode(),
                    "content-encoding": "utf-8",
                    "content-type": "application/json",
                    "headers": {
                        "lang": "py",
                        "task": task,
                        "id": task_id,
                        "shadow": None,
                        "eta": None,
                        "expires": None,
                        "group": None,
                        "group_index": None,
                        "retries": 0,
                        "timelimit": [None, None],
                        "root_id": task_id,
                        "parent_id": None,
                        "argsrepr": repr(args),
                        "kwargsrepr": "{}",
                        "origin": origin,
                        "ignore_result": None,
                        "replaced_task_nesting": 0,
                        "stamped_headers": None,
                        "stamps": {},
                    },
                    "properties": {
                        "correlation_id": task_id,
                        "reply_to": reply_to,
                        "delivery_mode": 2,
                        "delivery_info": {"exchange": "", "routing_key": QUEUE},
                        "priority": 0,
                        "body_encoding": "base64",
                        "delivery_tag": str(uuid.uuid4()),
                    },
                }
            )
        )
    return messages


def queue_depth(app: Celery) -> int:
    """Messages waiting in the broker for our queue (all priority lists)."""
    with app.connection_for_write() as conn:
        client = conn.default_channel.client
        return sum(int(client.llen(QUEUE + suffix)) for suffix in _PRIORITY_SUFFIXES)


class CeleryPublisher:
    """A producer-only Celery app bound to the broker (immediate batches go as one LPUSH)."""

    def __init__(self, broker_url: str) -> None:
        self.app = Celery("speechbatch-api", set_as_current=False)
        self.app.conf.update(celery_config(broker_url))
        self.redis = redis.Redis.from_url(broker_url, socket_timeout=10, socket_connect_timeout=5)
        self.reply_to = str(uuid.uuid4())
        self.origin = f"gen{os.getpid()}@{socket.gethostname()}"

    def publish(self, ids: Sequence[int], countdown: float = 0.0) -> None:
        if countdown > 0 or len(ids) < 2:
            send_items(self.app, ids, countdown)
            return
        groups = message_groups(ids)
        for start in range(0, len(groups), BULK_BATCH):
            chunk = bulk_messages(
                groups[start : start + BULK_BATCH], reply_to=self.reply_to, origin=self.origin
            )
            self.redis.lpush(QUEUE, *chunk)

    def depth(self) -> int:
        return queue_depth(self.app)

    def start_expansion(self, job_id: str) -> None:
        self.app.send_task(TASK_EXPAND_ARCHIVE, args=[job_id], queue=QUEUE, retry=False)

    def ping(self) -> None:
        with self.app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)

    def close(self) -> None:
        self.redis.close()
        self.app.close()


class InMemoryPublisher:
    """Ids kept in this process: `take` hands out each one once it is due.

    Local mode's runner threads `take` from it; tests read `published`, every (id, countdown)
    ever handed in. Countdowns wait in a heap, so nothing needs a timer thread.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.published: list[tuple[int, float]] = []
        self.expansions: list[str] = []
        self._clock = clock
        self._due: list[tuple[float, int, int]] = []  # (due, order, id)
        self._order = 0
        self._ready = threading.Condition()

    @property
    def ids(self) -> list[int]:
        return [item_id for item_id, _ in self.published]

    def publish(self, ids: Sequence[int], countdown: float = 0.0) -> None:
        due = self._clock() + max(countdown, 0.0)
        with self._ready:
            for item_id in ids:
                self.published.append((item_id, countdown))
                heapq.heappush(self._due, (due, self._order, item_id))
                self._order += 1
            self._ready.notify_all()

    def take(self, timeout_s: float) -> int | None:
        """The next due id, waiting up to `timeout_s` for one; None when none became due."""
        deadline = self._clock() + timeout_s
        with self._ready:
            while True:
                now = self._clock()
                if self._due and self._due[0][0] <= now:
                    return heapq.heappop(self._due)[2]
                left = deadline - now
                if left <= 0:
                    return None
                wait = min(left, self._due[0][0] - now) if self._due else left
                self._ready.wait(wait)

    def depth(self) -> int:
        with self._ready:
            now = self._clock()
            return sum(1 for due, _, _ in self._due if due <= now)

    def start_expansion(self, job_id: str) -> None:
        """Recorded in `expansions`; local mode runs them itself (speechbatch.local)."""
        with self._ready:
            self.expansions.append(job_id)

    def ping(self) -> None:
        """Always reachable."""

    def close(self) -> None:
        """Nothing to release."""
