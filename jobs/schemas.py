"""Request and response bodies of the REST API (pydantic), shared by the API and the CLI.

Shape checks live here; rules that need the catalog (known provider/model, ids, limits)
live in `jobs/validation.py` so each failure gets its own stable code.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

from jobs.error_codes import ErrorCode

AudioFormat = Literal["wav", "flac", "mp3", "ogg", "opus"]
TranscriptFormat = Literal["json", "txt", "srt", "vtt"]
# How a call reaches the vendor; which ones a vendor offers is `ProviderSpec.transports`.
Transport = Literal["auto", "http", "stream", "websocket"]
ALL_TRANSCRIPT_FORMATS: tuple[TranscriptFormat, ...] = ("json", "txt", "srt", "vtt")
# What `GET .../items/{item}/output?format=` may ask for: an audio or a transcript format.
OutputFormat = Literal["wav", "flac", "mp3", "ogg", "opus", "json", "txt", "srt", "vtt"]


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _storable(value: str) -> str:
    if _UNSTORABLE.search(value):
        raise PydanticCustomError(
            ErrorCode.INVALID_CHARACTERS.value,
            "contains a NUL character or an unpaired surrogate (\\u0000, \\ud800-\\udfff); "
            "remove it",
        )
    return value


# A string a database can hold and UTF-8 can encode: PostgreSQL refuses NUL and a lone
# surrogate cannot be encoded, and both were 500s (issue 9). Item ids and texts keep their
# own finer checks (`invalid_item_id`, `invalid_text` in jobs/validation.py).
Storable = Annotated[str, AfterValidator(_storable)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class JobOptions(Strict):
    format: AudioFormat = "wav"
    sample_rate: int | None = Field(default=None, ge=8000, le=48000)
    language: str | None = Field(default=None, pattern=r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")
    speed: float = Field(default=1.0, ge=0.5, le=2.0)
    transcript_formats: list[TranscriptFormat] = Field(
        default_factory=lambda: list(ALL_TRANSCRIPT_FORMATS),
        min_length=1,
        max_length=len(ALL_TRANSCRIPT_FORMATS),
    )
    transport: Transport = "auto"


class ItemIn(Strict):
    id: str | None = Field(default=None, max_length=128)
    text: str | None = None
    voice: Storable | None = Field(default=None, max_length=200)
    source: Storable | None = Field(default=None, max_length=2048)


class OutputSpec(Strict):
    prefix: Storable = Field(default="", max_length=200)
    # TTS: once the job ends, its outputs in order as one track, `stitched.<ext>`, with
    # `cues.json` (each item's start in it), next to the manifest.
    stitched: bool = False
    # Archive jobs: `job` keeps outputs in the job's folder; `mirror` writes each transcript
    # at `{prefix}/{tenant}/{path below the source prefix}.json` (jobs.archive_keys).
    layout: Literal["job", "mirror"] = "job"
    # Archive jobs: mirror into another bucket, `s3://bucket/prefix/` (or `file:///dir/` in
    # local mode), allowed by a `write:` SPEECHBATCH_ARCHIVE_BUCKETS entry
    # (jobs.archive_outputs); the manifest stays under `prefix` in the service's storage.
    url: Storable | None = Field(default=None, max_length=1100)


class ArchiveSourceIn(Strict):
    """An STT job's recordings as an object-store prefix, listed into items by a worker
    (`jobs.archives` checks what these mean; the shape and bounds are checked here)."""

    prefix: Storable = Field(max_length=1100, description="s3://bucket/prefix/ or file:///dir/")
    # fnmatch on the path below the prefix, case-insensitive; unset: any audio file.
    pattern: Storable | None = Field(default=None, min_length=1, max_length=200)
    min_bytes: int | None = Field(default=None, ge=0, le=2**53)
    max_bytes: int | None = Field(default=None, ge=1, le=2**53)
    # ISO 8601; without an offset it is UTC.
    modified_since: datetime | None = None
    # Skip objects transcribed before with the same key, ETag and settings.
    incremental: bool = True


class FallbackIn(Strict):
    """A provider to move an item to when the job's own fails it (after its attempts, for
    quota, or while it is down for everyone). Its voice is its own: the job's and items'
    voices are never carried over (none given: that vendor's default voice)."""

    provider: Storable = Field(max_length=32)
    model: Storable | None = Field(default=None, max_length=200)
    voice: Storable | None = Field(default=None, max_length=200)


class FallbackOut(BaseModel):
    provider: str
    model: str
    voice: str | None


MAX_FALLBACKS = 3


class BudgetIn(Strict):
    """Caps on what a job may use (issue 12): once one is reached, items not started are
    canceled with `budget_exceeded` and the job ends with what it has. Each is optional."""

    characters: int | None = Field(default=None, gt=0, le=10**12, description="TTS only.")
    audio_seconds: float | None = Field(default=None, gt=0, le=10**9, allow_inf_nan=False)
    cost: float | None = Field(
        default=None, gt=0, le=10**7, allow_inf_nan=False, description="USD, estimated."
    )


class JobCreate(Strict):
    kind: Literal["tts", "stt"]
    provider: Storable = Field(max_length=32)
    model: Storable | None = Field(default=None, max_length=200)
    voice: Storable | None = Field(default=None, max_length=200)
    options: JobOptions = Field(default_factory=JobOptions)
    items: list[ItemIn] = Field(default_factory=list)
    source: ArchiveSourceIn | None = None  # STT only, instead of `items`
    output: OutputSpec = Field(default_factory=OutputSpec)
    fallback: list[FallbackIn] = Field(default_factory=list, max_length=MAX_FALLBACKS)
    budget: BudgetIn | None = None
    # POSTed a signed `job.finished` event when the job ends (jobs.webhooks).
    webhook_url: Storable | None = Field(default=None, max_length=2048)


class Counts(BaseModel):
    total: int
    queued: int
    running: int
    succeeded: int
    failed: int
    canceled: int
    skipped: int = 0  # archive objects transcribed before (incremental): not run again


class ProviderUsage(BaseModel):
    characters: int
    audio_seconds: float
    cost: float | None = Field(description="Estimated USD at today's prices (None: no price).")


class Usage(BaseModel):
    characters: int
    audio_seconds: float
    # Per provider the job's items were spoken or transcribed by (its own and fallbacks).
    by_provider: dict[str, ProviderUsage] = Field(default_factory=dict)


class Cost(BaseModel):
    estimated: float | None
    currency: str = "USD"
    prices_as_of: str = Field(default="", description="List prices used (jobs.pricing).")


class BudgetOut(BudgetIn):
    """The budget asked for, the caps enforced (a cost cap becomes one of these), and when
    a cap stopped the job (None: it has not)."""

    cap_characters: int | None = None
    cap_audio_seconds: float | None = None
    stopped_at: datetime | None = None


class DryRunUsage(BaseModel):
    characters: int
    audio_seconds: float | None = Field(
        description="Known durations summed; None when no source's duration is known."
    )
    unknown_durations: int = Field(0, description="STT sources whose duration is not known.")


class ArchiveCountOut(BaseModel):
    """An archive dry run's listing of `source.prefix` (jobs.archive_count)."""

    complete: bool = Field(description="False: stopped early; the counts are lower bounds.")
    stopped_by: Literal["time", "objects", "max_items", "error"] | None = None
    listed: int = Field(description="Objects looked at.")
    items: int = Field(description="Objects that pass the filters: the job's items.")
    skipped: int = Field(description="Of them, transcribed before (incremental): no cost.")
    unreadable: int = Field(description="Of them, keys speechbatch does not read: failed.")
    bytes: int
    bytes_to_transcribe: int
    sampled_headers: int = Field(description="Headers read for the audio seconds estimate.")
    audio_seconds_basis: Literal["extrapolated", "none"] = Field(
        description="`extrapolated`: a sample's seconds per byte times bytes_to_transcribe."
    )


class DryRunOut(BaseModel):
    """`POST /v1/jobs?dry_run=true`: what the job would be, with nothing created or called."""

    dry_run: Literal[True] = True
    items: int | None = Field(
        description="How many items the job would have; None for an archive whose listing "
        "stopped at the dry run's time or object budget (see `items_at_least`)."
    )
    # At least this many items (an archive listing stopped early: `items` is None then).
    items_at_least: int | None = None
    usage: DryRunUsage
    cost: Cost
    archive: ArchiveCountOut | None = None
    within_budget: bool | None = Field(
        default=None, description="Whether the estimate fits `budget` (None: no budget)."
    )
    notes: list[str] = Field(default_factory=list)


class JobOut(BaseModel):
    id: str
    kind: str
    provider: str
    model: str
    voice: str | None
    options: dict[str, Any]
    output: OutputSpec
    fallback: list[FallbackOut] = Field(default_factory=list)
    webhook_url: str | None = None
    status: str
    counts: Counts
    usage: Usage
    cost: Cost | None = None
    budget: BudgetOut | None = None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class JobList(BaseModel):
    jobs: list[JobOut]
    next_cursor: str | None


class ErrorOut(BaseModel):
    """An item's error (stored codes are plain strings: a code is never renamed or removed)."""

    code: str
    message: str


class ErrorBody(BaseModel):
    code: ErrorCode = Field(description="Stable; clients match on it (README: Error codes).")
    message: str = Field(description="A sentence saying what went wrong and what to do.")


class ErrorEnvelope(BaseModel):
    """Every error the API answers: `{"error": {"code": ..., "message": ...}}`."""

    error: ErrorBody


class HealthOut(BaseModel):
    status: Literal["ok", "degraded"]
    checks: dict[str, str] = Field(
        description='"ok", or "error: <what failed and why>" for database, broker and storage.'
    )


class OutputFile(BaseModel):
    format: str
    key: str
    url: str | None


class ItemOutput(BaseModel):
    key: str
    url: str | None
    bytes: int | None
    duration_s: float | None
    content_type: str | None
    # Provider requests it took: more than 1 for a TTS line over the model's character limit.
    pieces: int | None = None
    files: list[OutputFile] = Field(default_factory=list)


class ItemOut(BaseModel):
    id: str
    seq: int
    status: str
    provider: str = ""  # the job's provider, or the fallback the item moved to
    attempts: int
    text: str | None = None
    source: str | None = None
    next_attempt_at: datetime | None = None
    error: ErrorOut | None = None
    output: ItemOutput | None = None
    # A skipped archive item: the job whose transcript of the same object `output` points at.
    skipped_from: str | None = None
    # The output is a copy of an identical line's earlier output: no provider call, usage 0.
    reused: bool = False


class ItemList(BaseModel):
    items: list[ItemOut]
    next_cursor: str | None


class UploadOut(BaseModel):
    source: str
    bytes: int
    content_type: str
