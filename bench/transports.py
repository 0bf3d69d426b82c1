"""Each vendor over each transport it offers: N TTS lines at latency L and cap C, one worker.

For slng (http, websocket) and smallest (http, stream, websocket) in turn, one job of N short
lines goes through the API's ledger, Redis, one default `speechbatch worker` and S3, against
the emulator answering each line after L (a streamed answer sends its first chunk after
TTFB and paces the rest to end at L).
Prints items/s as a ratio to the ceiling C/L and to the plain asyncio script measured in the
same run, the connections the emulator saw opened (WebSocket sessions; HTTP keep-alive
connections are not counted by the emulator), and the worker's CPU per item.

    python -m tests.services run -- python -m bench.transports --items 2000
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from bench.asyncio_reference import reference_rate
from bench.overhead import CpuMeter
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

RUNS = (
    ("slng", "http"),
    ("slng", "websocket"),
    *(("smallest", t) for t in ("http", "stream", "websocket")),
)


def run_job(ledger: ItemLedger, tenant: str, provider: str, transport: str, items: int) -> float:
    """Items/s of one job, from its creation to its last item."""
    run = uuid.uuid4().hex[:8]  # lines unique to this job: a repeated line would be reused
    body = JobCreate.model_validate(
        {
            "kind": "tts",
            "provider": provider,
            "options": {"transport": transport},
            "items": [{"text": f"Transport line {n} of run {run}."} for n in range(items)],
        }
    )
    job = submit_job(ledger, tenant, body, idempotency_key=None, max_items=items).job
    while (job := get_job(ledger.db.sessions, tenant, job.id)).status in ("queued", "running"):
        time.sleep(0.2)
    if job.status != "succeeded" or job.finished_at is None:
        raise RuntimeError(f"{provider}/{transport}: job ended {job.status}")
    return items / (job.finished_at - job.created_at).total_seconds()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--latency-ms", type=float, default=200.0)
    parser.add_argument("--ttfb-ms", type=float, default=100.0)
    parser.add_argument("--cap", type=int, default=16)
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="PROVIDER/TRANSPORT",
        help="run only these (repeatable), e.g. --only smallest/stream  [default: every one]",
    )
    args = parser.parse_args()
    runs = [run for run in RUNS if not args.only or "/".join(run) in args.only]
    ceiling = args.cap / (args.latency_ms / 1000)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    logs = Path(tempfile.mkdtemp(prefix="sb-transports-"))
    env = {
        **os.environ,
        "SLNG_API_KEY": KEY,
        "SMALLEST_API_KEY": KEY,
        "EMULATOR_API_KEYS": KEY,
        "SPEECHBATCH_SLNG_BASE_URL": f"{base}/slng",
        "SPEECHBATCH_SMALLEST_BASE_URL": f"{base}/smallest",
        # The plan's cap C for both vendors, as a user with such a plan would configure it.
        "SPEECHBATCH_PROVIDER_LIMITS": f"slng={args.cap},smallest={args.cap}",
    }
    os.environ.update(env)
    settings = Settings()
    upgrade_to_head(settings.database_url)
    timing = ["--latency-ms", str(args.latency_ms), "--ttfb-ms", str(args.ttfb_ms)]
    emulator = start(
        [CLI, "emulator", "--port", str(port), *timing],
        env,
        logs / "emulator.log",
    )
    worker = None
    try:
        wait_http(f"{base}/_emulator/health")
        # Smallest's own account limits (1 in flight, 5 sockets) lifted to the plan's cap.
        caps = {"concurrency": args.cap, "smallest_tts_concurrency": args.cap}
        caps["smallest_ws_connections"] = 2 * args.cap
        httpx.patch(f"{base}/_emulator/config", json=caps).raise_for_status()
        reference = reference_rate(f"{base}/slng", KEY, items=args.items, concurrency=args.cap)
        worker = start([CLI, "worker"], env, logs / "worker.log")
        ledger = ItemLedger(
            open_database(settings.database_url), CeleryPublisher(str(settings.broker_url))
        )
        tenant = ensure_tenant(ledger.db.sessions, "transports").id
        wait_warm(logs / "worker.log")
        print(
            f"transports: N={args.items} TTFB={args.ttfb_ms:.0f}ms L={args.latency_ms:.0f}ms "
            f"C={args.cap}, one worker"
        )
        print(f"  ceiling C/L {ceiling:.1f} items/s; asyncio script (slng http) {reference:.1f}")
        for provider, transport in runs:
            httpx.delete(f"{base}/_emulator/requests").raise_for_status()
            meter = CpuMeter(worker=worker.pid)
            meter.begin()
            rate = run_job(ledger, tenant, provider, transport, args.items)
            meter.end()
            stats = httpx.get(f"{base}/_emulator/stats").json()
            print(
                f"  {provider:9s}{transport:10s}{rate:7.1f} items/s = {rate / ceiling:.2f} x C/L, "
                f"{rate / reference:.2f} x asyncio; sockets opened {stats['ws']['opened']}, "
                f"max in flight {stats['max_in_flight']}, 429s "
                f"{stats['by_status'].get('429', 0)}; CPU ms/item {meter.per_item(args.items)}"
            )
    finally:
        stop(worker, emulator)


if __name__ == "__main__":
    main()
