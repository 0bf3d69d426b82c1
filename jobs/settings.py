"""Configuration, read from the environment only at entry points (API factory, Celery app, CLI).

Lower layers never call `get_settings()`; they take explicit arguments.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from jobs.catalog import parse_limit_overrides

EMBEDDED_HOME = Path(".speechbatch")


class Settings(BaseSettings):
    """Every knob speechbatch reads. Names match design §4 and `.env.example`."""

    model_config = SettingsConfigDict(env_prefix="SPEECHBATCH_", extra="ignore")

    database_url: str = f"sqlite:///{EMBEDDED_HOME / 'speechbatch.db'}"
    broker_url: str | None = None
    storage_url: str = f"file://{(EMBEDDED_HOME / 'objects').resolve()}"
    s3_endpoint_url: str | None = None

    api_url: str | None = None
    api_key: SecretStr | None = None

    slng_base_url: str = "https://api.slng.ai"
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
    max_upload_bytes: int = 25 * 1024 * 1024
    max_request_bytes: int = 32 * 1024 * 1024
    max_items_per_job: int = 100_000
    presign_seconds: int = 900
    provider_timeout_seconds: float = 60.0
    # A fetched source is held in memory while it is sent on: keep this times concurrency modest.
    max_source_bytes: int = 100 * 1024 * 1024
    source_timeout_seconds: float = 300.0
    # Per-credential call limits over the catalog's: "slng=16/50,deepgram=15" (concurrency[/rps]).
    provider_limits: str = ""

    @field_validator("provider_limits")
    @classmethod
    def _limits_parse(cls, value: str) -> str:
        parse_limit_overrides(value)  # fail at start-up, not at the first throttled call
        return value

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
