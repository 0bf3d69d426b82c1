"""A worker's self-check against the real Redis: it exits a worker that runs no canary, only that.

`SelfCheck` is driven directly where a failure is needed (a node nobody consumes for); one real
`speechbatch worker` process shows the wiring: its self-check runs canaries on itself and
passes, Celery's own `celery -A ... inspect ping` from the README reaches it, it logs when it
has warmed up, and with SPEECHBATCH_LOG_FORMAT=json every line it logs, Celery's included, is
one JSON object.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from storage.publisher import CeleryPublisher
from tests.e2e.stack import CLI, Proc
from tests.services import free_port
from tests.unit.test_deploy_files import readme_commands
from workers.canary import KEY_PREFIX
from workers.celery_app import WARMED_UP
from workers.self_check import EXIT_STATUS, SelfCheck

pytestmark = pytest.mark.integration
NOBODY = "nobody@nowhere"


@pytest.fixture
def publisher(redis_url: str) -> Iterator[CeleryPublisher]:
    """A broker connection like the one a worker's self-check opens."""
    publisher = CeleryPublisher(redis_url)
    yield publisher
    publisher.close()


def run_until(check: SelfCheck, checks: int, *, between: float = 0.0) -> None:
    """Run `check` on its thread until it made `checks` checks (or 20 s passed), then stop it;
    with `between`, note a finished task that often meanwhile (a busy pool)."""
    check.start()
    deadline = time.monotonic() + 20
    while check.checks < checks and time.monotonic() < deadline:
        if between:
            check.task_finished()
        time.sleep(between or 0.01)
    check.stop()


def test_exits_after_three_canaries_in_a_row_ran_nowhere(publisher: CeleryPublisher) -> None:
    """With no worker consuming its queue, the exit hook is called once, after the third failure."""
    reasons: list[str] = []
    check = SelfCheck(
        publisher.app,
        publisher.redis,
        NOBODY,
        interval_s=0.01,
        timeout_s=0.2,
        on_failed=reasons.append,
    )
    check.run()  # returns once the hook was called
    assert check.checks == 3
    assert len(reasons) == 1
    assert reasons[0].startswith(f"{NOBODY} did not run the canary within 0.2s")


def test_a_busy_pool_is_not_counted_as_hung(publisher: CeleryPublisher) -> None:
    """While tasks keep finishing in the process, unanswered canaries never lead to an exit."""
    reasons: list[str] = []
    check = SelfCheck(
        publisher.app,
        publisher.redis,
        NOBODY,
        interval_s=0.01,
        timeout_s=0.2,
        on_failed=reasons.append,
    )
    run_until(check, 5, between=0.05)
    assert check.checks >= 5
    assert (reasons, check.streak) == ([], 0)


def test_an_unreachable_broker_is_not_counted() -> None:
    """A broker nobody answers on says nothing about the worker: no failure counts, no exit."""
    down = CeleryPublisher(f"redis://127.0.0.1:{free_port()}/0")
    reasons: list[str] = []
    check = SelfCheck(
        down.app, down.redis, NOBODY, interval_s=0.01, timeout_s=0.2, on_failed=reasons.append
    )
    try:
        run_until(check, 3)
    finally:
        down.close()
    assert check.checks >= 3
    assert (reasons, check.streak) == ([], 0)


