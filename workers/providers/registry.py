"""The one place provider adapters are made, and the registry a worker process keeps.

A worker builds each adapter once, on first use, with the process's shared `httpx.Client`,
the provider's base URL and key, and asks the registry for the credential's fingerprint
(what the shared throttle and retry budget are keyed by: never the key itself).
"""

from __future__ import annotations

import socket
import threading
from typing import Protocol

import httpx

from jobs.error_codes import ErrorCode
from jobs.settings import Settings
from workers.providers.base import SpeechProvider
from workers.providers.deepgram import DeepgramProvider
from workers.providers.elevenlabs import ElevenLabsProvider
from workers.providers.errors import AuthenticationFailed, InvalidInput
from workers.providers.exchange import Bounds
from workers.providers.local import LocalProvider
from workers.providers.openai import OpenAIProvider
from workers.providers.slng import SlngProvider
from workers.providers.smallest import SmallestProvider
from workers.throttle import credential_fingerprint

KNOWN_PROVIDERS = ("slng", "smallest", "deepgram", "openai", "elevenlabs", "local")
# Hosted vendors whose adapter takes only the shared client, base URL, key and bounds:
# name -> (the vendor as messages name it, the adapter class).
_PLAIN_HOSTED: dict[
    str, tuple[str, type[DeepgramProvider | OpenAIProvider | ElevenLabsProvider]]
] = {
    "deepgram": ("Deepgram", DeepgramProvider),
    "openai": ("OpenAI", OpenAIProvider),
    "elevenlabs": ("ElevenLabs", ElevenLabsProvider),
}


def build_provider(
    name: str,
    *,
    client: httpx.Client | None,
    base_url: str | None,
    api_key: str | None,
    bounds: Bounds | None = None,
    region: str | None = None,
) -> SpeechProvider:
    """The adapter for `name`; hosted ones need the worker's shared client, base URL and key.

    `bounds` caps each call's time, answer size and decoding (the defaults when None);
    `region` is the vendor region to ask for (SLNG's X-Region-Override), None for any.
    """
    if name == "local":
        return LocalProvider(bounds=bounds)
    if name == "slng":
        client, base_url, key = _hosted(name, "SLNG", client, base_url, api_key)
        return SlngProvider(client, base_url=base_url, api_key=key, bounds=bounds, region=region)
    if name == "smallest":
        client, base_url, key = _hosted(name, "Smallest AI", client, base_url, api_key)
        return SmallestProvider(client, base_url=base_url, api_key=key, bounds=bounds)
    if name in _PLAIN_HOSTED:
        vendor, adapter = _PLAIN_HOSTED[name]
        client, base_url, key = _hosted(name, vendor, client, base_url, api_key)
        return adapter(client, base_url=base_url, api_key=key, bounds=bounds)
    raise InvalidInput(
        f"Unknown provider {name!r}; use one of: {', '.join(KNOWN_PROVIDERS)}.",
        code=ErrorCode.UNKNOWN_PROVIDER,
    )


def _hosted(
    name: str, vendor: str, client: httpx.Client | None, base_url: str | None, api_key: str | None
) -> tuple[httpx.Client, str, str]:
    """A hosted adapter's client, base URL and (stripped) key, or why it cannot be built."""
    if client is None or not base_url:
        # A wiring bug in the caller, not something a user can fix in a job body.
        raise ValueError(f"the {name} provider needs an httpx.Client and a base_url")
    if not api_key or not api_key.strip():
        setting = f"{name.upper()}_API_KEY"
        raise AuthenticationFailed(
            f"No {vendor} API key is configured; set {setting} for the workers and retry.",
            code=ErrorCode.MISSING_API_KEY,
        )
    return client, base_url, api_key.strip()


class Providers(Protocol):
    """The seam the pipeline sees: an adapter and a credential fingerprint per provider."""

    def get(self, name: str) -> SpeechProvider: ...
    def fingerprint(self, name: str) -> str: ...
    def close(self) -> None: ...


class ProviderRegistry:
    """Adapters by name, built once each (thread-safe), sharing one pooled HTTP client."""

    def __init__(
        self,
        client: httpx.Client,
        *,
        base_urls: dict[str, str],
        api_keys: dict[str, str | None],
        bounds: Bounds | None = None,
        regions: dict[str, str | None] | None = None,
    ) -> None:
        self.client = client
        self._regions = regions or {}
        self.bounds = bounds or Bounds()
        self._base_urls, self._api_keys = base_urls, api_keys
        self._built: dict[str, SpeechProvider] = {}
        self._fingerprints: dict[str, str] = {}  # hashed once per provider, not per call
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, client: httpx.Client) -> ProviderRegistry:
        names = ("slng", "smallest", "deepgram", "openai", "elevenlabs")
        return cls(
            client,
            base_urls={name: settings.provider_base_url(name) for name in names},
            api_keys={name: settings.provider_api_key(name) for name in names},
            bounds=Bounds(
                timeout_s=settings.provider_timeout_seconds,
                max_tts_bytes=settings.max_tts_response_bytes,
                max_stt_bytes=settings.max_stt_response_bytes,
                max_decode_samples=settings.max_decode_samples,
            ),
            regions={"slng": settings.slng_region},
        )

    def get(self, name: str) -> SpeechProvider:
        with self._lock:
            if name not in self._built:
                self._built[name] = build_provider(
                    name,
                    client=self.client,
                    base_url=self._base_urls.get(name),
                    api_key=self._api_keys.get(name),
                    bounds=self.bounds,
                    region=self._regions.get(name),
                )
            return self._built[name]

    def fingerprint(self, name: str) -> str:
        """Whose limits a call counts against: the local engines are limited per host (they
        use this machine's CPU), the hosted ones per credential, shared by every worker."""
        found = self._fingerprints.get(name)
        if found is None:
            key = socket.gethostname() if name == "local" else self._api_keys.get(name)
            found = self._fingerprints[name] = credential_fingerprint(key)
        return found

    def close(self) -> None:
        with self._lock:
            built = list(self._built.values())
        for provider in built:
            close_sessions = getattr(provider, "close", None)  # pooled WebSocket sessions
            if callable(close_sessions):
                close_sessions()
        self.client.close()
