"""`speechbatch worker-check` runs a canary task on one named worker through the real Redis.

Two real `speechbatch worker` processes share one Redis: one with the default node name
(celery@<host>, what the Docker healthcheck checks) and one started with `--name`.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.publisher import CeleryPublisher
from tests.e2e.stack import CLI, Proc, Stack
from workers.canary import KEY_PREFIX, SEEN_TTL_S, check_worker

pytestmark = pytest.mark.integration
NAMED = "canary-a@%h"
READY_S = 60.0


def wait_ready(proc: Proc) -> None:
    deadline = time.monotonic() + READY_S
    while " ready." not in proc.log_path.read_text(errors="replace"):
        assert proc.popen is not None
        assert proc.popen.poll() is None, f"{proc.name} exited:\n{proc.tail()}"
        assert time.monotonic() < deadline, f"{proc.name} not ready:\n{proc.tail()}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def workers(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Two idle workers (default name and `--name canary-a@%h`) on the test Redis."""
    workdir: Path = tmp_path_factory.mktemp("canary")
    env = {
        **os.environ,
        "SPEECHBATCH_BROKER_URL": redis_url,
        "SPEECHBATCH_DATABASE_URL": f"sqlite:///{workdir / 'unused.db'}",
    }
    stack = Stack(env=env, workdir=workdir, api_url="", emulator_url="")
    try:
        for name, extra in (("worker-default", []), ("worker-named", ["--name", NAMED])):
            proc = Proc(name, [CLI, "worker", "--concurrency", "2", *extra], env, workdir)
            proc.start()
            stack.procs.append(proc)
        for proc in stack.procs:
            wait_ready(proc)
        yield stack
    finally:
        stack.stop()


def named_node() -> str:
    return NAMED.replace("%h", socket.gethostname())


def test_check_without_node_reaches_the_local_default_worker(workers: Stack) -> None:
    """With no --node the check runs the canary on celery@<this host> and exits 0."""
    done = workers.run_cli("worker-check", "--timeout", "20")
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(
        rf"celery@{re.escape(socket.gethostname())} ran the canary in \d+\.\d\ds\n", done.stdout
    )


def test_check_reaches_exactly_the_named_worker(workers: Stack, redis_url: str) -> None:
    """The canary goes to the one worker named by --node: that node is what reports it ran."""
    publisher = CeleryPublisher(redis_url)
    try:
        result = check_worker(publisher.app, publisher.redis, named_node(), timeout_s=20)
        keys = list(publisher.redis.scan_iter(KEY_PREFIX + "*"))
        seen = {publisher.redis.get(key): publisher.redis.ttl(key) for key in keys}
    finally:
        publisher.redis.close()
        publisher.app.close()
    assert result.ok, result.message
    assert result.message.startswith(f"{named_node()} ran the canary")
    assert 0 < seen[named_node().encode()] <= SEEN_TTL_S  # the reply expires by itself


def test_check_of_an_unknown_node_fails_with_exit_1(workers: Stack) -> None:
    """A node nobody runs fails the CLI check after --timeout: exit 1 and a one-line reason."""
    began = time.monotonic()
    done = workers.run_cli("worker-check", "--node", "nobody@nowhere", "--timeout", "1")
    assert done.returncode == 1
    assert done.stderr.startswith("nobody@nowhere did not run the canary within 1s: ")
    assert done.stderr.count("\n") == 1
    assert time.monotonic() - began < 15


def test_unconsumed_canary_is_taken_back_out_of_the_queue(workers: Stack, redis_url: str) -> None:
    """A canary that waited in a dead node's queue is removed when the check gives up."""
    queue = "nobody@nowhere.dq2"
    publisher = CeleryPublisher(redis_url)
    waiting: list[int] = []

    def sleep(seconds: float) -> None:
        waiting.append(publisher.redis.llen(queue))
        time.sleep(seconds)

    try:
        result = check_worker(publisher.app, publisher.redis, "nobody@nowhere", 0.3, sleep=sleep)
        left = publisher.redis.llen(queue)
    finally:
        publisher.redis.close()
        publisher.app.close()
    assert not result.ok
    assert waiting and set(waiting) == {1}  # it was really queued there while the check waited
    assert left == 0


def test_frozen_worker_is_alive_but_fails_the_canary_until_it_thaws(workers: Stack) -> None:
    """A SIGSTOPped worker is still a live process yet fails the check; after SIGCONT it passes."""
    proc = next(p for p in workers.procs if p.name == "worker-named")
    assert proc.popen is not None
    proc.signal(signal.SIGSTOP)
    try:
        frozen = workers.run_cli("worker-check", "--node", named_node(), "--timeout", "2")
        assert proc.popen.poll() is None  # process liveness would call this worker healthy
    finally:
        proc.signal(signal.SIGCONT)
    assert frozen.returncode == 1, frozen.stdout
    thawed = workers.run_cli("worker-check", "--node", named_node(), "--timeout", "20")
    assert thawed.returncode == 0, thawed.stderr
