"""An archive job through the real processes: API, worker (expansion task and items), beat,
the Deepgram emulator, SeaweedFS; submitted by the CLI, then re-run for free."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.stack import CLI, Stack, running_stack
from tests.e2e.test_smallest import emulated_requests

pytestmark = pytest.mark.e2e
FILES = 24


@pytest.fixture(scope="module")
def archive_bucket(s3_client: Any) -> str:
    """A customer's archive bucket, beside the stack's own."""
    bucket = f"arch-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=bucket)
    return bucket


@pytest.fixture(scope="module")
def output_bucket(s3_client: Any) -> str:
    """A bucket the deployment may write transcripts to (`output.url`)."""
    bucket = f"outs-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=bucket)
    return bucket


@pytest.fixture(scope="module")
def archive_stack(
    redis_url: str,
    s3_endpoint_url: str,
    s3_client: Any,
    archive_bucket: str,
    output_bucket: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    """The whole stack on SQLite, allowed to list `archive_bucket` and to write transcripts
    below `output_bucket`'s `transcripts/`."""
    workdir = tmp_path_factory.mktemp("stack-archive")
    env = {"SPEECHBATCH_ARCHIVE_BUCKETS": f"{archive_bucket}, write:{output_bucket}/transcripts"}
    url = f"sqlite:///{workdir / 'speechbatch.db'}"
    with running_stack(url, redis_url, s3_endpoint_url, s3_client, workdir, env) as stack:
        yield stack


def finished(stack: Stack, job_id: str, timeout: float = 120.0) -> dict[str, Any]:
    """Poll until the job is terminal (past `expanding`, `queued` and `running`)."""
    deadline = time.monotonic() + timeout
    with stack.client() as client:
        while True:
            job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
            if job["status"] not in ("expanding", "queued", "running"):
                return job
            assert time.monotonic() < deadline, job
            time.sleep(0.3)


def test_cli_archive_job_transcribes_each_object_then_a_rerun_calls_no_provider(
    archive_stack: Stack, s3_client: Any, archive_bucket: str, tmp_path: Path
) -> None:
    """`speechbatch stt s3://bucket/calls/ --pattern '*.wav'` makes one item per .wav (read by
    the worker from the archive bucket, transcribed by Deepgram); the same command again
    ends `succeeded` with every item skipped and no request to Deepgram."""
    stack = archive_stack
    with httpx.Client(base_url=stack.emulator_url, timeout=30.0) as emulator:
        clip = emulator.post(
            "/deepgram/v1/speak?model=aura-2-thalia-en&encoding=linear16&container=wav",
            headers={"Authorization": f"Token {stack.env['DEEPGRAM_API_KEY']}"},
            json={"text": "one two three"},
        ).content
    for n in range(FILES):
        s3_client.put_object(Bucket=archive_bucket, Key=f"calls/{n % 3}/c{n:02d}.wav", Body=clip)
    s3_client.put_object(Bucket=archive_bucket, Key="calls/readme.txt", Body=b"notes")
    env = {"SPEECHBATCH_API_URL": stack.api_url, "SPEECHBATCH_API_KEY": stack.api_key}
    argv = ["stt", f"s3://{archive_bucket}/calls/", "--pattern", "*.wav", "--provider"]
    argv += ["deepgram", "--no-wait", "--json"]
    emulated_requests(stack)
    first = stack.run_cli(*argv, extra_env=env)
    assert first.returncode == 0, first.stderr
    job = finished(stack, json.loads(first.stdout)["id"])
    assert (job["status"], job["counts"]["succeeded"], job["counts"]["total"]) == (
        "succeeded",
        FILES,
        FILES,
    )
    listened = [r for r in emulated_requests(stack) if r["path"].endswith("/listen")]
    assert len(listened) == FILES
    items = stack.items(job["id"])
    assert {i["source"] for i in items} == {
        f"s3://{archive_bucket}/calls/{n % 3}/c{n:02d}.wav" for n in range(FILES)
    }

    again = stack.run_cli(*argv, extra_env=env)
    assert again.returncode == 0, again.stderr
    rerun = finished(stack, json.loads(again.stdout)["id"])
    assert (rerun["status"], rerun["counts"]["skipped"], rerun["counts"]["succeeded"]) == (
        "succeeded",
        FILES,
        0,
    )
    assert [r for r in emulated_requests(stack) if r["path"].endswith("/listen")] == []
    skipped = stack.items(rerun["id"])
    assert {i["skipped_from"] for i in skipped} == {job["id"]}
    assert {i["output"]["key"] for i in skipped} == {i["output"]["key"] for i in items}


