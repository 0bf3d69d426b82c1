"""A 500-piece TTS line: the time its stitching takes against the time its provider calls took.

One item of about 125,000 characters for Smallest's Lightning (250 characters a request), so
the pipeline splits it into about 500 pieces, speaks them one by one against the emulator
(each answer held until its audio could have been made at RTF x real time, as a hosted TTS
does), stores each piece in S3, then stitches them into one output. Runs `run_item` in this
process on SQLite, with the default worker config and the real S3 store of `tests.services`.
Prints the provider calls' summed time (from the attempts the item recorded), the stitch's
time, their ratio (goal < 0.05), and the output's length.

    python -m tests.services run -- python -m bench.stitching
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from bench.throughput import CLI, KEY, start, stop, wait_http
from jobs.ledger import ItemLedger
from jobs.migrate import upgrade_to_head
from jobs.models import Attempt, Item
from jobs.schemas import JobCreate
from jobs.service import submit_job
from jobs.settings import Settings
from jobs.tenants import ensure_tenant
from storage.db import open_database
from storage.publisher import InMemoryPublisher
from storage.stores import open_object_store
from tests.services import free_port
from workers import long_tts, pipeline
from workers.config import WorkerConfig
from workers.providers.registry import ProviderRegistry
from workers.runtime import Runtime

SENTENCE = "The river bends past the old mill, and the town wakes up slowly in the mist. "


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pieces", type=int, default=500)
    parser.add_argument("--rtf", type=float, default=50.0)
    parser.add_argument("--sample-rate", type=int, default=16000)
    args = parser.parse_args()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    logs = Path(tempfile.mkdtemp(prefix="sb-stitching-"))
    os.environ.update(
        {
            "SMALLEST_API_KEY": KEY,
            "SPEECHBATCH_SMALLEST_BASE_URL": f"{base}/smallest",
            "SPEECHBATCH_DATABASE_URL": f"sqlite:///{logs / 'bench.db'}",
        }
    )
    settings = Settings()
    upgrade_to_head(settings.database_url)
    emulator = start(
        [CLI, "emulator", "--port", str(port), "--realtime-factor", str(args.rtf)],
        {**os.environ, "EMULATOR_API_KEYS": KEY},
        logs / "emulator.log",
    )
    timings: dict[str, float] = {}
    real_stitch = long_tts.stitch

    def timed_stitch(*a: Any, **kw: Any) -> Any:
        began = time.perf_counter()
        try:
            return real_stitch(*a, **kw)
        finally:
            timings["stitch"] = time.perf_counter() - began

    long_tts.stitch = timed_stitch  # bench-only timing
    try:
        wait_http(f"{base}/_emulator/health")
        ledger = ItemLedger(open_database(settings.database_url), InMemoryPublisher())
        client = httpx.Client(timeout=httpx.Timeout(60.0, connect=5.0))
        rt = Runtime(
            config=WorkerConfig.from_settings(settings),
            ledger=ledger,
            store=open_object_store(settings.storage_url, endpoint_url=settings.s3_endpoint_url),
            providers=ProviderRegistry.from_settings(settings, client),
            rng=random.Random(1),
        )
        # Sentences of 78 characters pack three to a 250-character piece.
        text = (SENTENCE * (3 * args.pieces)).strip()
        body = JobCreate.model_validate(
            {
                "kind": "tts",
                "provider": "smallest",
                "options": {"sample_rate": args.sample_rate},
                "items": [{"text": text}],
            }
        )
        tenant = ensure_tenant(ledger.db.sessions, "stitching").id
        job = submit_job(ledger, tenant, body, idempotency_key=None, max_items=1).job
        with ledger.db.sessions() as session:
            item_id = session.scalars(select(Item.id).where(Item.job_id == job.id)).one()
        began = time.perf_counter()
        outcome = pipeline.run_item(rt, item_id)
        whole = time.perf_counter() - began
        with ledger.db.sessions() as session:
            item = session.get(Item, item_id)
            calls_ms = session.scalar(
                select(func.sum(Attempt.latency_ms)).where(Attempt.item_id == item_id)
            )
        assert item is not None
        calls_s = (calls_ms or 0.0) / 1000
        stitch_s = timings.get("stitch", float("nan"))
        print(
            f"stitching: one line of {len(text):,} characters, smallest at RTF {args.rtf:g}, "
            f"{args.sample_rate} Hz WAV, default worker config, S3"
        )
        print(
            f"  {outcome}: {item.pieces} pieces, {item.duration_s or 0:.0f} s of audio, "
            f"{(item.output_bytes or 0) / 2**20:.0f} MiB; item {whole:.1f} s in all"
        )
        print(
            f"  provider calls {calls_s:.1f} s; stitch {stitch_s:.2f} s = "
            f"{stitch_s / calls_s:.3f} x the calls ({stitch_s / (item.pieces or 1) * 1000:.1f} "
            "ms a piece)"
        )
    finally:
        long_tts.stitch = real_stitch
        stop(emulator)


if __name__ == "__main__":
    main()
