"""The typed records that cross the item ledger's boundary.

A worker claims an item (`ClaimedItem`), calls a provider, writes the output, and hands the
ledger what it produced (`ItemResult`) or why it did not (`ItemError`), plus one
`AttemptRecord` per provider call. Nothing crosses as a loose dict.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import Any

from jobs.error_codes import ErrorCode
from jobs.status import JobKind


@dataclass(frozen=True)
class Route:
    """One provider a job's items can be spoken or transcribed by: the job's own (route 0)
    or one of its `fallback` entries. A fallback's voice is its own, never mapped from the
    primary's (None: that vendor's default voice)."""

    provider: str
    model: str
    voice: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: Any) -> Route:
        return cls(str(raw["provider"]), str(raw["model"]), raw.get("voice"))


def fallback_routes(raw: Any) -> tuple[Route, ...]:
    """A job row's `fallback` JSON as routes (SQL or JSON null: none)."""
    return tuple(Route.from_json(r) for r in raw) if isinstance(raw, list) else ()


@dataclass(frozen=True)
class ClaimedItem:
    """What a worker needs to run one item, read at claim time (item row + its job's row)."""

    id: int
    job_id: str
    seq: int
    external_id: str
    text: str | None
    source: str | None
    attempts: int  # claims so far, this one included
    token: str  # the claim token: only its holder may move the item on
    tenant_id: str
    kind: JobKind
    provider: str
    model: str
    voice: str | None
    options: dict[str, Any]
    output_prefix: str
    provider_job: ProviderJob | None = None  # a provider-side job the item waits on
    route: int = 0  # 0: the job's provider; n: `fallback[n - 1]` (provider/model/voice above)
    fallback: tuple[Route, ...] = ()  # the job's fallbacks, all of them
    content_hash: str | None = None  # a TTS line's hash on the job's own route (jobs.content_hash)
    capped: bool = False  # the job has a budget cap: check it before each provider call
    # Whether another item shares `content_hash` (PostgreSQL's claim says; None: not asked).
    twin: bool | None = None

    @property
    def can_fail_over(self) -> bool:
        """Whether a fallback is left to move the item to."""
        return self.route < len(self.fallback)

    @classmethod
    def from_rows(cls, item_id: int, token: str, item: Any, job: Any) -> ClaimedItem:
        """From the claimed item row and its job's row (one row on PostgreSQL); on a fallback
        route the provider, model and voice are the fallback's."""
        fallback = fallback_routes(job.fallback)
        route = min(int(item.route or 0), len(fallback))
        claimed = cls(
            id=item_id,
            job_id=item.job_id,
            seq=item.seq,
            external_id=item.external_id,
            text=item.text,
            source=item.source,
            attempts=item.attempts,
            token=token,
            tenant_id=job.tenant_id,
            kind=JobKind(job.kind),
            provider=job.provider,
            model=job.model,
            voice=item.item_voice or job.voice,
            options=dict(job.options),
            output_prefix=job.output_prefix,
            provider_job=ProviderJob.from_json(item.provider_job),
            route=route,
            fallback=fallback,
            content_hash=item.content_hash,
            capped=job.cap_characters is not None or job.cap_audio_seconds is not None,
            twin=getattr(item, "twin", None),
        )
        if route == 0:
            return claimed
        chosen = fallback[route - 1]
        return replace(claimed, provider=chosen.provider, model=chosen.model, voice=chosen.voice)


@dataclass(frozen=True)
class ProviderJob:
    """A job a provider runs for an item while the item waits queued (SLNG batch STT).

    `id` is chosen by us and recorded *before* the submit (`submitted` False): a crash
    between submit and the next record is then found by asking the provider for `id`.
    """

    id: str
    since: datetime  # when the id was recorded: the start of the bounded wait
    submitted: bool = False
    polls: int = 0  # status polls so far (the next delay grows with them)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "since": self.since.isoformat()}

    @classmethod
    def from_json(cls, raw: Any) -> ProviderJob | None:
        """The job `to_json` stored, or None for no job (SQL or JSON null)."""
        if not isinstance(raw, dict):
            return None
        since = datetime.fromisoformat(raw["since"])
        return cls(str(raw["id"]), since, bool(raw.get("submitted")), int(raw.get("polls", 0)))


@dataclass(frozen=True)
class ItemResult:
    """The stored output of a succeeded item."""

    output_key: str
    output_bytes: int
    content_type: str
    duration_s: float | None
    characters: int
    pieces: int = 1  # provider requests a long TTS line took (workers/long_tts.py)
    # The content hash of the route that spoke it (None: keep the item's), and the item whose
    # output was copied instead of calling a provider (its usage is then 0: workers/reuse.py).
    content_hash: str | None = None
    reused_from: int | None = None

    def columns(self) -> dict[str, Any]:
        """The item row's columns this result fills."""
        return {
            "content_hash": self.content_hash,
            "reused_from": self.reused_from,
            "output_key": self.output_key,
            "output_bytes": self.output_bytes,
            "output_content_type": self.content_type,
            "duration_s": self.duration_s,
            "characters": self.characters,
            "pieces": self.pieces,
        }


@dataclass(frozen=True)
class ItemError:
    """Why an item did not succeed this time: a registry code and a sentence for the user."""

    code: ErrorCode
    message: str


@dataclass(frozen=True)
class AttemptRecord:
    """One provider call for an item (several per claim when retried in-call)."""

    started_at: datetime
    latency_ms: float
    status_code: int | None
    error_code: str | None
    provider_request_id: str | None

    def row(self) -> dict[str, Any]:
        return asdict(self)
