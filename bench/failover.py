"""Failover when the primary is down for everyone: how soon items flow through the fallback,
and how many calls the primary still gets once its circuit is open.

One default worker; a TTS job of N lines on slng with `fallback: [{provider: smallest}]`;
the emulator answers every SLNG call 503 (a scripted outage) and Smallest normally, both
after L. Prints seconds from submit to the first item stored by the fallback, the job's
total time against the same job sent straight to Smallest (the reference in the same run),
and the SLNG calls made in all, before the circuit opened (the worker logs the moment) and
after it (goal: only the half-open probes, one per SPEECHBATCH open period).

    python -m tests.services run -- python -m bench.failover
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.throughput import CLI, KEY, start, stop, wait_http, wait_warm
from jobs.ledger import ItemLedger
from jobs.migrate import upgrade_to_head
from jobs.schemas import JobCreate
from jobs.service import get_job, submit_job
from jobs.settings import Settings
from jobs.tenants import ensure_tenant
from storage.db import open_database
from storage.publisher import CeleryPublisher
from tests.services import free_port


def job_body(provider: str, items: int, fallback: list[dict[str, Any]]) -> JobCreate:
    run = uuid.uuid4().hex[:8]  # lines unique to this job: a repeated line would be reused
    return JobCreate.model_validate(
        {
            "kind": "tts",
            "provider": provider,
            "items": [{"text": f"Failover line {n} of run {run}."} for n in range(items)],
            "fallback": fallback,
        }
    )


def run(ledger: ItemLedger, tenant: str, body: JobCreate) -> tuple[float, float | None, str]:
    """(seconds to the job's end, seconds to its first success, its status)."""
    job = submit_job(ledger, tenant, body, idempotency_key=None, max_items=len(body.items)).job
    started, first = time.monotonic(), None
    while (job := get_job(ledger.db.sessions, tenant, job.id)).status in ("queued", "running"):
        if first is None and job.succeeded:
            first = time.monotonic() - started
        time.sleep(0.05)
    if first is None and job.succeeded:
        first = time.monotonic() - started
    return time.monotonic() - started, first, str(job.status)


def slng_calls(base: str) -> list[float]:
    """Start times (epoch seconds) of the calls the emulator saw on SLNG's routes."""
    records = httpx.get(f"{base}/_emulator/requests").json()
    return sorted(r["started_at"] for r in records if r["path"].startswith("/slng"))


def circuit_opened_at(log: Path) -> float | None:
    """When the worker logged the circuit opening (its first `circuit of` line)."""
    for line in log.read_text(errors="replace").splitlines():
        if "circuit of" in line and "open for" in line:
            stamp = line[:23]
            when = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").replace(
                tzinfo=UTC
            )  # logs in UTC
            return when.timestamp()
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=400)
    parser.add_argument("--latency-ms", type=float, default=200.0)
    parser.add_argument("--cap", type=int, default=16)
    args = parser.parse_args()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    logs = Path(tempfile.mkdtemp(prefix="sb-failover-"))
    env = {
        **os.environ,
        "SLNG_API_KEY": KEY,
        "SMALLEST_API_KEY": KEY,
        "EMULATOR_API_KEYS": KEY,
        "SPEECHBATCH_SLNG_BASE_URL": f"{base}/slng",
        "SPEECHBATCH_SMALLEST_BASE_URL": f"{base}/smallest",
        "SPEECHBATCH_PROVIDER_LIMITS": f"slng={args.cap},smallest={args.cap}",
    }
    os.environ.update(env)
    settings = Settings()
    upgrade_to_head(settings.database_url)
    emulator = start(
        [CLI, "emulator", "--port", str(port), "--latency-ms", str(args.latency_ms)],
        env,
        logs / "emulator.log",
    )
    worker = None
    try:
        wait_http(f"{base}/_emulator/health")
        caps = {"smallest_tts_concurrency": args.cap, "smallest_ws_connections": 2 * args.cap}
        httpx.patch(f"{base}/_emulator/config", json=caps).raise_for_status()
        worker = start([CLI, "worker"], env, logs / "worker.log")
        ledger = ItemLedger(
            open_database(settings.database_url), CeleryPublisher(str(settings.broker_url))
        )
        tenant = ensure_tenant(ledger.db.sessions, "failover").id
        wait_warm(logs / "worker.log")
        print(f"failover: N={args.items} L={args.latency_ms:.0f}ms C={args.cap}, one worker")
        direct, _, status = run(ledger, tenant, job_body("smallest", args.items, []))
        print(f"  reference: the job sent straight to smallest {direct:.1f} s ({status})")
        httpx.delete(f"{base}/_emulator/requests").raise_for_status()
        outage = {"fail_next": 10**6, "status": 503, "path_contains": "/slng"}
        httpx.post(f"{base}/_emulator/script", json=outage).raise_for_status()
        fallback = [{"provider": "smallest"}]
        took, first, status = run(ledger, tenant, job_body("slng", args.items, fallback))
        calls = slng_calls(base)
        opened = circuit_opened_at(logs / "worker.log")
        after = [t for t in calls if opened is not None and t > opened + 0.5]
        print(
            f"  slng down (every call 503), fallback smallest: job {took:.1f} s ({status}) = "
            f"{took / direct:.2f} x the reference; first item stored after "
            f"{first if first is not None else float('nan'):.1f} s"
        )
        print(
            f"  slng calls: {len(calls)} in all, {len(calls) - len(after)} before the circuit "
            f"opened (+0.5 s in flight), {len(after)} after it"
        )
    finally:
        stop(worker, emulator)


if __name__ == "__main__":
    main()
