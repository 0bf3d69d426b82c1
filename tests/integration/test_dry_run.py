"""Dry runs and job costs through the REST API and the CLI, on real databases and Redis.

A dry run must check a body exactly as a submit does, answer 200 with the estimate, and
leave no row, no message and no provider call behind; a job's cost follows the
deployment's price setting.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from sqlalchemy import func, select, update

from jobs.models import Item, Job
from storage.publisher import QUEUE
from tests.e2e.stack import CLI
from tests.integration.test_api import Api, running_api

pytestmark = pytest.mark.integration

PRICES = '{"openai": {"tts_per_million_chars": 1000, "stt_per_minute": 0.6}}'


@pytest.fixture
def api(database_url: str, redis_url: str, tmp_path: Path) -> Any:
    with running_api(
        database_url, redis_url, storage_url=f"file://{tmp_path / 'objects'}", prices=PRICES
    ) as a:
        yield a


def dry_run(api: Api, body: dict[str, Any]) -> Any:
    return api.client.post("/v1/jobs?dry_run=true", json=body, headers=api.auth())


def rows(api: Api) -> tuple[int, int]:
    with api.resources.sessions() as session:
        return (
            session.scalar(select(func.count()).select_from(Job)) or 0,
            session.scalar(select(func.count()).select_from(Item)) or 0,
        )


def tts_body(texts: list[str], **extra: Any) -> dict[str, Any]:
    return {"kind": "tts", "provider": "openai", "items": [{"text": t} for t in texts], **extra}


def test_a_tts_dry_run_estimates_and_creates_nothing(api: Api) -> None:
    """200 with items, characters and the cost at the configured price (1,000 USD per 1M
    characters here), the budget judged; no job or item row, no broker message."""
    response = dry_run(api, tts_body(["Hello there.", "Bye."], budget={"characters": 10}))
    assert response.status_code == 200, response.text
    estimate = response.json()
    assert estimate["dry_run"] is True and estimate["items"] == 2
    assert estimate["usage"]["characters"] == 16
    assert estimate["cost"] == {"estimated": 0.016, "currency": "USD", "prices_as_of": "2025-10"}
    assert estimate["within_budget"] is False
    assert "Location" not in response.headers
    assert rows(api) == (0, 0)
    assert api.redis.llen(QUEUE) == 0


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (tts_body(["Hi."], model="no-such-model"), "unknown_model"),
        (tts_body([]), "no_items"),
        (tts_body(["Hi."], budget={"characters": -1}), "invalid_request"),
        (
            {"kind": "stt", "provider": "openai", "items": [{"source": "https://x.example/a.wav"}],
             "budget": {"characters": 5}},
            "invalid_budget",
        ),
    ],
)  # fmt: skip
def test_a_dry_run_refuses_what_a_submit_refuses(api: Api, body: dict[str, Any], code: str) -> None:
    """The same body gets the same status and code with and without dry_run."""
    refused, submitted = dry_run(api, body), api.post_job(body)
    assert refused.status_code == submitted.status_code == 422
    assert refused.json()["error"]["code"] == submitted.json()["error"]["code"] == code
    assert rows(api) == (0, 0)


def _wav(seconds: float, rate: int = 16000) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, np.zeros(int(seconds * rate), dtype="int16"), rate, format="WAV")
    return buffer.getvalue()


def test_an_stt_dry_run_reads_upload_headers_and_says_what_it_cannot(api: Api) -> None:
    """A 2 s uploaded WAV is counted from its header; a URL source is not fetched, so it is
    counted as unknown with a note, and the cost covers the known 2 s (0.6 USD a minute)."""
    upload = api.upload("a.wav", _wav(2.0))
    assert upload.status_code == 201, upload.text
    body = {
        "kind": "stt",
        "provider": "openai",
        "items": [{"source": upload.json()["source"]}, {"source": "https://x.example/b.wav"}],
    }
    estimate = dry_run(api, body).json()
    assert estimate["usage"] == {"characters": 0, "audio_seconds": 2.0, "unknown_durations": 1}
    assert estimate["cost"]["estimated"] == pytest.approx(0.02)
    assert any("not fetched" in note for note in estimate["notes"])
    assert rows(api) == (0, 0)


def test_a_jobs_cost_follows_the_price_setting_per_provider(api: Api) -> None:
    """A job whose items were spoken partly by its fallback shows usage per provider (one
    grouped read of its rerouted items) and the cost at the configured prices."""
    body = tts_body(["Hello.", "World."], fallback=[{"provider": "deepgram"}])
    job_id = api.post_job(body).json()["id"]
    with api.resources.sessions() as session, session.begin():
        session.execute(
            update(Job).where(Job.id == job_id).values(usage_characters=3000, succeeded=2)
        )
        session.execute(
            update(Item)
            .where(Item.job_id == job_id, Item.seq == 2)
            .values(route=1, status="succeeded", characters=1000, duration_s=4.0)
        )
    job = api.client.get(f"/v1/jobs/{job_id}", headers=api.auth()).json()
    by_provider = job["usage"]["by_provider"]
    assert by_provider["openai"]["characters"] == 2000
    assert by_provider["deepgram"] == {"characters": 1000, "audio_seconds": 4.0, "cost": 0.03}
    assert job["cost"]["estimated"] == pytest.approx(2000 * 1000e-6 + 1000 * 30e-6)
    listed = api.client.get("/v1/jobs", headers=api.auth()).json()["jobs"][0]
    assert listed["usage"]["by_provider"] == by_provider


def test_the_cli_prints_a_dry_run_in_local_mode_and_runs_nothing(tmp_path: Path) -> None:
    """`speechbatch tts --dry-run --json` prints the estimate; the local database then holds
    no job (`speechbatch jobs --json` lists none)."""
    script = tmp_path / "lines.txt"
    script.write_text("One line.\nAnother line.\n")
    cli = local_cli(tmp_path)

    done = cli("tts", str(script), "--dry-run", "--json")
    assert done.returncode == 0, done.stderr
    estimate = json.loads(done.stdout)
    assert (estimate["items"], estimate["usage"]["characters"]) == (2, 22)
    assert estimate["cost"]["estimated"] == 0.0  # the local engine is free
    plain = cli("tts", str(script), "--dry-run")
    assert plain.returncode == 0 and "Dry run: 2 items, 22 characters" in plain.stdout
    listed = cli("jobs", "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == []


def test_odd_dry_run_values_are_refused_with_the_envelope(api: Api) -> None:
    """`dry_run=maybe` is a 422 invalid_request envelope, and creates nothing."""
    response = api.client.post("/v1/jobs?dry_run=maybe", json=tts_body(["Hi."]), headers=api.auth())
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_request"
    assert rows(api) == (0, 0)


def test_an_archive_dry_run_lists_a_folder_and_extrapolates_seconds_from_headers(
    database_url: str, redis_url: str, tmp_path: Path
) -> None:
    """An archive source is listed: two WAVs (1 s and 3 s) and a text file make 2 items of
    their bytes; audio seconds are extrapolated from the sampled headers (4 s at 0.6 USD a
    minute: 0.04) and labelled so; nothing is created."""
    archive = tmp_path / "archive"
    (archive / "sub").mkdir(parents=True)
    (archive / "a.wav").write_bytes(_wav(1.0))
    (archive / "sub" / "b.wav").write_bytes(_wav(3.0))
    (archive / "notes.txt").write_text("not audio")
    settings = {
        "storage_url": f"file://{tmp_path / 'objects'}",
        "archive_buckets": f"file://{archive}",
        "prices": PRICES,
    }
    with running_api(database_url, redis_url, **settings) as api:
        body = {"kind": "stt", "provider": "openai", "source": {"prefix": f"file://{archive}/"}}
        answer = dry_run(api, body)
        assert answer.status_code == 200, answer.text
        estimate = answer.json()
        assert (estimate["items"], estimate["items_at_least"]) == (2, 2)
        listing = estimate["archive"]
        assert (listing["complete"], listing["listed"], listing["items"]) == (True, 3, 2)
        assert listing["bytes"] == len(_wav(1.0)) + len(_wav(3.0))
        assert listing["audio_seconds_basis"] == "extrapolated"
        assert estimate["usage"]["audio_seconds"] == pytest.approx(4.0, rel=1e-3)
        assert estimate["cost"]["estimated"] == pytest.approx(0.04, rel=1e-3)
        assert any("extrapolated" in note for note in estimate["notes"])
        assert rows(api) == (0, 0)


def test_the_cli_dry_run_of_a_folder_prints_its_count_in_local_mode(tmp_path: Path) -> None:
    """`speechbatch stt FOLDER --dry-run` in local mode lists the folder (recursively, with
    --pattern) and prints the item count and bytes; no job is created."""
    folder = tmp_path / "recordings"
    (folder / "day1").mkdir(parents=True)
    for n in range(5):
        (folder / "day1" / f"c{n}.wav").write_bytes(_wav(0.1))
    (folder / "skip.flac").write_bytes(b"fLaC")
    cli = local_cli(tmp_path)

    done = cli("stt", str(folder), "--pattern", "*.wav", "--dry-run", "--json")
    assert done.returncode == 0, done.stderr
    estimate = json.loads(done.stdout)
    assert (estimate["items"], estimate["archive"]["listed"]) == (5, 6)
    plain = cli("stt", str(folder), "--pattern", "*.wav", "--dry-run")
    assert plain.returncode == 0, plain.stderr
    assert f"Dry run: 5 items, {5 * len(_wav(0.1)):,} bytes" in plain.stdout
    listed = cli("jobs", "--json")
    assert listed.returncode == 0 and json.loads(listed.stdout) == []


def local_cli(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """The `speechbatch` command in local mode, its state under `tmp_path/home`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPEECHBATCH_")}
    env["SPEECHBATCH_HOME"] = str(tmp_path / "home")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [CLI, *args],
            cwd=tmp_path,
            env=env,
            text=True,
            capture_output=True,
            timeout=120,
            check=False,
        )

    return cli
