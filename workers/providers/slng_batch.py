"""SLNG's batch STT API (api.batch.slng.ai, providers.md §1.7): submit, poll, fetch the files.

Each method is one HTTP exchange (plus, for the transcript, the download its `/files`
answer points at), so the pipeline can spread a job over several deliveries without a
worker thread waiting on SLNG: `submit` sends the recording under a job id we choose,
`status` reads the job once (None when SLNG does not know the id: not submitted yet, or
gone), and `transcript` fetches the json output of a DONE job and normalises it.

The json output's schema is UNCONFIRMED (Speechmatics-style expected): `results` of `word`
and `punctuation` entries, each with `start_time`/`end_time` and `alternatives[0]`
{content, confidence, language, speaker}. Bodies of another shape are never stored: a plain
`{"text": ...}` is taken as text without timing, anything else is `unexpected_response`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import httpx

from jobs.catalog_slng import SLNG_BATCH_STT_MODEL
from jobs.error_codes import ErrorCode
from workers.providers import exchange, http
from workers.providers.answers import audio_info, check_transcript
from workers.providers.base import AudioInput, Transcript, Word
from workers.providers.errors import ProviderError, ProviderUnavailable, UnsupportedAudio
from workers.providers.exchange import Bounds, Limit
from workers.providers.transcripts import as_float, as_str, clip, json_object

_KEY_NAME = "SLNG_API_KEY"
_JOBS = "/v1/batch/jobs"
_SMALL_ANSWER = 256 * 1024  # a status or files answer; transcripts get the STT answer cap
DONE, FAILED = "DONE", "FAILED"


@dataclass(frozen=True)
class BatchStatus:
    """One read of an SLNG batch job."""

    state: str  # QUEUED, IN_PROGRESS, DECODING, POST_PROCESSING, DONE, FAILED, DELETED
    error: str | None = None  # `error_message.message` of a FAILED job
    duration_s: float | None = None  # `input_metadata.duration_seconds`
    request_id: str | None = None
    status_code: int | None = 200


class SlngBatch:
    """One SLNG account's batch API behind an injected `httpx.Client`."""

    name = "slng"

    def __init__(
        self, client: httpx.Client, *, base_url: str, api_key: str, bounds: Bounds | None = None
    ) -> None:
        self._client, self._base, self._key = client, base_url.rstrip("/"), api_key
        self._bounds = bounds or Bounds()
        self._headers = {"Authorization": f"Bearer {api_key}"}

    def submit(self, job_id: str, audio: AudioInput, options: Mapping[str, Any]) -> BatchStatus:
        """POST the recording as job `job_id` (alphanumeric); SLNG answers 202 QUEUED. A 409
        (the id is taken: an earlier submit of ours got through) reads the job instead."""
        if not audio.data:
            raise UnsupportedAudio(
                "The audio is empty (0 bytes); upload the recording again.",
                code=ErrorCode.EMPTY_AUDIO,
            )
        config: dict[str, Any] = {"language": options.get("language") or "en"}
        if options.get("diarize"):
            config["diarization"] = "speaker"
        files = {"file": (audio.filename or "audio", audio.data, audio.content_type)}
        form = {
            "transcription_config": json.dumps(config),
            "job_id": job_id,
            "model_code": SLNG_BATCH_STT_MODEL,
        }
        form_body: dict[str, Any] = {"data": form, "files": files}
        # The upload itself may be long: give it the time a synchronous STT call would get.
        info = audio_info(audio.data)
        limit = self._bounds.stt_limit(info.duration_s if info else None, len(audio.data))
        response = self._call(
            "POST", _JOBS, Limit(limit.deadline_s, limit.max_bytes, limit.setting), **form_body
        )
        if response.status_code == 409:
            found = self.status(job_id)
            if found is not None:
                return found
        if response.status_code != 202:
            raise self._error(response)
        return self._status_of(response, job_id)

    def status(self, job_id: str) -> BatchStatus | None:
        """The job's state, or None when SLNG answers 404 (no job by that id)."""
        response = self._call("GET", f"{_JOBS}/{job_id}", self._small())
        if response.status_code == 404:
            return None
        if not response.is_success:
            raise self._error(response)
        return self._status_of(response, job_id)

    def transcript(
        self, job_id: str, *, options: Mapping[str, Any], duration_s: float | None
    ) -> Transcript:
        """The json output of DONE job `job_id` as a checked `Transcript`."""
        response = self._call("GET", f"{_JOBS}/{job_id}/files", self._small())
        if not response.is_success:
            raise self._error(response)
        request_id = response.headers.get("x-slng-request-id")
        url = _json_output_url(json_object(response.content))
        if url is None:
            raise self._unexpected("a file list without a json output", response, request_id)
        limit = Limit(
            self._bounds.timeout_s, self._bounds.max_stt_bytes, "SPEECHBATCH_MAX_STT_RESPONSE_BYTES"
        )
        # A signed download URL: sending our key along would leak it to the store, and S3
        # refuses a request carrying both a signature and an Authorization header.
        output = exchange.call(
            self._client, "GET", url, limit=limit, provider="SLNG", secret=self._key
        )
        if not output.is_success:
            raise self._error(output)
        body = json_object(output.content)
        parsed = parse_batch_json(body, options) if body is not None else None
        if parsed is None:
            raise self._unexpected(
                "a transcript in a shape speechbatch does not know", output, request_id
            )
        if parsed.duration_s is None:
            parsed = replace(parsed, duration_s=duration_s)
        parsed = replace(parsed, request_id=request_id)
        return check_transcript(parsed, audio_s=duration_s, request_id=request_id)

    # --- one exchange -------------------------------------------------------------------

    def _small(self) -> Limit:
        """A status or file-list answer: small and quick."""
        return Limit(min(self._bounds.timeout_s, 30.0), _SMALL_ANSWER, "a status answer's cap")

    def _call(self, method: str, path: str, limit: Limit, **kw: Any) -> httpx.Response:
        return exchange.call(
            self._client,
            method,
            self._base + path,
            limit=limit,
            provider="SLNG",
            secret=self._key,
            headers=self._headers,
            **kw,
        )

    def _status_of(self, response: httpx.Response, job_id: str) -> BatchStatus:
        request_id = response.headers.get("x-slng-request-id")
        body = json_object(response.content)
        state = as_str(body.get("status")) if body is not None else None
        if body is None or state is None:
            raise self._unexpected(f"a status of job {job_id} without one", response, request_id)
        failure = body.get("error_message")
        message = failure.get("message") if isinstance(failure, Mapping) else failure
        meta = body.get("input_metadata")
        duration = as_float(meta.get("duration_seconds")) if isinstance(meta, Mapping) else None
        return BatchStatus(
            state=state.upper(),
            error=http.redact(str(message), self._key) if message else None,
            duration_s=duration,
            request_id=request_id,
            status_code=response.status_code,
        )

    def _error(self, response: httpx.Response) -> ProviderError:
        body = json_object(response.content)
        said = body.get("error") if body is not None else None  # strictly {"error": string}
        reason = str(said) if said is not None else clip(response.text)
        return http.error_from_response(
            response,
            vendor_message=http.redact(reason, self._key),
            provider="SLNG batch",
            request_id=response.headers.get("x-slng-request-id"),
            key_name=_KEY_NAME,
        )

    def _unexpected(
        self, what: str, response: httpx.Response, request_id: str | None
    ) -> ProviderUnavailable:
        return ProviderUnavailable(
            f"SLNG's batch API answered with {what} "
            f"({http.redact(clip(response.text), self._key)!r}); "
            "retrying later may help, else report it.",
            code=ErrorCode.UNEXPECTED_RESPONSE,
            status_code=response.status_code,
            request_id=request_id,
        )


