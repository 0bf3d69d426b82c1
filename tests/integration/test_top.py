"""`speechbatch top` as a process against a real `speechbatch api` process on real Redis:
`--json` and `--once` show the jobs in flight with rate and ETA and the provider states."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from jobs.catalog_limits import provider_limits
from jobs.records import ItemResult
from jobs.tenants import create_api_key
from storage.provider_keys import credential_fingerprint
from tests.e2e.stack import CLI, api_process
from tests.integration.helpers import migrated_ledger, published, tts_job
from workers.throttle import ProviderThrottle

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """An API process with an SLNG key; a running 4-item job with one item done; one SLNG
    permit held in Redis. Yields the CLI's environment, the job id and the key's fingerprint."""
    tmp_path = tmp_path_factory.mktemp("top")
    sqlite_url = f"sqlite:///{tmp_path / 'top.db'}"
    slng_key = f"sk-top-{uuid.uuid4().hex}"
    ledger = migrated_ledger(sqlite_url)
    job = tts_job(ledger, ["one", "two", "three", "four"]).job
    item = ledger.claim(published(ledger).ids[0], lease_s=60)
    assert item is not None
    ledger.succeed(item, ItemResult("k.wav", 4, "audio/wav", 1.0, 3), [])
    key = create_api_key(ledger.db.sessions, "acme")
    client = redis.Redis.from_url(redis_url)
    fp = credential_fingerprint(slng_key)
    permit = ProviderThrottle(client, provider_limits(), lease_s=60).acquire(
        "slng", fp, max_wait_s=1
    )
    assert permit is not None
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("SLNG_API_KEY", slng_key)  # the API process's provider key
            with api_process(sqlite_url, redis_url, tmp_path) as url:
                env = {**os.environ, "SPEECHBATCH_API_URL": url, "SPEECHBATCH_API_KEY": key}
                yield {"env": env, "job_id": job.id, "fingerprint": fp, "tmp": tmp_path}
    finally:
        permit.release()
        client.close()
        ledger.db.dispose()


def top(env: dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, "top", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_top_json_shows_jobs_in_flight_and_provider_states(server: dict[str, Any]) -> None:
    """`top --json` prints one frame: the running job with its done/total, a rate and an ETA,
    the queue depth, and the SLNG row counting the held permit, under the key's fingerprint."""
    done = top(server["env"], "--json", cwd=server["tmp"])
    assert done.returncode == 0, done.stderr
    frame = json.loads(done.stdout)
    (job,) = [j for j in frame["jobs"] if j["id"] == server["job_id"]]
    assert (job["status"], job["done"], job["total"]) == ("running", 1, 4)
    assert job["rate_per_s"] > 0 and job["eta_s"] > 0
    assert isinstance(frame["queue_depth"], int)
    slng = next(p for p in frame["providers"] if p["limits_name"] == "slng")
    assert slng["credential"] == server["fingerprint"]
    assert slng["in_flight"] == 1 and slng["circuit"] == "closed" and slng["configured"]


def test_top_once_prints_one_readable_frame(server: dict[str, Any]) -> None:
    """`top --once` prints the frame as tables (job id whole, a progress bar, each throttle
    with its circuit) and exits 0."""
    done = top(server["env"], "--once", cwd=server["tmp"])
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert server["job_id"] in out and "1/4" in out and "25%" in out
    assert "jobs in flight" in out and "providers" in out
    assert "smallest-stt" in out and "closed" in out


def test_top_without_an_api_says_so_and_exits_2(tmp_path: Path) -> None:
    """With no SPEECHBATCH_API_URL `top` exits 2 with one sentence naming the settings."""
    env = {k: v for k, v in os.environ.items() if k != "SPEECHBATCH_API_URL"}
    done = top(env, "--once", cwd=tmp_path)
    assert done.returncode == 2
    assert "SPEECHBATCH_API_URL" in done.stderr and "Traceback" not in done.stderr
