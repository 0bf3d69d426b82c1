"""Configuration, read from the environment only at entry points (API factory, Celery app, CLI).

Lower layers never call `get_settings()`; they take explicit arguments.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from jobs.archives import parse_archive_buckets
from jobs.catalog_limits import parse_limit_overrides
from jobs.catalog_slng import SLNG_SYNC_STT_MAX_BYTES
from jobs.pricing import PriceTable, price_table

# A cloud region name (eu-north-1, asia-south1): it goes into a header, so nothing else.
_REGION = re.compile(r"[a-z]{2,12}(-[a-z]{2,12})*-?[0-9]{1,2}")


def default_home() -> Path:
    """Local mode's state when SPEECHBATCH_HOME is unset: the per-user data directory."""
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "speechbatch"


def _home(data: dict[str, Any]) -> Path:
    return Path(data["home"]).expanduser().resolve()


class Settings(BaseSettings):
    """Every knob speechbatch reads. Names match design §4 and `.env.example`.

    Values come from the environment first, then from `.env` in the current directory (the
    file docker compose reads), then these defaults.
    """

    model_config = SettingsConfigDict(
        env_prefix="SPEECHBATCH_", extra="ignore", env_file=".env", env_file_encoding="utf-8"
    )

    # Where local mode keeps its SQLite file and objects (the embedded defaults below).
    home: Path = Field(default_factory=default_home)
    database_url: str = Field(
        default_factory=lambda data: f"sqlite:///{_home(data) / 'speechbatch.db'}"
    )
    broker_url: str | None = None
    storage_url: str = Field(default_factory=lambda data: f"file://{_home(data) / 'objects'}")
    s3_endpoint_url: str | None = None
    # Where clients outside the storage network reach S3 (docker compose publishes SeaweedFS
    # on localhost): used only to sign download URLs. Unset = s3_endpoint_url.
    s3_public_endpoint_url: str | None = None
    log_format: Literal["text", "json"] = "text"

    api_url: str | None = None
    api_key: SecretStr | None = None

    slng_base_url: str = "https://api.slng.ai"
    # Sent as SLNG's `X-Region-Override` header (e.g. eu-north-1); unset lets SLNG choose.
    slng_region: str | None = None
    # SLNG's batch STT host (providers.md §1.7), same SLNG_API_KEY. A recording over
    # `slng_batch_over_bytes` (or a job naming the batch model) is submitted there and polled;
    # an item whose SLNG job has not finished after `slng_batch_max_wait_seconds` fails.
    slng_batch_base_url: str = "https://api.batch.slng.ai"
    slng_batch_over_bytes: int = Field(default=SLNG_SYNC_STT_MAX_BYTES, gt=0)
    slng_batch_max_wait_seconds: float = Field(default=6 * 3600.0, gt=0)
    smallest_base_url: str = "https://api.smallest.ai"
    deepgram_base_url: str = "https://api.deepgram.com"
    openai_base_url: str = "https://api.openai.com"
    elevenlabs_base_url: str = "https://api.elevenlabs.io"

    # Provider credentials use the vendors' own conventional names (no prefix).
    slng_api_key: SecretStr | None = Field(default=None, validation_alias="SLNG_API_KEY")
    smallest_api_key: SecretStr | None = Field(default=None, validation_alias="SMALLEST_API_KEY")
    deepgram_api_key: SecretStr | None = Field(default=None, validation_alias="DEEPGRAM_API_KEY")
    openai_api_key: SecretStr | None = Field(default=None, validation_alias="OPENAI_API_KEY")
    elevenlabs_api_key: SecretStr | None = Field(
        default=None, validation_alias="ELEVENLABS_API_KEY"
    )

    allow_private_networks: str = ""

    lease_seconds: int = 60
    # How long one provider call waits for a free slot of the shared throttle before the
    # item is handed back to the queue (no attempt spent).
    throttle_wait_seconds: float = 5.0
    max_item_attempts: int = 5
    # A worker runs the canary on itself this often and exits (status 1) after three failures
    # in a row, so its supervisor restarts it (workers/self_check.py). 0 turns it off.
    worker_self_check_seconds: float = Field(default=30.0, ge=0)
    max_upload_bytes: int = 25 * 1024 * 1024
    max_request_bytes: int = 32 * 1024 * 1024
    max_items_per_job: int = 100_000
    # An upload no job refers to is deleted by beat once it is this old.
    upload_retention_hours: float = 24.0
    presign_seconds: int = 900
    # The ceiling of one provider call's whole exchange; each call's own deadline is sized to
    # the request below it (workers/providers/answers.py).
    provider_timeout_seconds: float = Field(default=60.0, gt=0)
    # Largest provider answer read per call; bodies are read in chunks and cut off beyond it.
    max_tts_response_bytes: int = Field(default=32 * 1024 * 1024, gt=0)
    max_stt_response_bytes: int = Field(default=8 * 1024 * 1024, gt=0)
    # Samples (duration x channels x rate) a worker decodes from one recording or answer,
    # checked from the header before decoding: 115,200,000 is 2 h of 16 kHz mono.
    max_decode_samples: int = Field(default=115_200_000, gt=0)
    # A fetched source is held in memory while it is sent on: keep this times concurrency modest.
    max_source_bytes: int = 100 * 1024 * 1024
    source_timeout_seconds: float = 300.0
    # One webhook POST's whole exchange (connect, send, answer); beat's sender cuts it off after.
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    # Per-credential call limits over the catalog's: "slng=16/50,deepgram=15" (concurrency[/rps]).
    provider_limits: str = ""
    # Price overrides as JSON, keyed by provider or provider/model (jobs.pricing), e.g.
    # {"openai": {"tts_per_million_chars": 12}, "deepgram/nova-3": {"stt_per_minute": 0.0036}}.
    prices: str = ""
    # Archive jobs (issue 12, jobs.archives): where tenants may list recordings, comma
    # separated `[tenant=]s3://bucket[/prefix]` or `[tenant=]file:///dir` (empty: nowhere;
    # the service's own storage is always refused); `[tenant=]write:s3://bucket[/prefix]`
    # entries are where `output.url` may write instead (jobs.archive_outputs); and how many
    # objects one job may take.
    archive_buckets: str = ""
    archive_max_items: int = Field(default=1_000_000, ge=1, le=10_000_000)
    # An archive dry run lists the prefix to count its items, for at most this long or this
    # many objects; then it answers with the count so far as a lower bound (jobs.archive_count).
    archive_dry_run_seconds: float = Field(default=10.0, gt=0, le=120)
    archive_dry_run_objects: int = Field(default=100_000, ge=1, le=10_000_000)
    # Schedules (issue 12): how many a tenant may have; how late beat may still fire a fire
    # time as on time (later ones count as missed and follow the schedule's catch_up).
    max_schedules_per_tenant: int = Field(default=1000, ge=1)
    schedule_misfire_grace_seconds: float = Field(default=60.0, ge=0)
    # One beat at a time does the chores; another takes over this long after it stops renewing
    # (at least three beat intervals).
    beat_lease_seconds: float = Field(default=30.0, gt=0)
    # Metrics (issue 13): the port of a worker's and of beat's Prometheus endpoint, one per
    # process (0: none). `--metrics-port` on `worker` and `beat` wins over these.
    worker_metrics_port: int = Field(default=0, ge=0, le=65535)
    beat_metrics_port: int = Field(default=0, ge=0, le=65535)
    # Celery task events (issue 13), for Flower and `celery events`: off by default, each
    # task state is a broker write. `worker --events/--no-events` wins over it.
    task_events: bool = False

    @field_validator("slng_region")
    @classmethod
    def _region_is_a_name(cls, value: str | None) -> str | None:
        value = (value or "").strip()
        if value and not _REGION.fullmatch(value):
            raise ValueError(f"{value!r} is not a region name such as eu-north-1")
        return value or None

    @field_validator("archive_buckets")
    @classmethod
    def _archive_buckets_parse(cls, value: str) -> str:
        parse_archive_buckets(value)  # a bad entry is said at start-up, not at a submit
        return value

    @field_validator("provider_limits")
    @classmethod
    def _limits_parse(cls, value: str) -> str:
        parse_limit_overrides(value)  # fail at start-up, not at the first throttled call
        return value

    @field_validator("prices")
    @classmethod
    def _prices_parse(cls, value: str) -> str:
        price_table(value)  # a bad price is refused at start-up, naming the entry
        return value

    def price_table(self) -> PriceTable:
        """The built-in prices with SPEECHBATCH_PRICES applied (parsed once per value)."""
        return price_table(self.prices)

    def provider_base_url(self, provider: str) -> str:
        """The base URL (vendor host root, no `/v1`) for `provider`."""
        value: str = getattr(self, f"{provider}_base_url")
        return value.rstrip("/")

    def provider_api_key(self, provider: str) -> str | None:
        """The credential for `provider`, or None when it is not configured."""
        secret: SecretStr | None = getattr(self, f"{provider}_api_key", None)
        return secret.get_secret_value() if secret else None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