def _json_output_url(body: Mapping[str, Any] | None) -> str | None:
    outputs = body.get("outputs") if body is not None else None
    for output in outputs if isinstance(outputs, list) else []:
        if isinstance(output, Mapping) and output.get("format") == "json":
            url = as_str(output.get("download_url"))
            if url and url.startswith(("http://", "https://")):
                return url
    return None


def parse_batch_json(body: Mapping[str, Any], options: Mapping[str, Any]) -> Transcript | None:
    """A Speechmatics-style json output (`results` of words and punctuation), a bare
    `{"text": ...}`, or None for any other shape."""
    results = body.get("results")
    job = body.get("job")
    duration = as_float(job.get("duration")) if isinstance(job, Mapping) else None
    language = _language(body) or as_str(options.get("language"))
    if not isinstance(results, list):
        text = body.get("text")
        if not isinstance(text, str):
            return None
        return Transcript(text.strip(), language, duration, "slng", SLNG_BATCH_STT_MODEL)
    words: list[Word] = []
    text = ""
    for entry in results:
        parsed = _entry(entry)
        if parsed is None:
            return None
        kind, word, attaches = parsed
        if kind == "word":
            words.append(word)
            text += f" {word.text}" if text else word.text
        elif kind == "punctuation":
            text += word.text if attaches in ("previous", "both") else f" {word.text}"
    return Transcript(
        text=text.strip(),
        language=language,
        duration_s=duration if duration is not None else (words[-1].end if words else None),
        provider="slng",
        model=SLNG_BATCH_STT_MODEL,
        words=words,
        segments=http.segments_from_words(words),
    )


def _language(body: Mapping[str, Any]) -> str | None:
    metadata = body.get("metadata")
    config = metadata.get("transcription_config") if isinstance(metadata, Mapping) else None
    return as_str(config.get("language")) if isinstance(config, Mapping) else None


def _entry(raw: object) -> tuple[str, Word, str] | None:
    """(type, the entry as a Word, what punctuation attaches to) of one result, or None."""
    if not isinstance(raw, Mapping):
        return None
    alternatives = raw.get("alternatives")
    best = alternatives[0] if isinstance(alternatives, list) and alternatives else None
    start, end = as_float(raw.get("start_time")), as_float(raw.get("end_time"))
    content = best.get("content") if isinstance(best, Mapping) else None
    if not isinstance(content, str) or start is None or end is None:
        return None
    assert isinstance(best, Mapping)
    word = Word(
        text=content,
        start=start,
        end=end,
        confidence=as_float(best.get("confidence")),
        speaker=as_str(best.get("speaker")),
    )
    kind = as_str(raw.get("type")) or "word"
    return kind, word, as_str(raw.get("attaches_to")) or "previous"
