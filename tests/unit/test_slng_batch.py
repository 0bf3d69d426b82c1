"""The SLNG batch adapter from the documented shapes (MockTransport), and the flow's steps."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from jobs.catalog_slng import SLNG_BATCH_STT_MODEL
from jobs.records import ClaimedItem, ProviderJob
from jobs.status import JobKind
from workers import batch_stt
from workers.audio import pcm16_to_wav
from workers.config import BatchPolicy
from workers.providers.base import AudioInput, Transcript
from workers.providers.errors import (
    AuthenticationFailed,
    InvalidInput,
    PermanentProviderError,
    ProviderUnavailable,
)
from workers.providers.slng_batch import BatchStatus, SlngBatch, parse_batch_json

BASE = "https://api.batch.slng.ai"
CLIP = AudioInput(pcm16_to_wav(b"\x10\x00" * 32000, 16000), "a.wav", "audio/wav")  # 2 s
SPEECHMATICS = {
    "format": "2.9",
    "job": {"duration": 2.0},
    "metadata": {"transcription_config": {"language": "en"}},
    "results": [
        {
            "type": "word",
            "start_time": 0.1,
            "end_time": 0.5,
            "alternatives": [{"content": "Hello", "confidence": 0.9, "speaker": "S1"}],
        },
        {
            "type": "punctuation",
            "start_time": 0.5,
            "end_time": 0.5,
            "attaches_to": "previous",
            "alternatives": [{"content": ",", "confidence": 1.0}],
        },
        {
            "type": "word",
            "start_time": 0.6,
            "end_time": 1.2,
            "alternatives": [{"content": "world", "confidence": 0.8}],
        },
    ],
}


def adapter(handler: Callable[[httpx.Request], httpx.Response]) -> SlngBatch:
    client = httpx.Client(transport=httpx.MockTransport(handler))
    return SlngBatch(client, base_url=BASE, api_key="zpka_secret")


def status_body(state: str, **more: Any) -> dict[str, Any]:
    return {"job_id": "j1", "status": state, "error_message": None, **more}


def test_submit_sends_the_documented_multipart_with_our_job_id() -> None:
    """POST /v1/batch/jobs carries file, transcription_config JSON, job_id and Bearer auth."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202, json={"job_id": "sb1cabc", "status": "QUEUED"})

    status = adapter(handler).submit("sb1cabc", CLIP, {"language": "de"})
    assert status.state == "QUEUED"
    request = seen[0]
    assert request.url == f"{BASE}/v1/batch/jobs" and request.method == "POST"
    assert request.headers["authorization"] == "Bearer zpka_secret"
    body = request.content.decode("latin-1")
    assert 'name="job_id"\r\n\r\nsb1cabc' in body and 'name="file"; filename="a.wav"' in body
    assert json.dumps({"language": "de"}) in body


def test_a_repeated_job_id_is_read_back_instead_of_failing() -> None:
    """A 409 on submit (our earlier submit got through) answers with the existing job."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(409, json={"error": "exists"})
        return httpx.Response(200, json=status_body("IN_PROGRESS"))

    assert adapter(handler).submit("j1", CLIP, {}).state == "IN_PROGRESS"


@pytest.mark.parametrize(
    ("status", "body", "error", "code"),
    [
        (400, {"error": "job_id must be alphanumeric"}, InvalidInput, "invalid_input"),
        (403, {"error": "API key id not found"}, AuthenticationFailed, "provider_auth_failed"),
        (
            413,
            {"error": "File too large. Maximum size is 1 GB."},
            InvalidInput,
            "payload_too_large",
        ),
        (500, {"error": "Internal server error"}, ProviderUnavailable, "provider_unavailable"),
    ],
)
def test_documented_submit_errors_map_onto_the_error_tree(
    status: int, body: dict[str, str], error: type[Exception], code: str
) -> None:
    """Each documented `{"error": string}` refusal becomes its error class, quoting SLNG."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=body)

    with pytest.raises(error) as raised:
        adapter(handler).submit("j1", CLIP, {})
    assert getattr(raised.value, "code", None) == code
    assert body["error"] in str(raised.value)


def test_status_reads_state_reason_and_duration_and_404_is_none() -> None:
    """GET /v1/batch/jobs/{id}: FAILED keeps error_message.message; an unknown id is None."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/gone"):
            return httpx.Response(404, json={"error": "Job not found"})
        body = status_body(
            "FAILED",
            error_message={"message": "bad audio"},
            input_metadata={"duration_seconds": 2.0},
        )
        return httpx.Response(200, json=body)

    batch = adapter(handler)
    assert batch.status("j1") == BatchStatus("FAILED", "bad audio", 2.0, None, 200)
    assert batch.status("gone") is None


def test_transcript_downloads_the_json_output_without_our_key() -> None:
    """/files → json download_url (fetched without Authorization) → a checked Transcript."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path.endswith("/files"):
            outputs = [
                {"format": "txt", "download_url": "https://s3.example/t.txt"},
                {"format": "json", "download_url": "https://s3.example/t.json?X-Amz-Signature=1"},
            ]
            return httpx.Response(200, json={"job_id": "j1", "inputs": [], "outputs": outputs})
        return httpx.Response(200, json=SPEECHMATICS)

    transcript = adapter(handler).transcript("j1", options={}, duration_s=2.0)
    assert transcript.text == "Hello, world"
    assert [w.text for w in transcript.words] == ["Hello", "world"]
    assert transcript.words[0].speaker == "S1" and transcript.duration_s == 2.0
    assert transcript.model == SLNG_BATCH_STT_MODEL and transcript.language == "en"
    assert "authorization" not in seen[1].headers


