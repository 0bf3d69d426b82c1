"""Smallest AI end to end: API → Redis → worker → emulator (Waves) → S3 → poll, real processes.

A 200-line TTS job over each transport Smallest offers (HTTP and SSE), a 20-file Pulse job,
and the bad input refused at submit or failed alone. One stack serves the whole module.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import soundfile as sf

from tests.e2e.stack import Stack, running_postgres_stack

pytestmark = pytest.mark.e2e

LINES = 200


@pytest.fixture(scope="module")
def stack(
    redis_url: str,
    s3_endpoint_url: str,
    s3_client: Any,
    postgres_admin_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    """The deployed shape on PostgreSQL, Smallest pointed at the emulator."""
    workdir: Path = tmp_path_factory.mktemp("smallest")
    # TTS runs on the catalog's own limit (1 in flight, as the emulator enforces). Pulse's
    # 25 a minute, spread evenly by the throttle, would make the 20-file job take 48 s: the
    # 20 calls stay under the emulator's 25 a minute anyway, so its rate is lifted here.
    limits = {"SPEECHBATCH_PROVIDER_LIMITS": "smallest-stt=4"}
    with running_postgres_stack(
        postgres_admin_url, redis_url, s3_endpoint_url, s3_client, workdir, extra_env=limits
    ) as running:
        yield running


def submit(stack: Stack, body: dict[str, Any]) -> httpx.Response:
    with stack.client() as client:
        return client.post("/v1/jobs", json=body)


def accepted(stack: Stack, body: dict[str, Any]) -> dict[str, Any]:
    response = submit(stack, body)
    assert response.status_code == 202, response.text
    return stack.wait_for_job(str(response.json()["id"]), timeout=60)


def tts_body(texts: list[str], **options: Any) -> dict[str, Any]:
    return {
        "kind": "tts",
        "provider": "smallest",
        "options": {"format": "wav", "sample_rate": 8000, **options},
        "items": [{"id": f"line-{n:03d}", "text": t} for n, t in enumerate(texts)],
    }


def fetch(url: str) -> bytes:
    response = httpx.get(url, timeout=30)
    assert response.status_code == 200, (url, response.status_code)
    return response.content


def emulated_requests(stack: Stack) -> list[dict[str, Any]]:
    with stack.emulator() as emulator:
        records: list[dict[str, Any]] = emulator.get("/_emulator/requests").json()
        emulator.delete("/_emulator/requests")
    return records


@pytest.mark.parametrize(("transport", "route"), [("http", "/tts"), ("stream", "/tts/live")])
def test_200_line_tts_job_over_each_transport(stack: Stack, transport: str, route: str) -> None:
    """Every line of a 200-line script, over HTTP or SSE, becomes a WAV in S3 that decodes to
    its recorded length, in one attempt each, with no 429 from Smallest's one-at-a-time cap."""
    emulated_requests(stack)
    texts = [f"Line {n} of the Smallest voiceover, over {transport}." for n in range(LINES)]
    job = accepted(stack, tts_body(texts, transport=transport))
    assert job["status"] == "succeeded", job
    assert job["options"]["transport"] == transport
    items = stack.items(job["id"])
    assert len(items) == LINES
    for item in items:
        audio, rate = sf.read(io.BytesIO(fetch(item["output"]["url"])))
        assert rate == 8000
        assert len(audio) / rate == pytest.approx(item["output"]["duration_s"], rel=0.01)
        assert item["attempts"] == 1
    records = emulated_requests(stack)
    assert {r["path"] for r in records} == {f"/smallest/waves/v1{route}"}
    assert [r for r in records if r["status"] != 200] == []


def test_20_file_pulse_job_writes_parseable_transcripts(stack: Stack) -> None:
    """Twenty recordings come back as Pulse transcripts with words and speakers, plus
    SRT/VTT/TXT renderings that parse."""
    with httpx.Client(base_url=stack.emulator_url, timeout=30) as emulator:
        clips = [
            emulator.post(
                "/smallest/waves/v1/tts",
                headers={
                    "Authorization": f"Bearer {stack.env['SMALLEST_API_KEY']}",
                    "Accept": "audio/wav",
                },
                json={"text": "word " * (4 + n), "voice_id": "magnus", "sample_rate": 16000},
            ).content
            for n in range(20)
        ]
    sources = [stack.upload(f"call-{n}.wav", wav) for n, wav in enumerate(clips)]
    body = {
        "kind": "stt",
        "provider": "smallest",
        "items": [{"id": f"call-{n}", "source": s} for n, s in enumerate(sources)],
    }
    job = accepted(stack, body)
    assert job["status"] == "succeeded", job
    items = stack.items(job["id"])
    assert len(items) == 20
    for n, item in enumerate(items):
        files = {f["format"]: f["url"] for f in item["output"]["files"]}
        assert set(files) == {"json", "txt", "srt", "vtt"}
        transcript = json.loads(fetch(files["json"]))
        assert (transcript["provider"], transcript["model"]) == ("smallest", "pulse")
        assert transcript["text"] and transcript["words"] and transcript["segments"]
        expected = sf.info(io.BytesIO(clips[n])).duration
        assert transcript["duration_s"] == pytest.approx(expected, abs=0.01)
        assert {w["speaker"] for w in transcript["words"]} <= {"0", "1"}
        assert fetch(files["srt"]).startswith(b"1\n")
        assert fetch(files["vtt"]).startswith(b"WEBVTT")
        assert fetch(files["txt"]).strip()


@pytest.mark.parametrize(
    ("change", "code", "named"),
    [
        ({"model": "lightning_v9"}, "unknown_model", "lightning_v3.1_pro"),
        ({"options": {"transport": "carrier-pigeon"}}, "invalid_request", "'websocket'"),
        ({"kind": "stt", "options": {"transport": "websocket"}}, "invalid_option", "offers http"),
        ({"kind": "stt", "options": {"transport": "stream"}}, "invalid_option", "offers http"),
        ({"model": "lightning-v2"}, "model_deprecated", "'lightning_v3.1'"),
    ],
)
def test_bad_input_is_refused_at_submit(
    stack: Stack, change: dict[str, Any], code: str, named: str
) -> None:
    """An unknown model, an unknown or unoffered transport and a retired model are each a 422
    with its own code and a message naming what to use instead."""
    body = {**tts_body(["Never spoken."]), **change}
    if body["kind"] == "stt":
        body["items"] = [{"source": "https://example.com/call.wav"}]
    response = submit(stack, body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == code
    assert named in response.json()["error"]["message"]


def test_a_line_answered_410_fails_alone_naming_the_replacement(stack: Stack) -> None:
    """A line Smallest answers 410 MODEL_DEPRECATED fails at once (model_deprecated, one
    attempt) naming the endpoint to use, while the other lines succeed."""
    texts = ["Fine line one.", "Retired voice [[status:410]]", "Fine line three."]
    job = accepted(stack, tts_body(texts))
    assert job["status"] == "completed_with_errors", job
    (bad,) = [i for i in stack.items(job["id"]) if i["status"] == "failed"]
    assert (bad["id"], bad["attempts"]) == ("line-001", 1)
    assert bad["error"]["code"] == "model_deprecated"
    assert "/waves/v1/tts" in bad["error"]["message"]
