"""Bare Celery: a no-op task on the same broker settings and pool as speechbatch's workers.

The reference for orchestration overhead: each task only INCRs a Redis counter so the
benchmark can see when all of them ran (there is no result backend, as in speechbatch).
"""

from __future__ import annotations

import os

import redis
from celery import Celery

from storage.publisher import celery_config

BROKER = os.environ["SPEECHBATCH_BROKER_URL"]
COUNTER = "bench:noop:done"
app = Celery("bench-noop")
app.conf.update(celery_config(BROKER))
app.conf.task_default_queue = "bench-noop"
_counter = redis.Redis.from_url(BROKER)


@app.task(name="bench.noop", ignore_result=True)
def noop(item_id: int) -> None:
    _counter.incr(COUNTER)
