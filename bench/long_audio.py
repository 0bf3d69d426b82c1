"""Peak worker memory by length: transcribing long recordings, and speaking long scripts.

One default `speechbatch worker` against the emulator (its plain answers held until their
audio could have been made at RTF x real time), S3 from `tests.services`. Each run is a job
of one item, and the worker's resident memory is sampled from /proc every 20 ms:

- STT: a 16 kHz mono WAV of 15, 30, 60 and 120 minutes (the 2-hour one is 230 MB), uploaded,
  transcribed by OpenAI's whisper-1, which takes 25 MiB a request: the worker spools it to
  disk, re-encodes it as FLAC, cuts it at pauses and sends the pieces one at a time.
- TTS: scripts of 15, 30 and 60 minutes on OpenAI's tts-1 (4,096 characters a request), so
  4, 8 and 14 requests whose pieces are stored and then stitched into one 24 kHz WAV.

The goal: peak RSS under 300 MB and flat in duration.

    python -m tests.services run -- python -m bench.long_audio
"""

from __future__ import annotations

import argparse
import os
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from bench.streaming import RssPeak, text_for
from bench.throughput import CLI, KEY, start, stop, wait_http, wait_warm
from emulator.audio import render_speech
from jobs.ledger import ItemLedger
from jobs.migrate import upgrade_to_head
from jobs.models import Item
from jobs.schemas import JobCreate
from jobs.service import get_job, submit_job
from jobs.settings import Settings
from jobs.tenants import ensure_tenant
from storage.db import open_database
from storage.keys import upload_key
from storage.publisher import CeleryPublisher
from storage.stores import open_object_store
from tests.services import free_port

RATE = 16000


def write_recording(path: Path, minutes: float) -> None:
    """`minutes` of speech-like 16 kHz audio with a 1 s pause every 20 s, written in blocks."""
    talk = np.frombuffer(render_speech(19.0, "linear16", RATE, "none")[0], dtype="<i2")
    block = np.concatenate([talk, np.zeros(RATE, dtype="<i2")])
    with sf.SoundFile(path, "w", RATE, 1, format="WAV", subtype="PCM_16") as out:
        for _ in range(round(minutes * 3)):
            out.write(block)


def run(
    ledger: ItemLedger, tenant: str, worker_pid: int, body: dict[str, Any]
) -> tuple[float, int, int, Item]:
    """(seconds, RSS before, peak RSS, the item row) of one job."""
    job_body = JobCreate.model_validate(body)
    with RssPeak(worker_pid) as rss:
        began = time.monotonic()
        job = submit_job(ledger, tenant, job_body, idempotency_key=None, max_items=1).job
        while (job := get_job(ledger.db.sessions, tenant, job.id)).status in ("queued", "running"):
            time.sleep(0.1)
        took = time.monotonic() - began
    with ledger.db.sessions() as session:
        item = session.query(Item).filter(Item.job_id == job.id).one()
    if job.status != "succeeded":
        raise RuntimeError(f"job ended {job.status}: {item.error_code} {item.error_message}")
    return took, rss.before, rss.peak, item


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stt-minutes", type=float, nargs="*", default=[15, 30, 60, 120])
    parser.add_argument("--tts-minutes", type=float, nargs="*", default=[15, 30, 60])
    parser.add_argument("--rtf", type=float, default=50.0)
    args = parser.parse_args()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    logs = Path(tempfile.mkdtemp(prefix="sb-long-audio-"))
    env = {
        **os.environ,
        "OPENAI_API_KEY": KEY,
        "EMULATOR_API_KEYS": KEY,
        "SPEECHBATCH_OPENAI_BASE_URL": f"{base}/openai",
        "SPEECHBATCH_MAX_SOURCE_BYTES": str(2 * 1024**3),
    }
    os.environ.update(env)
    settings = Settings()
    upgrade_to_head(settings.database_url)
    store = open_object_store(settings.storage_url, endpoint_url=settings.s3_endpoint_url)
    emulator = start(
        [CLI, "emulator", "--port", str(port), "--realtime-factor", str(args.rtf)],
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
        tenant = ensure_tenant(ledger.db.sessions, "long-audio").id
        wait_warm(logs / "worker.log")
        print(f"long_audio: one default worker, emulator at RTF {args.rtf:g}, S3")
        for minutes in args.stt_minutes:
            upload_id = secrets.token_hex(16)
            wav = logs / "recording.wav"
            write_recording(wav, minutes)
            size = wav.stat().st_size
            with wav.open("rb") as source:
                store.put_file(upload_key(tenant, upload_id, "audio.wav"), source, "audio/wav")
            wav.unlink()
            body: dict[str, Any] = {
                "kind": "stt",
                "provider": "openai",
                "items": [{"source": f"upload://{upload_id}/audio.wav"}],
            }
            took, before, peak, item = run(ledger, tenant, worker.pid, body)
            print(
                f"  STT {minutes:4.0f} min WAV ({size / 2**20:4.0f} MiB): {took:6.1f} s, "
                f"transcript {item.duration_s or 0:.0f} s; worker RSS {before / 2**20:4.0f} MB "
                f"before, peak {peak / 2**20:4.0f} MB"
            )
        for minutes in args.tts_minutes:
            body = {
                "kind": "tts",
                "provider": "openai",
                "options": {"sample_rate": 24000},
                "items": [{"text": text_for(minutes * 60, 1.0)}],
            }
            took, before, peak, item = run(ledger, tenant, worker.pid, body)
            print(
                f"  TTS {minutes:4.0f} min script: {took:6.1f} s, {item.pieces} pieces, "
                f"{item.duration_s or 0:.0f} s stored ({(item.output_bytes or 0) / 2**20:.0f} "
                f"MiB); worker RSS {before / 2**20:4.0f} MB before, peak {peak / 2**20:4.0f} MB"
            )
    finally:
        stop(worker, emulator)


if __name__ == "__main__":
    main()
