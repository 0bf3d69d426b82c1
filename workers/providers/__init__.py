"""Provider adapters (one module per vendor) and `build_provider`, the one place they are made.

Workers build each provider once per process with its `httpx.Client` and key, then call
`synthesize`/`transcribe`. The error tree and the neutral result types are re-exported so
callers can write `from workers.providers import RateLimited, Transcript`; the adapter
classes themselves live in their modules (`workers.providers.slng.SlngProvider`, ...).
"""

from __future__ import annotations

import httpx

from workers.providers.base import (
    AudioInput,
    Segment,
    SpeechProvider,
    Synthesis,
    Transcript,
    Word,
)
from workers.providers.errors import (
    AuthenticationFailed,
    InvalidInput,
    PermanentProviderError,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    QuotaExceeded,
    RateLimited,
    TransientProviderError,
    UnsupportedAudio,
)

__all__ = [
    "AudioInput",
    "AuthenticationFailed",
    "InvalidInput",
    "PermanentProviderError",
    "ProviderError",
    "ProviderTimeout",
    "ProviderUnavailable",
    "QuotaExceeded",
    "RateLimited",
    "Segment",
    "SpeechProvider",
    "Synthesis",
    "Transcript",
    "TransientProviderError",
    "UnsupportedAudio",
    "Word",
    "build_provider",
]

KNOWN_PROVIDERS = ("slng", "local")


def build_provider(
    name: str,
    *,
    client: httpx.Client | None,
    base_url: str | None,
    api_key: str | None,
) -> SpeechProvider:
    """The adapter for `name`; hosted ones need the worker's shared client, base URL and key."""
    # Adapters are imported here, not at the top: `workers.audio` imports the error tree from
    # this package, and importing the errors should not drag in numpy and libsndfile.
    from workers.providers.local import LocalProvider
    from workers.providers.slng import SlngProvider

    if name == "local":
        return LocalProvider()
    if name == "slng":
        if client is None or not base_url:
            # A wiring bug in the caller, not something a user can fix in a job body.
            raise ValueError("the slng provider needs an httpx.Client and a base_url")
        if not api_key or not api_key.strip():
            raise AuthenticationFailed(
                "No SLNG API key is configured; set SLNG_API_KEY for the workers and retry.",
                code="missing_api_key",
            )
        return SlngProvider(client, base_url=base_url, api_key=api_key.strip())
    raise InvalidInput(
        f"Unknown provider {name!r}; use one of: {', '.join(KNOWN_PROVIDERS)}.",
        code="unknown_provider",
    )