def test_cli_dry_run_counts_the_prefix_and_mirror_to_writes_another_bucket(
    archive_stack: Stack, s3_client: Any, archive_bucket: str, output_bucket: str, tmp_path: Path
) -> None:
    """`--dry-run` on the prefix prints its exact item count; `--mirror-to s3://…` writes
    each transcript to the other bucket at the archive's paths (by the real worker), `--out`
    downloads them through their presigned URLs, and a bucket not allowed is refused."""
    stack, clip = archive_stack, _clip(archive_stack)
    for n in range(30):
        s3_client.put_object(Bucket=archive_bucket, Key=f"mirror/{n % 2}/m{n:02d}.wav", Body=clip)
    s3_client.put_object(Bucket=archive_bucket, Key="mirror/x.txt", Body=b"notes")
    env = {"SPEECHBATCH_API_URL": stack.api_url, "SPEECHBATCH_API_KEY": stack.api_key}
    prefix = f"s3://{archive_bucket}/mirror/"
    dry = stack.run_cli("stt", prefix, "--provider", "deepgram", "--dry-run", extra_env=env)
    assert dry.returncode == 0, dry.stderr
    assert "Dry run: 30 items" in dry.stdout
    argv = ["stt", prefix, "--provider", "deepgram", "--formats", "srt", "--mirror-to"]
    refused = stack.run_cli(*argv, f"s3://{archive_bucket}/out/", extra_env=env)
    assert refused.returncode == 2 and "SPEECHBATCH_ARCHIVE_BUCKETS" in refused.stderr
    target = f"s3://{output_bucket}/transcripts/2026/"
    done = stack.run_cli(*argv, target, "--out", str(tmp_path / "out"), "--json", extra_env=env)
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)
    assert (job["status"], job["output"]["url"]) == ("succeeded", target)
    listed = s3_client.list_objects_v2(Bucket=output_bucket, Prefix="transcripts/2026/")
    assert {o["Key"] for o in listed.get("Contents", [])} == {
        f"transcripts/2026/{n % 2}/m{n:02d}.wav.{ext}" for n in range(30) for ext in ("json", "srt")
    }
    assert len(list((tmp_path / "out").glob("*.srt"))) == 30


def _clip(stack: Stack) -> bytes:
    with httpx.Client(base_url=stack.emulator_url, timeout=30.0) as emulator:
        return emulator.post(
            "/deepgram/v1/speak?model=aura-2-thalia-en&encoding=linear16&container=wav",
            headers={"Authorization": f"Token {stack.env['DEEPGRAM_API_KEY']}"},
            json={"text": "one two"},
        ).content


def test_local_mode_stt_on_a_folder_recurses_for_audio_and_a_rerun_skips_it(
    tmp_path: Path,
) -> None:
    """`speechbatch stt recordings/` without an API lists the folder (audio files in every
    subfolder, nothing else) into an archive job run by the offline engine; the same command
    again skips every file, and both download the transcripts."""
    home = {"SPEECHBATCH_HOME": str(tmp_path / "home")}
    script = tmp_path / "two.txt"
    script.write_text("Good morning.\nGood night.\n")
    spoken = run_local(tmp_path, "tts", "--json", str(script), "--out", "wav", env=home)
    assert spoken.returncode == 0, spoken.stderr
    for n, wav in enumerate(sorted((tmp_path / "wav").glob("*.wav"))):
        folder = tmp_path / "recordings" / f"day{n}"
        folder.mkdir(parents=True)
        (folder / f"call{n}.wav").write_bytes(wav.read_bytes())
    (tmp_path / "recordings" / "notes.txt").write_text("not audio")
    first = run_local(tmp_path, "stt", "recordings/", "--json", "--formats", "txt", env=home)
    assert first.returncode == 0, first.stderr
    job = json.loads(first.stdout)
    assert (job["status"], job["counts"]["total"], job["counts"]["succeeded"]) == (
        "succeeded",
        2,
        2,
    )
    again = run_local(tmp_path, "stt", "recordings/", "--json", "--formats", "txt", env=home)
    assert again.returncode == 0, again.stderr
    rerun = json.loads(again.stdout)
    assert (rerun["status"], rerun["counts"]["skipped"]) == ("succeeded", 2)
    for done in (job, rerun):
        texts = sorted(p.name for p in (tmp_path / "out" / done["id"]).glob("*.txt"))
        assert texts == ["000001-1-call0.wav.txt", "000002-2-call1.wav.txt"]


def run_local(cwd: Path, *args: str, env: dict[str, str]) -> Any:
    """The CLI in local mode (no SPEECHBATCH_* from this process's environment)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("SPEECHBATCH_")}
    return subprocess.run(
        [CLI, *args],
        cwd=cwd,
        env={**base, **env},
        text=True,
        capture_output=True,
        timeout=180,
        check=False,
    )
