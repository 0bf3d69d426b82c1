"""SLNG batch STT end to end: API → Redis → worker → emulator's batch API → beat → S3."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobs.catalog_slng import SLNG_BATCH_STT_MODEL
from tests.e2e.stack import Stack, running_stack
from tests.e2e.test_pipeline import fetch, submit, tone_wav

pytestmark = pytest.mark.e2e
RECORDINGS = 10  # more than the worker's 8 threads: waiting items must not hold them
JOBS_PATH = "/slng-batch/v1/batch/jobs"


@pytest.fixture
def batch_stack(
    pg_url: str, redis_url: str, s3_endpoint_url: str, s3_client: Any, tmp_path: Path
) -> Iterator[Stack]:
    """The whole stack with the batch threshold at 20 kB, so 2 s recordings go to batch."""
    extra = {"SPEECHBATCH_SLNG_BATCH_OVER_BYTES": "20000"}
    with running_stack(pg_url, redis_url, s3_endpoint_url, s3_client, tmp_path, extra) as stack:
        yield stack


def batch_requests(stack: Stack, method: str) -> list[dict[str, Any]]:
    with stack.emulator() as emulator:
        log: list[dict[str, Any]] = emulator.get("/_emulator/requests").json()
    return [r for r in log if r["method"] == method and r["path"].startswith(JOBS_PATH)]


def test_oversized_recordings_go_through_slng_batch_while_worker_threads_stay_free(
    batch_stack: Stack,
) -> None:
    """Ten recordings over the threshold are each submitted once and polled until DONE; while
    SLNG works they wait queued, and a TTS job submitted meanwhile finishes first on the same
    8-thread worker; every stored transcript parses as the batch model's."""
    stack = batch_stack
    with stack.emulator() as emulator:  # 3 s of SLNG work per second of audio: ~6 s a job
        emulator.patch("/_emulator/config", json={"batch_seconds_per_audio_second": 3.0})
    sources = [
        stack.upload(f"call-{n}.wav", tone_wav(2.0, 300 + 40 * n)) for n in range(RECORDINGS)
    ]
    stt_id = submit(
        stack,
        {
            "kind": "stt",
            "provider": "slng",
            "model": "slng/deepgram/nova:3-en",
            "items": [{"id": f"call-{n}", "source": s} for n, s in enumerate(sources)],
        },
    )
    deadline = time.monotonic() + 25
    while len(batch_requests(stack, "POST")) < RECORDINGS:
        assert time.monotonic() < deadline, "\n".join(p.tail() for p in stack.procs)
        time.sleep(0.2)

    tts_id = submit(
        stack,
        {
            "kind": "tts",
            "provider": "slng",
            "items": [{"id": f"line-{n}", "text": f"Line {n}."} for n in range(3)],
        },
    )
    assert stack.wait_for_job(tts_id, timeout=10)["status"] == "succeeded"
    with stack.client() as client:
        waiting = client.get(f"/v1/jobs/{stt_id}").json()
    # Waiting items are queued; with none running or finished the job itself reads queued.
    assert waiting["status"] in ("queued", "running"), waiting
    assert waiting["counts"]["queued"] > 0 and waiting["counts"]["running"] < RECORDINGS, waiting

    job = stack.wait_for_job(stt_id, timeout=40)
    assert job["status"] == "succeeded", job
    for item in stack.items(stt_id):
        files = {f["format"]: f["url"] for f in item["output"]["files"]}
        transcript = json.loads(fetch(files["json"]))
        assert transcript["text"] and transcript["words"], item
        assert (transcript["provider"], transcript["model"]) == ("slng", SLNG_BATCH_STT_MODEL)
        assert transcript["duration_s"] == pytest.approx(2.0, abs=0.05)
        assert fetch(files["srt"]).startswith(b"1\n")
    submitted = [r for r in batch_requests(stack, "POST") if r["status"] == 202]
    assert len(submitted) == RECORDINGS  # each paid once
    polls = [r for r in batch_requests(stack, "GET") if not r["path"].endswith("/files")]
    assert len(polls) <= RECORDINGS * 4  # spaced polls, not a busy loop
