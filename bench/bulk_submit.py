"""Bulk submit: a 100,000-item TTS job through the real API, then GET latency while it runs.

Reports (1) seconds to the 202 and whether every item id is already in the broker, (2) the
same publishing done naively, one Celery `send_task` per item, measured in this run on a
10,000-id sample and scaled, and (3) p50/p99 of GET /v1/jobs/{id} while a worker processes.
Run with `make bench-bulk` (services are started for it).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import redis

from bench.throughput import CLI, KEY, wait_http
from jobs.migrate import upgrade_to_head
from jobs.publisher import QUEUE, CeleryPublisher, send_items
from jobs.service import create_api_key
from jobs.settings import Settings
from storage.db import make_engine, make_session_factory
from tests.services import free_port


def naive_publish_seconds(broker_url: str, sample: int) -> float:
    """Seconds for `sample` one-at-a-time send_task calls (the naive loop)."""
    publisher = CeleryPublisher(broker_url)
    started = time.perf_counter()
    for item_id in range(sample):
        send_items(publisher.app, [item_id])
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--poll-seconds", type=float, default=15.0)
    args = parser.parse_args()
    settings = Settings()
    upgrade_to_head(settings.database_url)
    broker = redis.Redis.from_url(str(settings.broker_url))
    broker.delete(QUEUE)
    key = create_api_key(make_session_factory(make_engine(settings.database_url)), "bulk")
    api_port, emulator_port = free_port(), free_port()
    env = {
        **os.environ,
        "SLNG_API_KEY": KEY,
        "EMULATOR_API_KEYS": KEY,
        "SPEECHBATCH_SLNG_BASE_URL": f"http://127.0.0.1:{emulator_port}/slng",
    }
    logs = Path(tempfile.mkdtemp(prefix="sb-bulk-"))
    procs = []

    def spawn(name: str, *argv: str) -> None:
        with (logs / f"{name}.log").open("ab") as log:
            procs.append(subprocess.Popen([CLI, *argv], env=env, stdout=log, stderr=log))

    try:
        spawn("api", "api", "--port", str(api_port))
        spawn("emulator", "emulator", "--port", str(emulator_port), "--latency-ms", "100")
        wait_http(f"http://127.0.0.1:{api_port}/healthz")
        body = {
            "kind": "tts",
            "provider": "slng",
            "items": [
                {"text": f"Line {n} of the long e-learning script."} for n in range(args.items)
            ],
        }
        client = httpx.Client(
            base_url=f"http://127.0.0.1:{api_port}",
            timeout=120,
            headers={"Authorization": f"Bearer {key}"},
        )
        started = time.perf_counter()
        response = client.post("/v1/jobs", json=body)
        accepted = time.perf_counter() - started
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        published = broker.llen(QUEUE)

        spawn("worker", "worker", "--concurrency", "16")
        latencies = []
        deadline = time.monotonic() + args.poll_seconds
        while time.monotonic() < deadline:
            began = time.perf_counter()
            assert client.get(f"/v1/jobs/{job_id}").status_code == 200
            latencies.append((time.perf_counter() - began) * 1000)
            time.sleep(0.02)
        done = client.get(f"/v1/jobs/{job_id}").json()["counts"]["succeeded"]
        health = []
        for _ in range(200):
            began = time.perf_counter()
            client.get("/healthz")
            health.append((time.perf_counter() - began) * 1000)

        sample = 10_000
        broker.delete(QUEUE)
        naive = naive_publish_seconds(str(settings.broker_url), sample) * args.items / sample
        broker.delete(QUEUE)
        q = statistics.quantiles(latencies, n=100)
        print(f"bulk submit: {args.items} items")
        print(f"  202 after {accepted:.2f} s; {published} of {args.items} ids in the broker at 202")
        print(
            f"  naive send_task loop for the same ids: {naive:.1f} s "
            f"(measured on {sample}, scaled); ratio {accepted / naive:.2f}"
        )
        print(
            f"  GET /v1/jobs/{{id}} while running ({len(latencies)} polls, {done} items done): "
            f"p50 {q[49]:.1f} ms, p99 {q[98]:.1f} ms; /healthz p99 "
            f"{statistics.quantiles(health, n=100)[98]:.1f} ms"
        )
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        broker.delete(QUEUE)


if __name__ == "__main__":
    main()
