"""The CLI as a newcomer runs it: local mode from any folder, `.env`, `--no-wait` + `wait`,
`--json`, and expected failures told in one sentence with a code and exit 2, never a
traceback. Each test runs the real console script as a subprocess on SQLite (or the real
PostgreSQL / SeaweedFS for the failures that need them)."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.e2e.stack import CLI

pytestmark = [pytest.mark.integration]


def run(
    cwd: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SPEECHBATCH_")}
    return subprocess.run(
        [CLI, *args],
        cwd=cwd,
        env={**base, **(env or {})},
        text=True,
        capture_output=True,
        timeout=timeout,
        check=False,
    )


def assert_plain_failure(done: subprocess.CompletedProcess[str], code: str, exit_code: int = 2):  # type: ignore[no-untyped-def]
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == exit_code, (done.returncode, done.stderr)
    assert f"error ({code}):" in done.stderr, done.stderr


@pytest.fixture
def home(tmp_path: Path) -> dict[str, str]:
    return {"SPEECHBATCH_HOME": str(tmp_path / "home")}


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "lines.txt"
    path.write_text("".join(f"Line number {n}.\n" for n in range(1, 7)))
    return path


def test_local_state_lives_in_speechbatch_home_not_the_current_folder(
    tmp_path: Path, home: dict[str, str], script: Path
) -> None:
    """A job made in one folder is listed from another, and the header names the home."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    made = run(tmp_path / "a", "tts", str(script), "--json", env=home)
    assert made.returncode == 0, made.stderr
    job_id = json.loads(made.stdout)["id"]
    listed = run(tmp_path / "b", "jobs", env=home)
    assert job_id in listed.stdout, listed.stdout
    assert f"local mode, state in {home['SPEECHBATCH_HOME']}" in listed.stderr
    assert not (tmp_path / "b" / ".speechbatch").exists()
    as_json = json.loads(run(tmp_path / "b", "jobs", "--json", env=home).stdout)
    assert [job["id"] for job in as_json] == [job_id]


def test_dotenv_is_read_and_the_environment_wins(tmp_path: Path, script: Path) -> None:
    """`.env` in the current folder sets SPEECHBATCH_* values; the same name in the
    environment overrides it."""
    (tmp_path / ".env").write_text(f"SPEECHBATCH_HOME={tmp_path / 'from-dotenv'}\n")
    from_file = run(tmp_path, "jobs")
    assert f"state in {tmp_path / 'from-dotenv'}" in from_file.stderr, from_file.stderr
    overridden = run(tmp_path, "jobs", env={"SPEECHBATCH_HOME": str(tmp_path / "from-env")})
    assert f"state in {tmp_path / 'from-env'}" in overridden.stderr, overridden.stderr
    (tmp_path / ".env").write_text("SPEECHBATCH_API_URL=http://127.0.0.1:9\n")
    assert_plain_failure(run(tmp_path, "jobs"), "api_unreachable")


def test_no_wait_returns_and_a_background_runner_finishes_the_job(
    tmp_path: Path, home: dict[str, str], script: Path
) -> None:
    """Local `--no-wait` prints the job and returns; the job still finishes, and `wait`
    re-attaches and exits 0 with the final job as JSON."""
    started = run(tmp_path, "tts", str(script), "--no-wait", "--json", env=home)
    assert started.returncode == 0, started.stderr
    job_id = json.loads(started.stdout)["id"]
    waited = run(tmp_path, "wait", job_id, "--json", env=home)
    assert waited.returncode == 0, waited.stderr
    final = json.loads(waited.stdout)
    assert final["status"] == "succeeded"
    assert final["counts"]["succeeded"] == 6


