"""Archive expansion: a 50,000-object S3 prefix listed into a running job.

Generates the objects in SeaweedFS first (tiny bodies, many PUTs in parallel), then, in a
fresh child process each time (so its peak RSS is its own): submits an archive job as the
API does and expands it as a worker's task does, on the real database and Redis. Reports
(1) seconds from the submit to the first item id in the broker (goal < 2 s: items run
while the rest is listed), (2) the whole expansion's time and objects/s, (3) the child's
peak RSS (VmHWM) for a 10,000- and a 50,000-object prefix: flat in the object count, since
one page (1,000 objects) is held at a time. As the measured reference, the same child lists
the 50,000 objects into memory first (what "list, then insert" does) and reports its peak.
Run with `python -m tests.services run -- python -m bench.archive_expansion`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from jobs.archive_ledger import ArchiveLedger
from jobs.archives import ArchivePolicy, parse_archive_buckets, storage_location
from jobs.ledger import ItemLedger
from jobs.migrate import upgrade_to_head
from jobs.models import Item
from jobs.schemas import JobCreate
from jobs.service import submit_job
from jobs.settings import Settings
from jobs.tenants import ensure_tenant
from storage.db import open_database
from storage.publisher import CeleryPublisher
from storage.s3 import S3ObjectStore, s3_client
from storage.stores import open_object_store
from workers.archive import ArchiveStores
from workers.expand import Expander, Progress

FIRST_ITEM_GOAL_S = 2.0
BODY = b"RIFF" + b"\0" * 60  # tiny bodies: the listing, not the bytes, is measured


def peak_rss_mib() -> float:
    """This process's peak resident set (VmHWM, Linux) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def generate(bucket: str, prefix: str, count: int, endpoint: str | None) -> float:
    """PUT `count` objects under `prefix` in parallel; seconds it took."""
    client = s3_client(endpoint)
    started = time.perf_counter()

    def put(n: int) -> None:
        key = f"{prefix}{n % 100:02d}/call-{n:06d}.wav"
        client.put_object(Bucket=bucket, Key=key, Body=BODY)

    with ThreadPoolExecutor(32) as pool:
        list(pool.map(put, range(count)))
    client.close()
    return time.perf_counter() - started


class TimedPublisher(CeleryPublisher):
    """The broker publisher, noting when the first item ids went out."""

    first_at: float | None = None

    def publish(self, ids: Any, countdown: float = 0.0) -> None:
        super().publish(ids, countdown)
        if ids and self.first_at is None:
            self.first_at = time.perf_counter()


def child(args: argparse.Namespace) -> None:
    """One measured run, printed as one JSON line."""
    settings = Settings()
    archive = f"s3://{args.bucket}/{args.prefix}"
    if args.naive:  # the reference: the whole listing in memory before any insert
        store = S3ObjectStore(s3_client(settings.s3_endpoint_url), args.bucket)
        before = peak_rss_mib()
        held, after = [], None
        while True:
            page = store.list_page(args.prefix, start_after=after, limit=1000)
            held.extend(page.objects)
            if not page.truncated:
                break
            after = page.objects[-1].key
        print(json.dumps({"objects": len(held), "rss0": before, "peak": peak_rss_mib()}))
        return
    publisher = TimedPublisher(settings.broker_url or "")
    db = open_database(settings.database_url)
    ledger = ItemLedger(db, publisher)
    storage = open_object_store(settings.storage_url, endpoint_url=settings.s3_endpoint_url)
    policy = ArchivePolicy(
        parse_archive_buckets(args.bucket), storage_location(settings.storage_url), max_items=10**7
    )
    tenant = ensure_tenant(db.sessions, "bench").id
    body = JobCreate.model_validate(
        {"kind": "stt", "provider": "local", "source": {"prefix": archive, "pattern": "*.wav"}}
    )
    expander = Expander(ArchiveLedger(db, publisher), ArchiveStores(storage), storage)
    before = peak_rss_mib()
    started = time.perf_counter()
    job = submit_job(ledger, tenant, body, idempotency_key=None, max_items=1, archives=policy).job
    accepted = time.perf_counter()
    # What the worker's task does on receiving the message the submit just published.
    progress = expander.expand(job.id, budget_s=3600)
    ended = time.perf_counter()
    assert progress is Progress.DONE, progress
    with db.sessions() as session:
        items = session.scalar(select(func.count()).where(Item.job_id == job.id))
        distinct = session.scalar(
            select(func.count(func.distinct(Item.source))).where(Item.job_id == job.id)
        )
    first = (publisher.first_at or ended) - started
    result = {
        "items": items,
        "distinct": distinct,
        "accepted": accepted - started,
        "first": first,
        "total": ended - started,
        "rss0": before,
        "peak": peak_rss_mib(),
    }
    print(json.dumps(result))
    publisher.redis.delete("speechbatch")  # no worker here: drop the item messages
    publisher.close()
    db.dispose()


