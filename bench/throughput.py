"""Provider-bound throughput: N TTS items, emulator latency L, concurrency cap C, one worker
(or `--workers` of them sharing the cap through the throttle).

Prints achieved items/s as a ratio to the Little's-law ceiling C/L and to a plain
asyncio+httpx script making the same calls in the same run. Needs Redis, a database and S3
in the environment: `make bench` provides them (python -m tests.services run -- ...).

    python bench/throughput.py --items 1000 --latency-ms 100 --cap 16
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from bench.asyncio_reference import reference_rate
from jobs.ledger import ItemLedger
from jobs.migrate import upgrade_to_head
from jobs.models import Attempt, Item
from jobs.schemas import JobCreate
from jobs.service import get_job, submit_job
from jobs.settings import Settings
from jobs.tenants import ensure_tenant
from storage.db import open_database
from storage.publisher import CeleryPublisher
from tests.services import free_port
from workers.celery_app import WARMED_UP

CLI = str(Path(sys.executable).parent / "speechbatch")
KEY = "sk-bench-0123456789"


def start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as handle:
        return subprocess.Popen(argv, env=env, stdout=handle, stderr=subprocess.STDOUT)


def stop(*procs: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM each started process in turn, SIGKILL one that has not exited after 15 s."""
    for proc in procs:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


def wait_warm(*logs: Path, timeout: float = 120) -> None:
    """Until each worker has logged that it is warmed up (pools open, heap frozen): a fixed
    sleep measured a worker still importing when the machine was slow."""
    deadline = time.monotonic() + timeout
    for log in logs:
        while WARMED_UP not in log.read_text(errors="replace"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the worker logging to {log} did not warm up")
            time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--cap", type=int, default=16, help="emulator concurrency cap C")
    parser.add_argument(
        "--worker-concurrency",
        type=int,
        default=None,
        help="worker threads (default: none given, so the worker derives its own from the "
        "provider limits, as a user's `speechbatch worker` does)",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="worker processes, each with those threads"
    )
    args = parser.parse_args()
    ceiling = args.cap / (args.latency_ms / 1000)

    workdir = Path(tempfile.mkdtemp(prefix="sb-bench-"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "SLNG_API_KEY": KEY,
        "EMULATOR_API_KEYS": KEY,
        "SPEECHBATCH_SLNG_BASE_URL": f"{base}/slng",
        # The provider's cap C, as a user would configure it for their plan.
        "SPEECHBATCH_PROVIDER_LIMITS": f"slng={args.cap}",
    }
    settings = Settings()
    upgrade_to_head(settings.database_url)
    emulator = start(
        [
            CLI,
            "emulator",
            "--port",
            str(port),
            "--latency-ms",
            str(args.latency_ms),
            "--concurrency",
            str(args.cap),
        ],
        env,
        workdir / "emulator.log",
    )
    workers: list[subprocess.Popen[bytes]] = []
    try:
        wait_http(f"{base}/_emulator/health")
        reference = reference_rate(f"{base}/slng", KEY, items=args.items, concurrency=args.cap)
        httpx.delete(f"{base}/_emulator/requests")

        threads = ["--concurrency", str(args.worker_concurrency)] if args.worker_concurrency else []
        for n in range(args.workers):
            name = ["--name", f"bench{n}@%h"]
            workers.append(start([CLI, "worker", *threads, *name], env, workdir / f"w{n}.log"))
        ledger = ItemLedger(
            open_database(settings.database_url), CeleryPublisher(str(settings.broker_url))
        )
        sessions = ledger.db.sessions
        tenant = ensure_tenant(sessions, "bench").id
        run = uuid.uuid4().hex[:8]  # lines unique to this job: a repeated line would be reused
        body = JobCreate.model_validate(
            {
                "kind": "tts",
                "provider": "slng",
                "items": [
                    {"text": f"Benchmark line {n} of bulk job {run}."} for n in range(args.items)
                ],
            }
        )
        wait_warm(*(workdir / f"w{n}.log" for n in range(args.workers)))
        submitted = submit_job(ledger, tenant, body, idempotency_key=None, max_items=args.items)
        job_id = submitted.job.id

        while True:
            job = get_job(sessions, tenant, job_id)
            if job.status not in ("queued", "running"):
                break
            time.sleep(0.2)
        assert job.started_at and job.finished_at
        elapsed = (job.finished_at - job.created_at).total_seconds()
        achieved = args.items / elapsed
        stats = httpx.get(f"{base}/_emulator/stats").json()
        rejected = stats["by_status"].get("429", 0)
        print(
            f"throughput: N={args.items} L={args.latency_ms:.0f}ms C={args.cap} "
            f"workers={args.workers} x threads={args.worker_concurrency or 'default'} "
            f"status={job.status}"
        )
        print(f"  speechbatch     {achieved:8.1f} items/s  ({elapsed:.1f} s submit→done)")
        print(f"  asyncio script  {reference:8.1f} items/s")
        print(f"  ceiling C/L     {ceiling:8.1f} items/s")
        print(
            f"  ratio to ceiling {achieved / ceiling:.2f}, to asyncio reference "
            f"{achieved / reference:.2f}; emulator max in flight {stats['max_in_flight']}, "
            f"429s {rejected}"
        )
        print_timeline(sessions, job, args.cap, args.latency_ms)
    finally:
        stop(*workers, emulator)


def print_timeline(sessions: Any, job: Any, cap: int, latency_ms: float) -> None:
    """Where the time between POST and the last item went: the wait for the first claim and
    the first call, the mean number of threads in a call or waiting for its permit (over C)
    while calls ran, and the tail after the last call."""
    with sessions() as session:
        first, last, busy_ms = session.execute(
            select(
                func.min(Attempt.started_at),
                func.max(Attempt.started_at),
                func.sum(Attempt.latency_ms),
            )
            .join(Item, Item.id == Attempt.item_id)
            .where(Item.job_id == job.id)
        ).one()
    calls_s = (last - first).total_seconds() + latency_ms / 1000
    print(
        f"  timeline: first claim {(job.started_at - job.created_at).total_seconds():.2f} s "
        f"and first call {(first - job.created_at).total_seconds():.2f} s after POST, "
        f"calls {calls_s:.2f} s with {busy_ms / 1000 / calls_s / cap:.2f} x C calling or waiting, "
        f"last call to done {(job.finished_at - last).total_seconds() - latency_ms / 1000:.2f} s"
    )


if __name__ == "__main__":
    main()
