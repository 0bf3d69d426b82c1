"""Provider adapters: one module per vendor, built by `workers.providers.registry`.

The error tree and the neutral result types are re-exported so callers can write
`from workers.providers import RateLimited, Transcript`; importing them does not load any
adapter (or numpy and libsndfile, which the local engine needs).
"""

from __future__ import annotations

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
]
