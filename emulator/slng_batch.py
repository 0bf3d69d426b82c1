"""SLNG's batch STT API (api.batch.slng.ai, providers.md §1.7 and §8.9), under /slng-batch.

    POST   /v1/batch/jobs                 multipart `file` + `transcription_config` (JSON part),
                                          or JSON {input_url, transcription_config}: 202 QUEUED
    GET    /v1/batch/jobs/{id}            QUEUED → IN_PROGRESS → DONE (or FAILED)
    GET    /v1/batch/jobs/{id}/files      outputs json/txt/srt with download URLs served here
    DELETE /v1/batch/jobs/{id}            202 DELETED; 409 unless DONE or FAILED
    GET    /v1/batch/jobs/{id}/outputs/{fmt}?sig=…   the "signed" download (no Bearer)

A job takes `batch_seconds_per_audio_second` x its audio length (a runtime dial; 0 answers
DONE at once): the first quarter QUEUED, the rest IN_PROGRESS. Errors are strictly
`{"error": string}`. The shared dials apply to the submit, with the upload's file name as
the text their tokens are read from: `[[status:500]]` refuses it, `[[answer:failed]]` makes the
job end FAILED with an error_message. Jobs live in memory, at most `MAX_JOBS` (oldest go).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from emulator import audio
from emulator.dials import Call, Dials, Fault, fingerprint

PREFIX = "/slng-batch"
MAX_JOBS = 10_000
MAX_BYTES = 1024 * 1024 * 1024  # "File too large. Maximum size is 1 GB."
MODEL = "slng/speechmatics/batch:15.0.0"
URL_DURATION_S = 10.0  # a job from input_url: the emulator fetches nothing, so a nominal length
_JOB_ID = re.compile(r"^[a-zA-Z0-9]+$")
_PUNCTUATION = ".,!?;:"
TERMINAL = ("DONE", "FAILED")


@dataclass
class BatchJob:
    id: str
    config: dict[str, Any]
    size_bytes: int
    duration_s: float
    digest: str
    submitted: float  # the emulator's clock
    submitted_at: str  # wall clock, ISO 8601
    run_s: float
    fails: bool
    deleted: bool = False

    def state(self, now: float) -> str:
        if self.deleted:
            return "DELETED"
        elapsed = now - self.submitted
        if elapsed >= self.run_s:
            return "FAILED" if self.fails else "DONE"
        return "QUEUED" if elapsed < self.run_s / 4 else "IN_PROGRESS"


def routes(dials: Dials, clock: Callable[[], float] = time.monotonic) -> list[BaseRoute]:
    api = BatchApi(dials, clock)
    return [
        Route("/v1/batch/jobs", api.submit, methods=["POST"]),
        Route("/v1/batch/jobs/{job_id}", api.job, methods=["GET", "DELETE"]),
        Route("/v1/batch/jobs/{job_id}/files", api.files, methods=["GET"]),
        Route("/v1/batch/jobs/{job_id}/outputs/{fmt}", api.download, methods=["GET"]),
    ]


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class BatchApi:
    """The batch routes over one process's `Dials`, with the jobs in a bounded dict."""

    def __init__(self, dials: Dials, clock: Callable[[], float]) -> None:
        self.dials, self.clock = dials, clock
        self.jobs: OrderedDict[str, BatchJob] = OrderedDict()
        self._secret = secrets.token_bytes(16)

    async def submit(self, request: Request) -> Response:
        return await self._logged(request, self._submit)

    async def job(self, request: Request) -> Response:
        return await self._logged(request, self._job)

    async def files(self, request: Request) -> Response:
        return await self._logged(request, self._files)

    async def download(self, request: Request) -> Response:
        job = self.jobs.get(request.path_params["job_id"])
        fmt = request.path_params["fmt"]
        signature = request.query_params.get("sig", "")
        if job is None or not hmac.compare_digest(signature, self._sign(job.id, fmt)):
            return _error(403, "Invalid or expired signature")
        if job.state(self.clock()) != "DONE" or fmt not in ("json", "txt", "srt"):
            return _error(404, "File not found")
        return _render(job, fmt)

    # -- one logged, authenticated exchange ----------------------------------------------

    async def _logged(self, request: Request, answer: Callable[[Request, Call], Any]) -> Response:
        call = Call(request.method, request.url.path, MODEL, str(uuid4()))
        response: Response = await self.dials.logged(call, self._guarded(request, call, answer))
        response.headers["x-slng-request-id"] = call.request_id
        return response

    async def _guarded(
        self, request: Request, call: Call, answer: Callable[[Request, Call], Any]
    ) -> Response:
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        key, allowed = key.strip(), self.dials.config.api_keys
        if scheme.lower() != "bearer" or not key or (allowed and key not in allowed):
            return _error(403, "API key id not found")
        call.key_fingerprint = fingerprint(key)
        refused = self.dials.try_rate(key)  # the rate limit first, then the in-flight cap
        if refused is None and not self.dials.try_admit(key):
            refused = Fault("cap", 429)
        if refused is not None:
            call.fault = refused.kind
            busy = "Too many concurrent requests" if refused.kind == "cap" else "Too many requests"
            return _error(429, busy)
        try:
            response: Response = await answer(request, call)
            return response
        finally:
            self.dials.release(key)

    # -- the routes ----------------------------------------------------------------------

    async def _submit(self, request: Request, call: Call) -> Response:  # noqa: PLR0911 - one return per refusal
        if int(request.headers.get("content-length") or 0) > MAX_BYTES + 1024 * 1024:
            return _error(413, "File too large. Maximum size is 1 GB.")
        form = await _read_submit(request)
        if isinstance(form, Response):
            return form
        fields, data, name = form
        fault = await self.dials.hold(call.path, name, request.receive)
        if fault is not None:
            call.fault = fault.kind
            return _error(
                fault.status, "Internal server error" if fault.status >= 500 else "Refused"
            )
        job_id = fields.get("job_id") or uuid4().hex
        if not isinstance(job_id, str) or not _JOB_ID.match(job_id):
            return _error(400, "job_id must be alphanumeric")
        if job_id in self.jobs:  # UNCONFIRMED: what SLNG answers to a repeated job_id
            return _error(409, "A job with this job_id already exists")
        config = fields.get("transcription_config")
        if not isinstance(config, dict):
            return _error(400, "transcription_config is required and must be a JSON object")
        if data is not None:
            duration = await run_in_threadpool(audio.probe_duration, data)
            if duration is None:
                return _error(400, "Unsupported or unreadable audio file")
            digest, size = audio.audio_digest(data), len(data)
        else:
            duration, digest, size = URL_DURATION_S, audio.audio_digest(name.encode()), 0
        call.audio_bytes = size
        while len(self.jobs) >= MAX_JOBS:
            self.jobs.popitem(last=False)
        self.jobs[job_id] = BatchJob(
            id=job_id,
            config=config,
            size_bytes=size,
            duration_s=duration,
            digest=digest,
            submitted=self.clock(),
            submitted_at=datetime.now(UTC).isoformat(),
            run_s=self.dials.config.batch_seconds_per_audio_second * duration,
            fails=self.dials.answer_fault(name, ("failed",)) is not None,
        )
        return JSONResponse({"job_id": job_id, "status": "QUEUED"}, status_code=202)

    async def _job(self, request: Request, call: Call) -> Response:
        job = self.jobs.get(request.path_params["job_id"])
        if job is None:
            return _error(404, "Job not found")
        state = job.state(self.clock())
        if request.method == "DELETE":
            if state not in TERMINAL:
                return _error(409, "Job must be DONE or FAILED to delete")
            job.deleted = True
            return JSONResponse({"job_id": job.id, "status": "DELETED"}, status_code=202)
        failed = {"message": "Transcription failed: audio could not be processed"}
        return JSONResponse(
            {
                "job_id": job.id,
                "status": state,
                "model_code": MODEL,
                "job_config": job.config,
                "input_metadata": {
                    "size_bytes": job.size_bytes,
                    "duration_seconds": job.duration_s,
                },
                "error_message": failed if state == "FAILED" else None,
                "submitted_at": job.submitted_at,
            }
        )

    async def _files(self, request: Request, call: Call) -> Response:
        job = self.jobs.get(request.path_params["job_id"])
        if job is None:
            return _error(404, "Job not found")
        done = job.state(self.clock()) == "DONE"
        base = request.url.path.removesuffix("/files")
        outputs = [
            {
                "format": fmt,
                "key": f"outputs/{job.id}.{fmt}",
                "s3_uri": f"s3://emulator/outputs/{job.id}.{fmt}",
                "download_url": str(
                    request.url.replace(
                        path=f"{base}/outputs/{fmt}", query=f"sig={self._sign(job.id, fmt)}"
                    )
                ),
            }
            for fmt in (("json", "txt", "srt") if done else ())
        ]
        return JSONResponse({"job_id": job.id, "inputs": [], "outputs": outputs})

    def _sign(self, job_id: str, fmt: str) -> str:
        return hmac.new(self._secret, f"{job_id}/{fmt}".encode(), hashlib.sha256).hexdigest()[:32]


