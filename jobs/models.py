"""SQLAlchemy 2 models: tenants, API keys, jobs, items and attempts.

A job keeps per-status item counters, updated in the same transaction as every item
transition, so polling a 100k-item job reads one row instead of scanning its items.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy import text as sql_text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from jobs.model_types import NAMING, BigIntId, StrEnumColumn, UTCDateTime
from jobs.status import ItemStatus, JobKind, JobStatus


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON()}


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[datetime]
    # Standard Webhooks signing secrets (`whsec_...`, jobs.webhooks): made on first use; the
    # previous one still signs for a grace period after a rotation.
    webhook_secret: Mapped[str | None] = mapped_column(String(100))
    webhook_previous_secret: Mapped[str | None] = mapped_column(String(100))
    webhook_secret_rotated_at: Mapped[datetime | None]


class ApiKey(Base):
    """An API key: `prefix` is the public lookup handle, `digest` the SHA-256 of the whole key."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    digest: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


# The rows `ix_jobs_webhook_unrecorded` covers; the query that wants it repeats this condition.
WEBHOOK_UNRECORDED = (
    "webhook_url IS NOT NULL AND finished_at IS NOT NULL"
    " AND (webhook_recorded_finish IS NULL OR webhook_recorded_finish <> finished_at)"
)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("tenant_id", "idempotency_key"),
        Index("ix_jobs_tenant_created", "tenant_id", "created_at", "id"),
        # Beat's webhook question: which finished jobs have no delivery for this finish yet.
        # Partial, so it holds only those few jobs however many have finished before.
        Index(
            "ix_jobs_webhook_unrecorded",
            "finished_at",
            postgresql_where=sql_text(WEBHOOK_UNRECORDED),
            sqlite_where=sql_text(WEBHOOK_UNRECORDED),
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    kind: Mapped[JobKind] = mapped_column(StrEnumColumn(JobKind, 8))
    provider: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(200))
    voice: Mapped[str | None] = mapped_column(String(200))
    options: Mapped[dict[str, Any]]
    # Where items go when this provider fails them (jobs.records.Route as JSON), in order.
    fallback: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    output_prefix: Mapped[str] = mapped_column(String(200), default="")
    # Stitch the TTS outputs into one track with a cue sheet once the job ends (output.stitched).
    stitched: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    status: Mapped[JobStatus] = mapped_column(
        StrEnumColumn(JobStatus, 24), default=JobStatus.QUEUED
    )
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_digest: Mapped[str | None] = mapped_column(String(64))
    total: Mapped[int] = mapped_column(Integer, default=0)
    queued: Mapped[int] = mapped_column(Integer, default=0)
    running: Mapped[int] = mapped_column(Integer, default=0)
    succeeded: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    canceled: Mapped[int] = mapped_column(Integer, default=0)
    # Archive jobs (issue 12, migration 0009): items skipped as transcribed before; whether the
    # prefix is still being listed into items (the job is `expanding` until it is not); and
    # where outputs go (`job` folder, or `mirror` of the source layout).
    skipped: Mapped[int] = mapped_column(Integer, default=0, server_default=sql_text("0"))
    expanding: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    output_layout: Mapped[str] = mapped_column(String(8), default="job", server_default="job")
    usage_characters: Mapped[int] = mapped_column(BigInteger, default=0)
    usage_audio_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    canceled_at: Mapped[datetime | None]
    # Cost and reuse (issue 12, migration 0008): the client's `budget{characters,
    # audio_seconds, cost}`, the caps workers enforce (a cost cap converted at submit at the
    # job's dearest route: jobs.pricing.budget_caps), and when a cap stopped the job.
    budget: Mapped[dict[str, Any] | None]
    cap_characters: Mapped[int | None] = mapped_column(BigInteger)
    cap_audio_seconds: Mapped[float | None] = mapped_column(Float)
    budget_stopped_at: Mapped[datetime | None]
    # POSTed a signed event when the job finishes (jobs.webhooks, workers.webhook_sender).
    webhook_url: Mapped[str | None] = mapped_column(String(2048))
    # The finished_at whose event is recorded in webhook_deliveries (ix_jobs_webhook_unrecorded).
    webhook_recorded_finish: Mapped[datetime | None]


# The rows `ix_items_upload_source` covers; queries that want it repeat this condition.
UPLOAD_SOURCE_PATTERN = "upload://%"
UPLOAD_SOURCES = f"source LIKE '{UPLOAD_SOURCE_PATTERN}'"
HASHED = "content_hash IS NOT NULL"
REROUTED = "route > 0"


# The rows `ix_items_archive_digest` covers (archive items only).
ARCHIVED = "archive_digest IS NOT NULL"
# The rows `ix_items_job_error_seq` covers (items with an error code).
ERRORED = "error_code IS NOT NULL"


