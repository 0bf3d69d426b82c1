"""The emulator's SLNG batch API: submit → 202 → status moving with time → files → delete."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import numpy as np
import soundfile as sf
from starlette.applications import Starlette
from starlette.routing import Mount

from emulator import slng_batch
from emulator.config import EmulatorConfig
from emulator.dials import Dials
from tests.unit.emulator_client import run

AUTH = {"Authorization": "Bearer test-key"}
JOBS = "/slng-batch/v1/batch/jobs"
CONFIG = {"transcription_config": json.dumps({"language": "en"})}


def wav(seconds: float, rate: int = 16000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    buffer = io.BytesIO()
    sf.write(buffer, 0.2 * np.sin(2 * np.pi * 300 * t), rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def with_clock(
    check: Callable[[httpx.AsyncClient, Clock], Awaitable[Any]], config: EmulatorConfig
) -> Any:
    """Run `check` against the batch routes alone, on a clock the test moves."""
    clock = Clock()
    app = Starlette(
        routes=[Mount(slng_batch.PREFIX, routes=slng_batch.routes(Dials(config), clock))]
    )

    async def main() -> Any:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://emulator") as client:
            return await check(client, clock)

    return asyncio.run(main())


def submit(
    client: httpx.AsyncClient, name: str = "a.wav", **data: str
) -> Awaitable[httpx.Response]:
    return client.post(
        JOBS, headers=AUTH, data={**CONFIG, **data}, files={"file": (name, wav(4.0), "audio/wav")}
    )


def test_a_job_moves_queued_in_progress_done_with_time_and_serves_its_files() -> None:
    """Status follows the dial (2 s per audio second), and the json download parses."""

    async def check(client: httpx.AsyncClient, clock: Clock) -> None:
        answer = await submit(client, job_id="job1")
        assert (answer.status_code, answer.json()) == (202, {"job_id": "job1", "status": "QUEUED"})
        states = []
        for step in (0.0, 3.0, 4.0, 1.0):  # 8 s of work for 4 s of audio
            clock.now += step
            states.append((await client.get(f"{JOBS}/job1", headers=AUTH)).json()["status"])
        assert states == ["QUEUED", "IN_PROGRESS", "IN_PROGRESS", "DONE"]
        files = (await client.get(f"{JOBS}/job1/files", headers=AUTH)).json()
        assert [o["format"] for o in files["outputs"]] == ["json", "txt", "srt"]
        body = (await client.get(files["outputs"][0]["download_url"])).json()
        words = [r for r in body["results"] if r["type"] == "word"]
        assert words and words[-1]["end_time"] <= 4.0 and body["job"]["duration"] == 4.0
        forged = files["outputs"][0]["download_url"].replace("sig=", "sig=0")
        assert (await client.get(forged)).status_code == 403

    with_clock(check, EmulatorConfig(batch_seconds_per_audio_second=2.0))


def test_files_are_empty_before_done_and_delete_waits_for_the_end() -> None:
    """No outputs while running; DELETE is 409 until DONE, then 202 DELETED."""

    async def check(client: httpx.AsyncClient, clock: Clock) -> None:
        await submit(client, job_id="job2")
        assert (await client.get(f"{JOBS}/job2/files", headers=AUTH)).json()["outputs"] == []
        refused = await client.delete(f"{JOBS}/job2", headers=AUTH)
        assert (refused.status_code, refused.json()) == (
            409,
            {"error": "Job must be DONE or FAILED to delete"},
        )
        clock.now += 10
        deleted = await client.delete(f"{JOBS}/job2", headers=AUTH)
        assert (deleted.status_code, deleted.json()["status"]) == (202, "DELETED")

    with_clock(check, EmulatorConfig(batch_seconds_per_audio_second=1.0))


def test_a_file_name_token_makes_the_job_fail_with_an_error_message() -> None:
    """`[[answer:failed]]` in the file name ends the job FAILED with error_message.message."""

    async def check(client: httpx.AsyncClient) -> dict[str, Any]:
        await submit(client, "x[[answer:failed]].wav", job_id="job3")
        body: dict[str, Any] = (await client.get(f"{JOBS}/job3", headers=AUTH)).json()
        return body

    body = run(check)
    assert body["status"] == "FAILED" and body["error_message"]["message"]


def test_documented_refusals_have_the_strict_error_body() -> None:
    """400 bad job_id, 403 no key, 409 repeated id, 404 unknown job: each `{"error": str}`."""

    async def check(client: httpx.AsyncClient) -> list[tuple[int, Any]]:
        answers = [
            await submit(client, job_id="not-alnum"),
            await client.post(JOBS, data=CONFIG, files={"file": ("a.wav", b"x", "audio/wav")}),
            await submit(client, job_id="same"),
            await submit(client, job_id="same"),
            await client.get(f"{JOBS}/nope", headers=AUTH),
            await client.post(JOBS, headers=AUTH, files={"file": ("a.wav", wav(1), "audio/wav")}),
        ]
        return [(a.status_code, a.json()) for a in answers]

    answers = run(check)
    assert [status for status, _ in answers] == [400, 403, 202, 409, 404, 400]
    assert answers[0][1] == {"error": "job_id must be alphanumeric"}
    assert answers[1][1] == {"error": "API key id not found"}
    for status, body in answers:
        if status != 202:
            assert list(body) == ["error"] and isinstance(body["error"], str)


def test_a_status_token_in_the_file_name_refuses_the_submit() -> None:
    """The shared dials read the file name: `[[status:500]]` is a 500 with the strict body."""

    async def check(client: httpx.AsyncClient) -> httpx.Response:
        return await submit(client, "b[[status:500]].wav")

    answer = run(check)
    assert (answer.status_code, answer.json()) == (500, {"error": "Internal server error"})


def test_a_json_input_url_job_is_accepted() -> None:
    """JSON {input_url, transcription_config} is queued like an upload (nothing is fetched)."""

    async def check(client: httpx.AsyncClient) -> httpx.Response:
        body = {"input_url": "https://example.com/a.wav", "transcription_config": {}}
        return await client.post(JOBS, headers=AUTH, json=body)

    answer = run(check)
    assert answer.status_code == 202 and answer.json()["status"] == "QUEUED"


def test_jobs_are_bounded_oldest_first(monkeypatch: Any) -> None:
    """Past MAX_JOBS the oldest job is forgotten (404), the newest kept."""
    monkeypatch.setattr(slng_batch, "MAX_JOBS", 2)

    async def check(client: httpx.AsyncClient) -> list[int]:
        for n in range(3):
            await submit(client, job_id=f"j{n}")
        return [(await client.get(f"{JOBS}/j{n}", headers=AUTH)).status_code for n in range(3)]

    assert run(check) == [404, 200, 200]
