"""What each provider offers: models per direction, defaults, text limits and call limits.

The API validates job bodies against this table before anything is queued, and provider
adapters read their limits from it, so one table answers "is this model known?" everywhere.
Model identifiers follow design §6; SLNG models are the route after `/v1/tts/` or `/v1/stt/`.
`max_concurrency`/`max_rps` are the vendor's per-credential limits that `workers.throttle`
enforces across all workers; `SPEECHBATCH_PROVIDER_LIMITS` overrides them
(`provider_limits`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ProviderSpec:
    name: str
    tts_models: tuple[str, ...] = ()
    stt_models: tuple[str, ...] = ()
    default_tts_model: str | None = None
    default_stt_model: str | None = None
    default_voice: str | None = None
    # Per-request TTS text limit in characters, per model (fallback: `max_chars`).
    max_chars: int = 1000
    max_chars_by_model: dict[str, int] = field(default_factory=dict)
    needs_api_key: bool = True
    # In-flight requests allowed per credential, and requests/s (None: no documented rate).
    max_concurrency: int = 1
    max_rps: float | None = None

    def models(self, kind: str) -> tuple[str, ...]:
        return self.tts_models if kind == "tts" else self.stt_models

    def default_model(self, kind: str) -> str | None:
        return self.default_tts_model if kind == "tts" else self.default_stt_model

    def text_limit(self, model: str) -> int:
        return self.max_chars_by_model.get(model, self.max_chars)


SLNG_DEEPGRAM_STT_VARIANTS = ("en", "es", "hi", "kn", "mr", "multi", "ta", "te")

PROVIDERS: dict[str, ProviderSpec] = {
    "slng": ProviderSpec(
        name="slng",
        tts_models=("slng/deepgram/aura:2-en", "slng/deepgram/aura:2-es", "deepgram/aura:2"),
        stt_models=(
            *(f"slng/deepgram/nova:3-{v}" for v in SLNG_DEEPGRAM_STT_VARIANTS),
            "slng/openai/whisper:large-v3",
        ),
        default_tts_model="slng/deepgram/aura:2-en",
        default_stt_model="slng/deepgram/nova:3-en",
        default_voice="aura-2-thalia-en",
        # Deepgram Aura-2 (behind SLNG) accepts about 2,000 characters; 1,000 is the safe figure.
        max_chars=1000,
        # UNCONFIRMED: SLNG documents no HTTP concurrency or rate limit (providers.md §1.10).
        # 16 in flight is a conservative guess below what its upstreams allow (Deepgram TTS
        # 15 per project is the tightest, but SLNG pools upstream keys); 429s adapt it down.
        max_concurrency=16,
        max_rps=None,
    ),
    "local": ProviderSpec(
        name="local",
        tts_models=("espeak-ng",),
        stt_models=("pocketsphinx",),
        default_tts_model="espeak-ng",
        default_stt_model="pocketsphinx",
        default_voice="en-us",
        max_chars=5000,
        needs_api_key=False,
        # espeak-ng and pocketsphinx run inside the worker and are CPU-bound: 2 at a time keeps
        # a core free for the worker itself. No credential, so throttle it per host.
        max_concurrency=2,
        max_rps=None,
    ),
}


def get_provider_spec(name: str) -> ProviderSpec | None:
    """The spec for `name`, or None when speechbatch does not know that provider."""
    return PROVIDERS.get(name)


@dataclass(frozen=True)
class ProviderLimits:
    """Per-credential call limits: in-flight requests and requests/s (None: no rate limit)."""

    max_concurrency: int
    max_rps: float | None = None


_OVERRIDE = re.compile(r"^([a-z0-9_-]+)=(\d+)(?:/(\d+(?:\.\d+)?))?$")


def parse_limit_overrides(text: str) -> dict[str, ProviderLimits]:
    """`"slng=16/50,deepgram=15"` → limits per provider; ValueError naming a bad entry.

    Each entry replaces that provider's limits whole: without `/rps` it has no rate limit.
    """
    parsed: dict[str, ProviderLimits] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        match = _OVERRIDE.match(part.replace(" ", ""))
        if match is None or int(match.group(2)) < 1 or float(match.group(3) or 1) <= 0:
            raise ValueError(
                f"bad provider limit {part!r}: use name=concurrency[/rps] with concurrency >= 1"
                " and rps > 0, e.g. slng=16/50"
            )
        rps = float(match.group(3)) if match.group(3) is not None else None
        parsed[match.group(1)] = ProviderLimits(int(match.group(2)), rps)
    return parsed


def provider_limits(overrides: str = "") -> dict[str, ProviderLimits]:
    """The catalog's limits per provider with `SPEECHBATCH_PROVIDER_LIMITS` applied on top.

    Overrides may name providers the catalog does not list yet; they are added as given.
    """
    limits = {
        name: ProviderLimits(spec.max_concurrency, spec.max_rps) for name, spec in PROVIDERS.items()
    }
    return limits | parse_limit_overrides(overrides)