class Item(Base):
    __tablename__ = "items"
    __table_args__ = (
        UniqueConstraint("job_id", "seq"),
        UniqueConstraint("job_id", "external_id"),
        Index("ix_items_job_status_seq", "job_id", "status", "seq"),
        # The sweeper's two questions: which queued items are due, which leases expired.
        Index("ix_items_status_next_attempt", "status", "next_attempt_at"),
        Index("ix_items_status_lease", "status", "lease_expires_at"),
        # Incremental archives' question: which earlier item transcribed this object version.
        Index(
            "ix_items_archive_digest",
            "archive_digest",
            postgresql_where=sql_text(ARCHIVED),
            sqlite_where=sql_text(ARCHIVED),
        ),
        # Upload retention's question: does an item name this upload? Partial, so long
        # http(s) source URLs stay out of it (a btree entry is capped at ~2.7 kB on PostgreSQL).
        Index(
            "ix_items_upload_source",
            "source",
            postgresql_where=sql_text(UPLOAD_SOURCES),
            sqlite_where=sql_text(UPLOAD_SOURCES),
        ),
        # Reuse's question (workers/reuse.py): a finished or earlier pending item with this
        # line's content hash. Partial: STT items have none.
        Index(
            "ix_items_content_hash",
            "content_hash",
            "status",
            "id",
            postgresql_where=sql_text(HASHED),
            sqlite_where=sql_text(HASHED),
        ),
        # Per-provider usage of a job that failed over: only its rerouted items (jobs.pricing).
        Index(
            "ix_items_job_rerouted",
            "job_id",
            "route",
            postgresql_where=sql_text(REROUTED),
            sqlite_where=sql_text(REROUTED),
        ),
        # The dashboard's item table filtered by error code, paged by seq (migration 0010).
        Index(
            "ix_items_job_error_seq",
            "job_id",
            "error_code",
            "seq",
            postgresql_where=sql_text(ERRORED),
            sqlite_where=sql_text(ERRORED),
        ),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    external_id: Mapped[str] = mapped_column(String(128))
    text: Mapped[str | None] = mapped_column(Text)
    voice: Mapped[str | None] = mapped_column(String(200))  # overrides the job's voice
    source: Mapped[str | None] = mapped_column(Text)
    status: Mapped[ItemStatus] = mapped_column(
        StrEnumColumn(ItemStatus, 16), default=ItemStatus.QUEUED
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claim_token: Mapped[str | None] = mapped_column(String(32))
    next_attempt_at: Mapped[datetime | None]
    lease_expires_at: Mapped[datetime | None]
    published_at: Mapped[datetime | None]
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    output_key: Mapped[str | None] = mapped_column(String(1024))
    output_bytes: Mapped[int | None] = mapped_column(BigInteger)
    output_content_type: Mapped[str | None] = mapped_column(String(100))
    duration_s: Mapped[float | None] = mapped_column(Float)
    characters: Mapped[int] = mapped_column(Integer, default=0)
    # Provider requests the output took: 1, or a long TTS line's pieces (workers/long_tts.py).
    pieces: Mapped[int | None] = mapped_column(Integer)
    # Which provider the item uses: 0 the job's own, n its fallback n (jobs.records.Route).
    route: Mapped[int] = mapped_column(SmallInteger, default=0, server_default=sql_text("0"))
    updated_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    # The provider-side job the item waits on between polls (SLNG batch): jobs.records.ProviderJob.
    provider_job: Mapped[dict[str, Any] | None]
    # What a TTS line's audio is made of (jobs.content_hash): identical lines reuse one output.
    content_hash: Mapped[str | None] = mapped_column(String(64))
    # The item whose stored output this one copied instead of calling its provider.
    reused_from: Mapped[int | None] = mapped_column(BigInteger)
    # Passed its job's budget check (jobs.ledger.pass_budget): while running, its characters
    # count as spent for the checks of the job's other items.
    budget_passed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Archive items (migration 0009): what the transcript depends on (object URL, ETag and
    # settings: jobs.archive_keys.archive_digest), and for a skipped item the job whose item
    # made the output it points at.
    archive_digest: Mapped[str | None] = mapped_column(String(64))
    skipped_from: Mapped[str | None] = mapped_column(String(40))


class Attempt(Base):
    """One provider HTTP attempt for an item (several per claim when retried in-call)."""

    __tablename__ = "attempts"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), index=True)
    started_at: Mapped[datetime]
    latency_ms: Mapped[float]
    status_code: Mapped[int | None] = mapped_column(Integer)
    error_code: Mapped[str | None] = mapped_column(String(64))
    provider_request_id: Mapped[str | None] = mapped_column(String(200))


class ArchiveExpansion(Base):
    """An archive job's listing: what to list, how far it got, and who is listing it.

    `cursor` is the last key whose item is committed (listing resumes after it), moved in
    the same transaction as the items it covers; `lease_token`/`lease_until` let one
    expander at a time work on it (workers.expand), and beat resume one that died.
    """

    __tablename__ = "archive_expansions"
    __table_args__ = (Index("ix_archive_expansions_state_lease", "state", "lease_until"),)

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    location: Mapped[str] = mapped_column(Text)  # s3://bucket/prefix/ or file:///dir/
    pattern: Mapped[str | None] = mapped_column(String(200))
    min_bytes: Mapped[int | None] = mapped_column(BigInteger)
    max_bytes: Mapped[int | None] = mapped_column(BigInteger)
    modified_since: Mapped[datetime | None]
    incremental: Mapped[bool] = mapped_column(Boolean, default=True)
    max_items: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), default="expanding")  # expanding|done
    cursor: Mapped[str | None] = mapped_column(Text)
    next_seq: Mapped[int] = mapped_column(Integer, default=0)
    listed: Mapped[int] = mapped_column(BigInteger, default=0)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    lease_token: Mapped[str | None] = mapped_column(String(32))
    lease_until: Mapped[datetime | None]
    error_message: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
