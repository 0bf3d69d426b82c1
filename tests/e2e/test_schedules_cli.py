"""`speechbatch schedules` against a real `speechbatch api` process, and `worker --beat`
firing a due schedule inside a worker process and letting go of beat's lease on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from jobs.clock import utc_now
from jobs.migrate import upgrade_to_head
from jobs.models_schedules import BeatLease, Schedule, ScheduleRun
from jobs.tenants import create_api_key
from storage.db import open_database
from tests.e2e.stack import CLI, Proc, api_process

pytestmark = pytest.mark.e2e

JOB = {
    "kind": "tts",
    "provider": "local",
    "items": [{"id": "greeting", "text": "Good morning, {fire_date}."}],
    "output": {"prefix": "nightly/{fire_date}"},
}


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *args], env=env, text=True, capture_output=True, timeout=120, check=False
    )


def test_add_list_show_run_remove_through_the_api(
    sqlite_url: str, redis_url: str, tmp_path: Path
) -> None:
    """Each subcommand talks to the API: add, list, run (a job), show (its run), remove."""
    upgrade_to_head(sqlite_url)
    db = open_database(sqlite_url)
    key = create_api_key(db.sessions, "cli")
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps(JOB))
    with api_process(sqlite_url, redis_url, tmp_path) as url:
        env = {**os.environ, "SPEECHBATCH_API_URL": url, "SPEECHBATCH_API_KEY": key}
        added = cli(env, "schedules", "add", "morning", "--cron", "0 7 * * *",
                    "--timezone", "Europe/Berlin", "--job", str(job_file), "--json")  # fmt: skip
        assert added.returncode == 0, added.stderr
        schedule = json.loads(added.stdout)
        assert (schedule["name"], schedule["overlap"], schedule["catch_up"]) == (
            "morning",
            "skip",
            "once",
        )
        listed = cli(env, "schedules", "list", "--json")
        assert [s["id"] for s in json.loads(listed.stdout)] == [schedule["id"]]
        fired = cli(env, "schedules", "run", "morning", "--json")
        assert fired.returncode == 0, fired.stderr
        job = json.loads(fired.stdout)["job"]
        shown = cli(env, "schedules", "show", "morning")
        assert shown.returncode == 0 and job["id"] in shown.stdout, shown.stdout
        assert "Europe/Berlin" in shown.stdout
        duplicate = cli(env, "schedules", "add", "morning", "--cron", "0 7 * * *",
                        "--job", str(job_file))  # fmt: skip
        assert duplicate.returncode == 2 and "schedule_name_taken" in duplicate.stderr
        removed = cli(env, "schedules", "remove", "morning")
        assert removed.returncode == 0, removed.stderr
        missing = cli(env, "schedules", "show", "morning")
        assert missing.returncode == 2 and "error (not_found)" in missing.stderr
    db.dispose()


def test_bad_input_and_local_mode_exit_2_with_one_sentence(tmp_path: Path) -> None:
    """Without SPEECHBATCH_API_URL every subcommand says `api_required`; a bad job file is 2."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("SPEECHBATCH_")}
    env = {**base, "SPEECHBATCH_HOME": str(tmp_path / "home")}
    local = cli(env, "schedules", "list")
    assert local.returncode == 2 and "error (api_required)" in local.stderr
    assert "Traceback" not in local.stderr
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    refused = cli({**env, "SPEECHBATCH_API_URL": "http://127.0.0.1:9"}, "schedules", "add", "x",
                  "--cron", "* * * * *", "--job", str(bad))  # fmt: skip
    assert refused.returncode == 2 and "must hold a JSON object" in refused.stderr


def test_worker_with_beat_fires_a_due_schedule_and_releases_the_lease_on_sigterm(
    sqlite_url: str, redis_url: str, tmp_path: Path
) -> None:
    """`worker --beat` fires a schedule made due, then stops cleanly and lets go of the lease."""
    upgrade_to_head(sqlite_url)
    db = open_database(sqlite_url)
    key = create_api_key(db.sessions, "beat")
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps(JOB))
    with api_process(sqlite_url, redis_url, tmp_path) as url:
        env = {**os.environ, "SPEECHBATCH_API_URL": url, "SPEECHBATCH_API_KEY": key}
        added = cli(env, "schedules", "add", "due", "--cron", "0 3 1 1 *", "--job",
                    str(job_file), "--json")  # fmt: skip
        assert added.returncode == 0, added.stderr
    schedule_id = json.loads(added.stdout)["id"]
    due = utc_now().replace(microsecond=0) - timedelta(seconds=1)
    with db.sessions() as session:
        session.execute(update(Schedule).values(next_fire_at=due))
        session.commit()
    worker_env = {
        **os.environ,
        "SPEECHBATCH_DATABASE_URL": sqlite_url,
        "SPEECHBATCH_BROKER_URL": redis_url,
        "SPEECHBATCH_STORAGE_URL": f"file://{tmp_path / 'objects'}",
        "SPEECHBATCH_WORKER_SELF_CHECK_SECONDS": "0",
    }
    worker = Proc("worker", [CLI, "worker", "--concurrency", "2", "--beat", "--beat-interval",
                             "0.5"], worker_env, tmp_path)  # fmt: skip
    worker.start()
    try:
        deadline = time.monotonic() + 60
        fired: list[ScheduleRun] = []
        while not fired and time.monotonic() < deadline:
            time.sleep(0.3)
            query = select(ScheduleRun).where(
                ScheduleRun.schedule_id == schedule_id, ScheduleRun.job_id.is_not(None)
            )
            with db.sessions() as session:
                fired = list(session.scalars(query))
        assert [r.fire_time for r in fired] == [due], worker.tail()
        worker.signal(signal.SIGTERM)
        assert worker.popen is not None
        assert worker.popen.wait(30) is not None
        with db.sessions() as session:
            lease = session.get(BeatLease, "beat")
        assert lease is not None and lease.expires_at < utc_now(), worker.tail()
        assert "beat lease 'beat' taken" in worker.log_path.read_text()
    finally:
        worker.stop()
        db.dispose()