def test_default_hook_ends_the_process_with_status_1(redis_url: str, tmp_path: Path) -> None:
    """Run in a thread, the self-check's default hook ends the whole process with status 1,
    after a line saying why."""
    script = (
        "import logging, sys, time\n"
        "from storage.publisher import CeleryPublisher\n"
        "from workers.self_check import SelfCheck\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "publisher = CeleryPublisher(sys.argv[1])\n"
        f"SelfCheck(publisher.app, publisher.redis, {NOBODY!r}, interval_s=0.01, timeout_s=0.2)"
        ".start()\n"
        "time.sleep(30)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, redis_url],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == EXIT_STATUS == 1, done.stderr
    assert f"worker {NOBODY} ran no canary 3 times in a row; exiting with status 1" in done.stderr


# --- one real worker process ----------------------------------------------------------------


@pytest.fixture(scope="module")
def json_worker(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    """`speechbatch worker --events` with JSON logs and a self-check every 0.3 s."""
    workdir = tmp_path_factory.mktemp("self-check")
    env = {
        **os.environ,
        "SPEECHBATCH_BROKER_URL": redis_url,
        "SPEECHBATCH_DATABASE_URL": f"sqlite:///{workdir / 'unused.db'}",
        "SPEECHBATCH_WORKER_SELF_CHECK_SECONDS": "0.3",
        "SPEECHBATCH_LOG_FORMAT": "json",
    }
    name = f"selfcheck-{uuid.uuid4().hex[:8]}@%h"
    proc = Proc(
        "worker", [CLI, "worker", "--concurrency", "2", "--name", name, "--events"], env, workdir
    )
    proc.start(lambda: " ready." in proc.log_path.read_text(errors="replace"))
    try:
        yield proc
    finally:
        proc.stop()


def node(proc: Proc) -> str:
    return proc.argv[proc.argv.index("--name") + 1].replace("%h", socket.gethostname())


def test_worker_runs_passing_canaries_on_itself(json_worker: Proc, redis_url: str) -> None:
    """Inside a real worker the self-check starts by itself and its canaries run on that worker."""
    deadline = time.monotonic() + 15
    with redis.Redis.from_url(redis_url) as client:
        while True:
            ran = [
                key
                for key in client.scan_iter(KEY_PREFIX + "*")
                if client.get(key) == node(json_worker).encode()
            ]
            if len(ran) >= 2 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    assert len(ran) >= 2, json_worker.tail()
    assert json_worker.popen is not None
    assert json_worker.popen.poll() is None


def test_readme_celery_inspect_ping_reaches_the_worker(json_worker: Proc) -> None:
    """The README's `celery -A ... inspect ping` (Celery's own tool) gets this worker's pong."""
    documented = next(
        cmd[cmd.index("celery") :]
        for cmd in readme_commands("Running the production shape")
        if "celery" in cmd
    )
    assert documented[:2] == ["celery", "-A"]
    celery = str(Path(sys.executable).parent / "celery")
    done = subprocess.run(
        [celery, *documented[1:], "--destination", node(json_worker), "--timeout", "10"],
        env=json_worker.env,
        cwd=json_worker.log_path.parent,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{node(json_worker)}: OK" in done.stdout
    assert "pong" in done.stdout


def test_json_worker_logs_one_object_per_line(json_worker: Proc) -> None:
    """With SPEECHBATCH_LOG_FORMAT=json each worker line, Celery's own included, is JSON."""
    lines = [line for line in json_worker.log_path.read_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]
    loggers = {record["logger"] for record in records}
    assert {"speechbatch.processes", "celery.apps.worker"} <= loggers, loggers
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    started = next(r for r in records if r["logger"] == "speechbatch.processes")
    assert started["message"].endswith("2 threads, task events on, beat off")


def test_worker_logs_when_warmed_up_with_its_start_up_heap_frozen(json_worker: Proc) -> None:
    """After warm-up the worker says so once (the benchmarks wait for that line), having moved
    the tens of thousands of objects start-up built out of the collector's sight."""
    deadline = time.monotonic() + 30
    while True:
        records = [
            json.loads(line)
            for line in json_worker.log_path.read_text().splitlines()
            if WARMED_UP in line
        ]
        if records or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(records) == 1, json_worker.tail()
    assert records[0]["logger"] == "workers.celery_app"
    frozen = re.fullmatch(rf"{WARMED_UP}: (\d+) start-up objects frozen", records[0]["message"])
    assert frozen is not None and int(frozen.group(1)) > 50_000, records[0]["message"]
