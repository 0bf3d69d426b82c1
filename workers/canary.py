"""The canary: one real task through the broker to one named worker, proving it still consumes.

A live process says nothing about a worker stuck on a dead broker connection (celery#8030,
#9705, #10205; Dispatcharr#1509: alive, but consuming nothing). So the check is a task:
`check_worker` publishes `speechbatch.canary(token)` to the worker's own direct queue
(`{node}.dq2`, consumed because workers run with `worker_direct`), the worker's pool runs it
like any item, and the task SETs `speechbatch:canary:{token}` = its node name with a short
TTL. Results are disabled by design (design §1), so that key is the reply.

The message goes straight into the queue's list (Celery's anonymous-exchange route), so the
check does not depend on exchange bindings that an empty, restarted Redis has forgotten. A
canary nobody consumed in time is taken back out of the queue, so checking a dead or
misspelt node leaves nothing behind.
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from celery import Celery
from celery.utils.nodenames import worker_direct

TASK_CANARY = "speechbatch.canary"
KEY_PREFIX = "speechbatch:canary:"
# Long enough for a slow checker to read it, short enough that keys never pile up.
SEEN_TTL_S = 300


def default_node() -> str:
    """The node name `speechbatch worker` takes on this host without `--name` (celery@%h)."""
    return f"celery@{socket.gethostname()}"


def canary_key(token: str) -> str:
    return KEY_PREFIX + token


def record_seen(client: redis.Redis[Any], token: str, node: str) -> None:
    """What the canary task does: say "`node` ran canary `token`" for SEEN_TTL_S seconds."""
    client.set(canary_key(token), node, ex=SEEN_TTL_S)


def register_canary(app: Celery, broker_url: str) -> None:
    """Add the canary task to a worker app; it reports to the Redis at `broker_url`."""

    @app.task(name=TASK_CANARY, bind=True, ignore_result=True)  # type: ignore[untyped-decorator]
    def canary(self: Any, token: str) -> None:
        # A fresh connection each time (one every healthcheck interval): a pooled one may be
        # a flow that died in the very outage the canary is checking for, and waiting out its
        # timeout would fail a worker that is consuming again.
        with redis.Redis.from_url(
            broker_url, socket_timeout=5, socket_connect_timeout=5, single_connection_client=True
        ) as client:
            record_seen(client, str(token), str(self.request.hostname))


@dataclass(frozen=True)
class CanaryResult:
    node: str
    ok: bool
    seconds: float  # from publishing until the reply was seen (or the checker gave up)
    message: str
    # The checker itself could not reach the broker: this says nothing about the worker.
    broker_down: bool = False


def check_worker(
    app: Celery,
    client: redis.Redis[Any],
    node: str,
    timeout_s: float,
    *,
    poll_s: float = 0.05,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> CanaryResult:
    """Send a canary to `node`'s direct queue and wait up to `timeout_s` for it to run."""
    token = uuid.uuid4().hex
    queue = worker_direct(node)
    began = clock()
    try:
        # declare=[]: the list is all the route needs; no binding is written for a typo'd node.
        app.send_task(TASK_CANARY, args=[token], queue=queue, declare=[], task_id=token)
    except Exception as error:  # kombu raises its own and redis-py's errors here
        message = f"cannot publish to the broker: {error}"
        return CanaryResult(node, False, clock() - began, message, broker_down=True)
    while True:
        try:
            seen = client.get(canary_key(token))
        except redis.RedisError as error:
            message = f"broker stopped answering: {error}"
            return CanaryResult(node, False, clock() - began, message, broker_down=True)
        elapsed = clock() - began
        if seen is not None:
            return CanaryResult(
                node, True, elapsed, f"{seen.decode()} ran the canary in {elapsed:.2f}s"
            )
        if elapsed >= timeout_s:
            withdraw(client, queue.name, token)
            return CanaryResult(
                node,
                False,
                elapsed,
                f"{node} did not run the canary within {timeout_s:g}s: it is not running, not "
                "consuming (hung or cut off from the broker), or not named so",
            )
        sleep(poll_s)


def withdraw(client: redis.Redis[Any], queue: str, token: str) -> bool:
    """Remove canary `token` from `queue` if it is still waiting there; True if it was."""
    try:
        for raw in client.lrange(queue, 0, -1):
            if json.loads(raw).get("headers", {}).get("id") == token:
                return bool(client.lrem(queue, 1, raw))
    except (redis.RedisError, ValueError):
        pass  # best effort: a leftover canary is tiny and runs when the node comes back
    return False
