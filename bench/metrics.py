"""`GET /metrics` with 100 jobs running: scrape latency on a real API process.

Submits `--jobs` TTS jobs (of `--items` items each) through the real API on the configured
database, marks them running as a worker's first claims would (one UPDATE of the jobs' status
and counters, so the gauges have running items to report; no worker is needed, the gauges
read only the jobs' counters), then times `--scrapes` sequential scrapes of /metrics and
prints their median and p95 against the goal (issue 13: under 50 ms with 100 jobs running).
Run with `python -m tests.services run -- python -m bench.metrics`.
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
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from bench.throughput import CLI, stop, wait_http
from jobs.migrate import upgrade_to_head
from jobs.models import Job
from jobs.settings import Settings
from jobs.status import JobStatus
from jobs.tenants import create_api_key
from storage.db import make_engine, make_session_factory
from storage.publisher import QUEUE
from tests.services import free_port

GOAL_MS = 50.0


def submit_jobs(client: httpx.Client, jobs: int, items: int) -> list[str]:
    ids = []
    for n in range(jobs):
        body = {
            "kind": "tts",
            "provider": "local",
            "items": [{"text": f"Job {n}, line {i}."} for i in range(items)],
        }
        response = client.post("/v1/jobs", json=body)
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])
    return ids


def mark_running(database_url: str, ids: list[str]) -> None:
    """Each job running with two items claimed, as a worker's first claims leave it."""
    sessions = make_session_factory(make_engine(database_url))
    with sessions() as session:
        session.execute(
            update(Job)
            .where(Job.id.in_(ids))
            .values(status=JobStatus.RUNNING, queued=Job.queued - 2, running=Job.running + 2)
        )
        session.commit()


def scrape_ms(client: httpx.Client) -> tuple[float, str]:
    began = time.perf_counter()
    response = client.get("/metrics")
    elapsed = (time.perf_counter() - began) * 1000
    assert response.status_code == 200, response.text
    return elapsed, response.text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--items", type=int, default=200, help="items per job")
    parser.add_argument("--scrapes", type=int, default=100)
    args = parser.parse_args()
    settings = Settings()
    upgrade_to_head(settings.database_url)
    broker = redis.Redis.from_url(str(settings.broker_url))
    key = create_api_key(make_session_factory(make_engine(settings.database_url)), "metrics")
    port = free_port()
    logs = Path(tempfile.mkdtemp(prefix="sb-metrics-"))
    with (logs / "api.log").open("ab") as log:
        api = subprocess.Popen([CLI, "api", "--port", str(port)], stdout=log, stderr=log)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        client = httpx.Client(
            base_url=f"http://127.0.0.1:{port}",
            timeout=60,
            headers={"Authorization": f"Bearer {key}"},
        )
        started = time.perf_counter()
        ids = submit_jobs(client, args.jobs, args.items)
        mark_running(settings.database_url, ids)
        submitted_s = time.perf_counter() - started
        for _ in range(10):  # warm up: connections, statement cache
            scrape_ms(client)
        timings, text = [], ""
        for _ in range(args.scrapes):
            elapsed, text = scrape_ms(client)
            timings.append(elapsed)
        running = sum(
            s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
            if s.name == "speechbatch_jobs" and s.labels.get("status") == "running"
        )
        median, p95 = statistics.median(timings), statistics.quantiles(timings, n=20)[18]
        dialect = settings.database_url.split(":", 1)[0]
        print(f"metrics: GET /metrics, {args.scrapes} sequential scrapes on {dialect}")
        print(
            f"  {args.jobs} jobs x {args.items} items submitted in {submitted_s:.1f} s; "
            f"/metrics reports {running:g} jobs running; {len(text)} bytes per scrape"
        )
        print(
            f"  median {median:.1f} ms, p95 {p95:.1f} ms, max {max(timings):.1f} ms "
            f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)"
        )
        print(f"  goal < {GOAL_MS:g} ms (p95): {'met' if p95 < GOAL_MS else 'NOT met'}")
    finally:
        stop(api)
        broker.delete(QUEUE)


if __name__ == "__main__":
    main()