def test_wait_resumes_a_job_whose_command_was_killed(tmp_path: Path, home: dict[str, str]) -> None:
    """A local job interrupted mid-run (SIGKILL of `tts`) is finished by `speechbatch wait`,
    the killed run's in-flight item included once its lease runs out."""
    long_script = tmp_path / "long.txt"
    long_script.write_text(
        "".join(f"This is sentence {n} of a longer script.\n" for n in range(150))
    )
    env = {**home, "SPEECHBATCH_LEASE_SECONDS": "3"}
    base = {k: v for k, v in os.environ.items() if not k.startswith("SPEECHBATCH_")}
    proc = subprocess.Popen(
        [CLI, "tts", str(long_script), "--concurrency", "1"],
        cwd=tmp_path,
        env={**base, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    database = Path(home["SPEECHBATCH_HOME"]) / "speechbatch.db"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not _succeeded(database):
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    ((job_id, done_before),) = _succeeded(database).items()
    assert 1 <= done_before < 150
    waited = run(tmp_path, "wait", job_id, "--json", env=env, timeout=200)
    assert waited.returncode == 0, waited.stderr
    assert json.loads(waited.stdout)["counts"]["succeeded"] == 150


def _succeeded(database: Path) -> dict[str, int]:
    """Succeeded items per job, read straight from local mode's SQLite file."""
    if not database.exists():
        return {}
    with contextlib.closing(sqlite3.connect(database, timeout=5)) as db:
        try:
            rows = db.execute(
                "SELECT job_id, count(*) FROM items WHERE status = 'succeeded' GROUP BY job_id"
            ).fetchall()
        except sqlite3.OperationalError:  # the schema is not there yet
            return {}
    return dict(rows)


def test_download_of_an_unfinished_job_says_so_and_a_missing_job_makes_no_folder(
    tmp_path: Path, home: dict[str, str], script: Path
) -> None:
    """`download` refuses a running job with exit 1, and a missing job with exit 2, creating
    no output folder either way."""
    missing = run(tmp_path, "download", "job_nope", "--out", str(tmp_path / "x"), env=home)
    assert_plain_failure(missing, "not_found")
    assert not (tmp_path / "x").exists()
    long_script = tmp_path / "long.txt"
    long_script.write_text("".join(f"Sentence {n} is here.\n" for n in range(200)))
    started = run(tmp_path, "tts", str(long_script), "--no-wait", "--concurrency", "1", env=home)
    job_id = started.stdout.strip()
    running = run(tmp_path, "download", job_id, "--out", str(tmp_path / "y"), env=home)
    assert_plain_failure(running, "job_not_finished", exit_code=1)
    assert f"speechbatch wait {job_id}" in running.stderr
    assert not (tmp_path / "y").exists()
    run(tmp_path, "cancel", job_id, env=home)


def test_stt_ids_from_subfolders_do_not_collide(tmp_path: Path, home: dict[str, str]) -> None:
    """`stt 'calls/*/recording.wav'` names items after their folders and transcribes each."""
    spoken = run(tmp_path, "tts", "--json", str(_two_lines(tmp_path)), "--out", "wav", env=home)
    assert spoken.returncode == 0, spoken.stderr
    for n, wav in enumerate(sorted((tmp_path / "wav").glob("*.wav"))):
        folder = tmp_path / "calls" / f"call{n}"
        folder.mkdir(parents=True)
        (folder / "recording.wav").write_bytes(wav.read_bytes())
    done = run(tmp_path, "stt", "calls/*/recording.wav", "--json", "--formats", "txt", env=home)
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)
    outputs = {p.name for p in (tmp_path / "out" / job["id"]).iterdir()}
    assert {"000001-call0-recording.txt", "000002-call1-recording.txt"} <= outputs


def _two_lines(tmp_path: Path) -> Path:
    path = tmp_path / "two.txt"
    path.write_text("Good morning.\nGood night.\n")
    return path


def test_stt_id_collision_is_refused_before_uploading(tmp_path: Path, home: dict[str, str]) -> None:
    """Two inputs that would share an item id fail with exit 2 and create no job."""
    for name in ("talk.wav", "talk.flac"):
        (tmp_path / name).write_bytes(b"RIFF")
    done = run(tmp_path, "stt", "talk.wav", "talk.flac", env=home)
    assert_plain_failure(done, "invalid_request")
    assert "would both be item 'talk'" in done.stderr
    assert json.loads(run(tmp_path, "jobs", "--json", env=home).stdout) == []


def test_configuration_failures_are_one_sentence_with_exit_2(
    tmp_path: Path, home: dict[str, str], postgres_admin_url: str
) -> None:
    """A bad provider limit, a database that does not exist, an unknown database scheme, an
    unreachable API and `api` without a broker each end in `error (code): ...`, exit 2."""
    missing_db = postgres_admin_url.rsplit("/", 1)[0] + f"/sb_missing_{uuid.uuid4().hex[:8]}"
    cases = [
        ({"SPEECHBATCH_PROVIDER_LIMITS": "slng=lots"}, ("jobs",), "invalid_configuration"),
        ({"SPEECHBATCH_DATABASE_URL": missing_db}, ("jobs",), "database_unavailable"),
        ({"SPEECHBATCH_DATABASE_URL": "mysql://db/x"}, ("jobs",), "invalid_configuration"),
        ({"SPEECHBATCH_API_URL": "http://127.0.0.1:9"}, ("status", "j"), "api_unreachable"),
        ({}, ("api",), "broker_unavailable"),
    ]
    for env, args, code in cases:
        assert_plain_failure(run(tmp_path, *args, env={**home, **env}), code)


def test_missing_bucket_is_named_and_migrate_creates_it(
    tmp_path: Path, home: dict[str, str], s3_endpoint_url: str, s3_client
) -> None:  # type: ignore[no-untyped-def]
    """With a bucket that does not exist the CLI names it (exit 2); `migrate` creates it."""
    bucket = f"missing-{uuid.uuid4().hex[:10]}"
    env = {
        **home,
        "SPEECHBATCH_STORAGE_URL": f"s3://{bucket}",
        "SPEECHBATCH_S3_ENDPOINT_URL": s3_endpoint_url,
    }
    refused = run(tmp_path, "jobs", env=env)
    assert_plain_failure(refused, "storage_unavailable")
    assert bucket in refused.stderr
    migrated = run(tmp_path, "migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr
    s3_client.head_bucket(Bucket=bucket)
    assert run(tmp_path, "jobs", env=env).returncode == 0
    s3_client.delete_bucket(Bucket=bucket)


def test_providers_lists_the_catalog(tmp_path: Path, home: dict[str, str]) -> None:
    """`providers --json` lists every provider with its default models and voice."""
    done = run(tmp_path, "providers", "--json", env=home)
    assert done.returncode == 0, done.stderr
    by_name = {row["name"]: row for row in json.loads(done.stdout)}
    assert by_name["slng"]["default_tts_model"] == "slng/deepgram/aura:2-en"
    assert by_name["local"]["default_voice"] == "en-us"
    assert "slng" in run(tmp_path, "providers", env=home).stdout
