"""A long TTS output over each streaming transport: when its first byte is stored, and the
worker's peak memory, by output length.

One default `speechbatch worker` against the emulator, which starts each streamed answer
after TTFB and then paces its audio at a real-time factor (RTF x faster than it plays), as
a streaming vendor does. Each run is a job of one line:

- slng over WebSocket with `unmute/soniox/tts-rt:v1` (5,000 characters a request) at
  speed 0.5, so one line is 1, 5 or 10 minutes of 24 kHz speech;
- slng over plain HTTP with the 10-minute text, for comparison (the bridge's HTTP body takes
  no speed, so it is 5 minutes): the whole answer is held, then stored;
- smallest over HTTP, SSE and WebSocket at its longest line (250 characters, ~33 s at speed 0.5):
  Lightning takes no more per request, so a 10-minute Smallest output needs issue 11's
  splitting of long scripts.

For each: seconds from submit until the first byte is in storage (the first S3 multipart
part, seen with ListParts; a one-part output is stored whole at the end), until the item is
done, and the worker's peak RSS during the run (sampled from /proc every 20 ms) against its
RSS before it. The goal: peak RSS under 300 MB and flat with output length.

    python -m tests.services run -- python -m bench.streaming
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select

from bench.throughput import CLI, KEY, start, stop, wait_http, wait_warm
from jobs.ledger import ItemLedger
from jobs.migrate import upgrade_to_head
from jobs.models import Item
from jobs.schemas import JobCreate
from jobs.service import get_job, submit_job
from jobs.settings import Settings
from jobs.tenants import ensure_tenant
from storage.db import open_database
from storage.publisher import CeleryPublisher
from storage.s3 import s3_client
from tests.services import free_port

CHARS_PER_S = 15  # the emulator speaks 15 characters a second (emulator/audio.py)
SLNG_MODEL = "unmute/soniox/tts-rt:v1"


def text_for(seconds: float, speed: float) -> str:
    """A narration the emulator reads in `seconds` at `speed`."""
    sentence = "The river bends past the old mill and the town wakes up slowly. "
    chars = round(seconds * speed * CHARS_PER_S)
    return (sentence * (chars // len(sentence) + 1))[:chars].rstrip() + "."


class RssPeak:
    """The peak resident set of a process, sampled from /proc while running."""

    def __init__(self, pid: int, every_s: float = 0.02) -> None:
        self.pid, self.every_s = pid, every_s
        self.peak = self.before = rss_bytes(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> RssPeak:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._stop.wait(self.every_s):
            self.peak = max(self.peak, rss_bytes(self.pid))


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


class FirstStored:
    """When the first bytes under a prefix reached S3: a multipart part or a whole object."""

    def __init__(self, client: Any, bucket: str, prefix: str, t0: float) -> None:
        self.client, self.bucket, self.prefix, self.t0 = client, bucket, prefix, t0
        self.after_s: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> FirstStored:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        while self.after_s is None and not self._stop.wait(0.05):
            if self._stored():
                self.after_s = time.monotonic() - self.t0

    def _stored(self) -> bool:
        uploads = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=self.prefix)
        for upload in uploads.get("Uploads", []):
            parts = self.client.list_parts(
                Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
            )
            if parts.get("Parts"):
                return True
        listed = self.client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix)
        return any(not o["Key"].endswith("manifest.jsonl") for o in listed.get("Contents", []))


def run(
    ledger: ItemLedger,
    tenant: str,
    worker_pid: int,
    client: Any,
    where: tuple[str, str],
    body: dict[str, Any],
) -> tuple[float | None, float, int, int, float]:
    """(first byte stored after, done after, RSS before, peak RSS, seconds of audio stored)."""
    job_body = JobCreate.model_validate({"kind": "tts", **body})
    with RssPeak(worker_pid) as rss:
        t0 = time.monotonic()
        job = submit_job(ledger, tenant, job_body, idempotency_key=None, max_items=1).job
        bucket, root = where
        prefix = "/".join(p for p in (root, tenant, job.id) if p) + "/"
        with FirstStored(client, bucket, prefix, t0) as first:
            while (job := get_job(ledger.db.sessions, tenant, job.id)).status in (
                "queued",
                "running",
            ):
                time.sleep(0.05)
            done_s = time.monotonic() - t0
            time.sleep(0.1)
    if job.status != "succeeded":
        raise RuntimeError(f"{body['provider']}: the job ended {job.status}")
    with ledger.db.sessions() as session:
        stored = session.scalars(select(Item.duration_s).where(Item.job_id == job.id)).one()
    return first.after_s, done_s, rss.before, rss.peak, stored or 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ttfb-ms", type=float, default=100.0)
    parser.add_argument("--rtf", type=float, default=20.0, help="audio seconds per second")
    parser.add_argument("--minutes", type=float, nargs="+", default=[1.0, 5.0, 10.0])
    args = parser.parse_args()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    logs = Path(tempfile.mkdtemp(prefix="sb-streaming-"))
    env = {
        **os.environ,
        "SLNG_API_KEY": KEY,
        "SMALLEST_API_KEY": KEY,
        "EMULATOR_API_KEYS": KEY,
        "SPEECHBATCH_SLNG_BASE_URL": f"{base}/slng",
        "SPEECHBATCH_SMALLEST_BASE_URL": f"{base}/smallest",
    }
    os.environ.update(env)
    settings = Settings()
    upgrade_to_head(settings.database_url)
    where = urlsplit(settings.storage_url)
    if where.scheme != "s3":
        raise SystemExit("bench.streaming watches S3 parts: run it under tests.services")
    bucket, root = where.netloc, where.path.strip("/")
    client = s3_client(settings.s3_endpoint_url)
    pacing = ["--ttfb-ms", str(args.ttfb_ms), "--realtime-factor", str(args.rtf)]
    emulator = start(
        [CLI, "emulator", "--port", str(port), "--max-text-chars", "5000", *pacing],
        env,
        logs / "emulator.log",
    )
    worker = None
    try:
        wait_http(f"{base}/_emulator/health")
        worker = start([CLI, "worker"], env, logs / "worker.log")
        ledger = ItemLedger(
            open_database(settings.database_url), CeleryPublisher(str(settings.broker_url))
        )
        tenant = ensure_tenant(ledger.db.sessions, "streaming").id
        wait_warm(logs / "worker.log")
        runs: list[tuple[str, float, dict[str, Any]]] = []
        for minutes in args.minutes:
            slng = {"model": SLNG_MODEL, "speed": 0.5}
            runs.append(("slng websocket", minutes, {**slng, "transport": "websocket"}))
        # The bridge's HTTP body has no speed (providers.md §1.4): the same text is half as long.
        slng_http = {"model": SLNG_MODEL, "speed": 0.5, "transport": "http"}
        runs.append(("slng http", args.minutes[-1], slng_http))
        for transport in ("http", "stream", "websocket"):
            runs.append(
                (
                    f"smallest {transport}",
                    250 / CHARS_PER_S / 0.5 / 60,
                    {"speed": 0.5, "transport": transport},
                )
            )
        print(
            f"streaming: one line per job, TTFB {args.ttfb_ms:.0f} ms, paced at "
            f"{args.rtf:g}x real time, one default worker"
        )
        for label, minutes, options in runs:
            provider = label.split()[0]
            model = options.pop("model", None)
            speed = float(options["speed"])
            # A run's own first words: the same text in an earlier job would be reused.
            text = f"Run {uuid.uuid4().hex[:8]}. " + text_for(minutes * 60, speed)
            if provider == "smallest":
                text = text[:250]
            body: dict[str, Any] = {
                "provider": provider,
                "options": options,
                "items": [{"text": text}],
                **({"model": model} if model else {}),
            }
            first, done, before, peak, seconds = run(
                ledger, tenant, worker.pid, client, (bucket, root), body
            )
            first_text = f"{first:5.1f} s" if first is not None else "  n/a"
            print(
                f"  {label:19s}{seconds:6.0f} s of audio ({len(text)} chars): first byte "
                f"stored {first_text}, done {done:5.1f} s; worker RSS {before / 2**20:4.0f} MB "
                f"before, peak {peak / 2**20:4.0f} MB (+{(peak - before) / 2**20:.0f})"
            )
    finally:
        stop(worker, emulator)


if __name__ == "__main__":
    main()
