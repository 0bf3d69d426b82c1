"""What each provider offers: models per direction, defaults and per-request text limits.

The API validates job bodies against this table before anything is queued, and provider
adapters read their limits from it, so one table answers "is this model known?" everywhere.
Model identifiers follow design §6; SLNG models are the route after `/v1/tts/` or `/v1/stt/`.
"""

from __future__ import annotations

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
    ),
}


def get_provider_spec(name: str) -> ProviderSpec | None:
    """The spec for `name`, or None when speechbatch does not know that provider."""
    return PROVIDERS.get(name)
