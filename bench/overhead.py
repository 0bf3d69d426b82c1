"""Orchestration overhead: the full pipeline at provider latency 0 vs bare Celery no-ops.

Both run N tasks through one worker process with the threads pool at the same concurrency
on the same Redis. speechbatch's task claims the item, calls the emulator (0 ms), converts
the audio, PUTs it to S3 and records the outcome; the bare task INCRs a counter. Prints
items/s for each and their ratio (goal: >= 0.5).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx
import redis

from bench.noop_app import COUNTER
from bench.noop_app import app as noop_app
from bench.throughput import CLI, KEY, start, wait_http
from jobs.migrate import upgrade_to_head
from jobs.publisher import CeleryPublisher
from jobs.schemas import JobCreate
from jobs.service import ensure_tenant, get_job, submit_job
from jobs.settings import Settings
from storage.db import make_engine, make_session_factory
from tests.services import free_port


def bare_celery_rate(items: int, concurrency: int, env: dict[str, str], logs: Path) -> float:
    client = redis.Redis.from_url(env["SPEECHBATCH_BROKER_URL"])
    client.delete(COUNTER, "bench-noop")
    with noop_app.producer_or_acquire() as producer:
        for n in range(items):
            noop_app.send_task("bench.noop", args=[n], producer=producer)
    argv = [
        str(Path(sys.executable).parent / "celery"),
        "-A",
        "bench.noop_app",
        "worker",
        "--pool=threads",
        f"--concurrency={concurrency}",
        "--loglevel=WARNING",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    worker = start(argv, env, logs / "noop-worker.log")
    try:
        while int(client.get(COUNTER) or 0) == 0:
            time.sleep(0.005)
        began = time.perf_counter()
        while int(client.get(COUNTER) or 0) < items:
            time.sleep(0.005)
        return (items - 1) / (time.perf_counter() - began)
    finally:
        worker.terminate()
        worker.wait(15)


def pipeline_rate(items: int, concurrency: int, env: dict[str, str], logs: Path) -> float:
    settings = Settings()
    sessions = make_session_factory(make_engine(settings.database_url))
    tenant = ensure_tenant(sessions, "overhead").id
    worker = start([CLI, "worker", "--concurrency", str(concurrency)], env, logs / "worker.log")
    try:
        time.sleep(3)  # connected before the clock starts
        body = JobCreate.model_validate(
            {
                "kind": "tts",
                "provider": "slng",
                "items": [{"text": f"Overhead line {n}."} for n in range(items)],
            }
        )
        job = submit_job(
            sessions,
            tenant,
            body,
            idempotency_key=None,
            publish=CeleryPublisher(str(settings.broker_url)),
            max_items=items,
        ).job
        while (job := get_job(sessions, tenant, job.id)).status in ("queued", "running"):
            time.sleep(0.1)
        assert job.status == "succeeded" and job.started_at and job.finished_at
        return items / (job.finished_at - job.started_at).total_seconds()
    finally:
        worker.terminate()
        worker.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    upgrade_to_head(Settings().database_url)
    logs = Path(tempfile.mkdtemp(prefix="sb-overhead-"))
    port = free_port()
    env = {
        **os.environ,
        "SLNG_API_KEY": KEY,
        "EMULATOR_API_KEYS": KEY,
        "SPEECHBATCH_SLNG_BASE_URL": f"http://127.0.0.1:{port}/slng",
        # Overhead, not throttling, is measured: the shared cap is the thread count.
        "SPEECHBATCH_PROVIDER_LIMITS": f"slng={args.concurrency}",
    }
    emulator = start([CLI, "emulator", "--port", str(port)], env, logs / "emulator.log")
    try:
        wait_http(f"http://127.0.0.1:{port}/_emulator/health")
        bare = bare_celery_rate(args.items, args.concurrency, env, logs)
        ours = pipeline_rate(args.items, args.concurrency, env, logs)
        httpx.delete(f"http://127.0.0.1:{port}/_emulator/requests")
    finally:
        emulator.terminate()
        emulator.wait(15)
    print(f"overhead: N={args.items}, threads pool, concurrency {args.concurrency}, latency 0")
    print(f"  bare Celery no-op   {bare:8.1f} tasks/s")
    print(f"  speechbatch item    {ours:8.1f} items/s (claim, call, convert, S3 PUT, record)")
    print(f"  ratio {ours / bare:.2f}; per-item cost {1000 / ours:.1f} ms vs {1000 / bare:.1f} ms")


if __name__ == "__main__":
    main()