async def _read_submit(request: Request) -> tuple[dict[str, Any], bytes | None, str] | Response:
    """(fields, the file or None for input_url, the file name or URL), or the 400/413."""
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            body = json.loads(await request.body())
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("input_url"), str):
            return _error(400, "A JSON body needs input_url and transcription_config")
        return body, None, body["input_url"]
    try:
        form = await request.form(max_part_size=MAX_BYTES)
    except HTTPException:
        return _error(400, "Invalid multipart body")
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            return _error(400, "file is required")
        fields: dict[str, Any] = {k: v for k, v in form.items() if isinstance(v, str)}
        try:
            fields["transcription_config"] = json.loads(fields.get("transcription_config", ""))
        except ValueError:
            fields.pop("transcription_config", None)
        data = await upload.read()
        if len(data) > MAX_BYTES:
            return _error(413, "File too large. Maximum size is 1 GB.")
        return fields, data, upload.filename or "audio"
    finally:
        await form.close()


def _render(job: BatchJob, fmt: str) -> Response:
    """The job's transcript: Speechmatics json-v2, plain text, or SRT."""
    language = str(job.config.get("language") or "en")
    words = audio.canned_words(job.digest, job.duration_s, language)
    text = " ".join(w.word for w in words)
    if fmt == "txt":
        return PlainTextResponse(text + "\n")
    if fmt == "srt":
        end = words[-1].end if words else 0.0
        return PlainTextResponse(f"1\n{_srt_time(0.0)} --> {_srt_time(end)}\n{text}\n")
    results: list[dict[str, Any]] = []
    for w in words:
        content = w.word.rstrip(_PUNCTUATION)
        alternative = {"content": content or w.word, "confidence": 0.98, "language": language}
        results.append(
            {
                "type": "word",
                "start_time": w.start,
                "end_time": w.end,
                "alternatives": [alternative],
            }
        )
        if content and content != w.word:
            mark = {"content": w.word[len(content) :], "confidence": 1.0}
            results.append(
                {
                    "type": "punctuation",
                    "start_time": w.end,
                    "end_time": w.end,
                    "attaches_to": "previous",
                    "alternatives": [mark],
                }
            )
    return JSONResponse(
        {
            "format": "2.9",
            "job": {"id": job.id, "duration": job.duration_s, "created_at": job.submitted_at},
            "metadata": {"transcription_config": job.config, "type": "transcription"},
            "results": results,
        }
    )


def _srt_time(seconds: float) -> str:
    ms = round(seconds * 1000)
    return f"{ms // 3_600_000:02}:{ms // 60_000 % 60:02}:{ms // 1000 % 60:02},{ms % 1000:03}"