def transcript_code(output: dict[str, Any]) -> str:
    """The error code of fetching a DONE job whose json output is `output`."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/files"):
            outputs = [{"format": "json", "download_url": "https://s3.example/t.json"}]
            return httpx.Response(200, json={"outputs": outputs})
        return httpx.Response(200, json=output)

    with pytest.raises(ProviderUnavailable) as raised:
        adapter(handler).transcript("j1", options={}, duration_s=2.0)
    return raised.value.code


@pytest.mark.parametrize(
    "body",
    [
        {"results": [{"type": "word", "alternatives": [{"content": "x"}]}]},  # no times
        {"results": "none"},
        {"something": "else"},
    ],
)
def test_unknown_or_broken_outputs_are_never_stored(body: dict[str, Any]) -> None:
    """A json output of another shape is unexpected_response (retried), not a transcript."""
    assert transcript_code(body) == "unexpected_response"


def test_timings_beyond_the_audio_fail_the_transcript_checks() -> None:
    """A word ending far after the recording is bad_provider_output, as on the sync routes."""
    body = {**SPEECHMATICS, "job": {}}
    body["results"] = [{**SPEECHMATICS["results"][0], "end_time": 500.0}]
    assert transcript_code(body) == "bad_provider_output"


def test_a_bare_text_output_is_taken_as_text_without_timing() -> None:
    """The UNCONFIRMED shape may be plain `{"text": ...}`: kept, with no words."""
    parsed = parse_batch_json({"text": " hi there "}, {"language": "en"})
    assert parsed is not None and (parsed.text, parsed.words) == ("hi there", [])


# --- the flow's steps, with a fake batch API -------------------------------------------

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


class FakeBatch:
    """Answers each status read with the next state; records submits."""

    def __init__(self, *states: str | None) -> None:
        self.states, self.submits = list(states), 0

    def submit(self, job_id: str, audio: AudioInput, options: Mapping[str, Any]) -> BatchStatus:
        self.submits += 1
        return BatchStatus("QUEUED")

    def status(self, job_id: str) -> BatchStatus | None:
        state = self.states.pop(0)
        return None if state is None else BatchStatus(state, error="it broke")

    def transcript(
        self, job_id: str, *, options: Mapping[str, Any], duration_s: float | None
    ) -> Transcript:
        return Transcript("done", "en", 1.0, "slng", SLNG_BATCH_STT_MODEL)


def item(job: ProviderJob | None) -> ClaimedItem:
    return ClaimedItem(
        7, "job", 1, "a", None, "upload://u/a.wav", 1, "ab12", "t", JobKind.STT, "slng",
        SLNG_BATCH_STT_MODEL, None, {}, "", job,
    )  # fmt: skip


def step(api: FakeBatch, job: ProviderJob | None, now: datetime = NOW) -> Any:
    try:
        return batch_stt.transcribe(
            api, item(job), policy=BatchPolicy(max_wait_s=600), now=now,
            read=lambda: CLIP, calls=lambda fn: fn(),
        )  # fmt: skip
    except batch_stt.AwaitProvider as waiting:
        return waiting


def test_the_first_step_records_the_claims_job_id_before_sending_anything() -> None:
    """No provider job: AwaitProvider(sb<id>c<token>, not submitted, due at once), no call."""
    api = FakeBatch()
    waiting = step(api, None)
    assert (waiting.job, waiting.delay_s) == (ProviderJob("sb7cab12", NOW), 0.0)
    assert api.submits == 0


def test_a_recorded_id_is_submitted_only_when_slng_does_not_know_it() -> None:
    """Unknown id → one submit; known id (a crash came after the submit) → no second one."""
    fresh, crashed = FakeBatch(None), FakeBatch("QUEUED")
    for api in (fresh, crashed):
        waiting = step(api, ProviderJob("sb7cab12", NOW))
        assert waiting.job.submitted and waiting.delay_s == 5.0
    assert (fresh.submits, crashed.submits) == (1, 0)


def test_polls_back_off_then_done_gives_the_transcript() -> None:
    """Not done → due 10 s, then 20 s later; DONE → the transcript."""
    api = FakeBatch("QUEUED", "IN_PROGRESS", "DONE")
    job = ProviderJob("sb7cab12", NOW, submitted=True)
    delays = []
    for _ in range(2):
        waiting = step(api, job)
        job = waiting.job
        delays.append(waiting.delay_s)
    assert delays == [10.0, 20.0] and job.polls == 2
    assert step(api, job).text == "done"


@pytest.mark.parametrize(
    ("state", "later", "code"),
    [
        ("FAILED", 0, "provider_rejected"),
        (None, 0, "provider_rejected"),
        ("QUEUED", 601, "provider_timeout"),
    ],
)
def test_failed_gone_or_overdue_jobs_end_the_item(state: str | None, later: int, code: str) -> None:
    """FAILED (with SLNG's reason), an id SLNG forgot, or a wait past max_wait_s fail for good."""
    job = ProviderJob("sb7cab12", NOW, submitted=True)
    with pytest.raises(PermanentProviderError) as raised:
        batch_stt.transcribe(
            FakeBatch(state), item(job), policy=BatchPolicy(max_wait_s=600),
            now=NOW + timedelta(seconds=later), read=lambda: CLIP, calls=lambda fn: fn(),
        )  # fmt: skip
    assert raised.value.code == code
    if state == "FAILED":
        assert "it broke" in raised.value.message


def test_poll_delays_double_to_the_cap() -> None:
    """5, 10, 20, 40, 60, 60 s."""
    assert [BatchPolicy().next_poll_s(n) for n in range(6)] == [5, 10, 20, 40, 60, 60]
