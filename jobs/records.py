"""The typed records that cross the item ledger's boundary.

A worker claims an item (`ClaimedItem`), calls a provider, writes the output, and hands the
ledger what it produced (`ItemResult`) or why it did not (`ItemError`), plus one
`AttemptRecord` per provider call. Nothing crosses as a loose dict.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from jobs.error_codes import ErrorCode
from jobs.status import JobKind


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

    @classmethod
    def from_rows(cls, item_id: int, token: str, item: Any, job: Any) -> ClaimedItem:
        """From the claimed item row and its job's row (one row on PostgreSQL)."""
        return cls(
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
        )


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

    def columns(self) -> dict[str, Any]:
        """The item row's columns this result fills."""
        return {
            "output_key": self.output_key,
            "output_bytes": self.output_bytes,
            "output_content_type": self.content_type,
            "duration_s": self.duration_s,
            "characters": self.characters,
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