def measure(bucket: str, prefix: str, *, naive: bool = False) -> dict[str, Any]:
    argv = [sys.executable, "-m", "bench.archive_expansion", "--child"]
    argv += ["--bucket", bucket, "--prefix", prefix] + (["--naive"] if naive else [])
    done = subprocess.run(argv, capture_output=True, text=True, check=False, env=os.environ)
    if done.returncode != 0:
        raise SystemExit(f"child failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--objects", type=int, default=50_000)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--naive", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bucket", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--prefix", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    settings = Settings()
    upgrade_to_head(settings.database_url)
    bucket = f"archive-bench-{uuid.uuid4().hex[:8]}"
    client = s3_client(settings.s3_endpoint_url)
    client.create_bucket(Bucket=bucket)
    client.close()
    made_small = generate(bucket, "small/", args.small, settings.s3_endpoint_url)
    made_big = generate(bucket, "big/", args.objects, settings.s3_endpoint_url)
    database = settings.database_url.split(":")[0]
    print(f"archive expansion: S3 (SeaweedFS) prefix -> items on {database}")
    print(
        f"  generated {args.small:,} + {args.objects:,} objects in {made_small + made_big:.1f} s "
        f"({(args.small + args.objects) / (made_small + made_big):,.0f} PUT/s, 32 in parallel)"
    )
    rows = [(args.small, measure(bucket, "small/")), (args.objects, measure(bucket, "big/"))]
    for count, r in rows:
        assert r["items"] == r["distinct"] == count, r
        print(
            f"  {count:>7,} objects: 202 after {r['accepted'] * 1000:.0f} ms, first item "
            f"published after {r['first']:.2f} s (goal < {FIRST_ITEM_GOAL_S:g} s), expanded in "
            f"{r['total']:.1f} s ({count / r['total']:,.0f} objects/s), peak RSS "
            f"{r['peak']:.0f} MiB ({r['peak'] - r['rss0']:+.1f} MiB over the process before)"
        )
    (small, a), (big, b) = rows
    print(
        f"  peak RSS ratio {big:,} / {small:,} objects: {b['peak'] / a['peak']:.3f} "
        f"(flat = 1; the object count grew x{big / small:.0f})"
    )
    naive = measure(bucket, "big/", naive=True)
    print(
        f"  reference, the {naive['objects']:,}-object listing held in memory before inserting: "
        f"peak RSS {naive['peak']:.0f} MiB ({naive['peak'] - naive['rss0']:+.1f} MiB for the "
        f"listing alone, vs {b['peak'] - b['rss0']:+.1f} MiB for the whole paged expansion)"
    )
    verdict = "meets" if max(a["first"], b["first"]) < FIRST_ITEM_GOAL_S else "misses"
    print(f"  time to first item {verdict} the < {FIRST_ITEM_GOAL_S:g} s goal")


if __name__ == "__main__":
    main()
