"""What each provider offers: models per direction, defaults, text limits and call limits.

The API validates job bodies against this table before anything is queued, and provider
adapters read their limits from it, so one table answers "is this model known?" everywhere.
Model identifiers follow design §6; SLNG's, the longest lists, are in `jobs.catalog_slng`.
`max_concurrency`/`max_rps` are the vendor's per-credential limits that `workers.throttle`
enforces across all workers; `SPEECHBATCH_PROVIDER_LIMITS` overrides them
(`jobs.catalog_limits.provider_limits`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from jobs.catalog_slng import (
    SLNG_BATCH_STT_MODEL,
    SLNG_BRIDGE_STT_VARIANTS,
    SLNG_BRIDGE_TTS_VARIANTS,
    SLNG_STT_MODELS,
    SLNG_TTS_MODELS,
)

# Transports whose audio arrives in pieces, written to storage as it comes (workers/streamed.py),
# in the order `auto` prefers them (bench/transports.py: WebSocket 0.97 x C/L, SSE 0.90-0.93).
STREAMING_TRANSPORTS = ("websocket", "stream")
# `auto` streams a TTS line longer than this (over a minute of speech): over HTTP its whole
# answer is held in memory and stored only at the end; streamed, the worker holds about two
# 8 MiB parts whatever its length and stores the first part while the rest is made
# (bench/streaming.py: 10 min over SLNG's WebSocket, first part stored at 9 s of 30 s, worker
# +13 MB; 5 min over HTTP, stored at the end, +37 MB). Shorter lines stay on HTTP: as fast
# (bench/transports.py) and what the chaos suite's faults exercise.
STREAM_ABOVE_CHARS = 1000


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
    # A kind whose calls have limits of their own (another product of the vendor), as
    # (max_concurrency, max_rps): its calls count against the limits named
    # `limits_name(provider, kind)` instead of the provider's.
    kind_limits: dict[str, tuple[int, float | None]] = field(default_factory=dict)
    # How each kind can reach the vendor (`options.transport`), the first being what `auto`
    # picks, except for a long TTS line (`STREAM_ABOVE_CHARS`), which `auto` streams over
    # the vendor's best streaming transport. Plain HTTP is the default.
    transports: dict[str, tuple[str, ...]] = field(
        default_factory=lambda: {"tts": ("http",), "stt": ("http",)}
    )
    # Model ids the vendor retired → the model to use instead (refused at submit).
    retired_models: dict[str, str] = field(default_factory=dict)
    # The largest recording one STT request takes; a bigger one is re-encoded as 16 kHz mono
    # FLAC and, if still too big, split at silences (workers/long_audio.py). None: no limit
    # we split for (SLNG sends big recordings to its batch API instead).
    max_audio_bytes: int | None = None

    def models(self, kind: str) -> tuple[str, ...]:
        return self.tts_models if kind == "tts" else self.stt_models

    def default_model(self, kind: str) -> str | None:
        return self.default_tts_model if kind == "tts" else self.default_stt_model

    def text_limit(self, model: str) -> int:
        return self.max_chars_by_model.get(model, self.max_chars)

    def pick_transport(self, kind: str, asked: str | None, *, chars: int = 0) -> str | None:
        """The transport a call of `kind` (on `chars` characters of text) uses for
        `options.transport` = `asked` (None or "auto": the vendor's best for it), or None when
        the vendor does not offer it."""
        offered = self.transports.get(kind, ())
        if asked not in (None, "auto"):
            return asked if asked in offered else None
        streaming = [t for t in STREAMING_TRANSPORTS if t in offered]
        if chars > STREAM_ABOVE_CHARS and streaming:
            return streaming[0]
        return offered[0] if offered else None

    def transport_refusal(self, kind: str, asked: str | None) -> str | None:
        """Why `options.transport` = `asked` cannot serve `kind` here, naming what can; None
        when it can (`auto` always can: it is the adapter's own choice)."""
        if asked in (None, "auto") or self.pick_transport(kind, asked) is not None:
            return None
        offered = self.transports.get(kind, ())
        offers = f"offers {', '.join(offered)} (or auto)" if offered else "offers none"
        return (
            f"options.transport {asked!r} is not available for {kind.upper()} on {self.name}, "
            f"which {offers}."
        )


PROVIDERS: dict[str, ProviderSpec] = {
    "slng": ProviderSpec(
        name="slng",
        tts_models=(*SLNG_TTS_MODELS, *(f"unmute/{v}" for v in SLNG_BRIDGE_TTS_VARIANTS)),
        stt_models=(
            *SLNG_STT_MODELS,
            *(f"unmute/{v}" for v in SLNG_BRIDGE_STT_VARIANTS),
            SLNG_BATCH_STT_MODEL,
        ),
        default_tts_model="slng/deepgram/aura:2-en",
        default_stt_model="slng/deepgram/nova:3-en",
        default_voice="aura-2-thalia-en",
        # Deepgram Aura-2 (behind SLNG) accepts about 2,000 characters; 1,000 is the safe figure.
        max_chars=1000,
        # Limits SLNG documents per upstream (providers.md §1.10).
        max_chars_by_model={
            "slng/inworld/max:1.5": 2000,
            "unmute/soniox/tts-rt:v1": 5000,
        },
        # UNCONFIRMED: SLNG documents no HTTP concurrency or rate limit (providers.md §1.10).
        # 16 in flight is a conservative guess below what its upstreams allow (Deepgram TTS
        # 15 per project is the tightest, but SLNG pools upstream keys); 429s adapt it down.
        max_concurrency=16,
        max_rps=None,
        # `auto` is HTTP for lines up to STREAM_ABOVE_CHARS and WebSocket beyond (the models
        # that take more: Inworld 2,000, Soniox 5,000). WebSocket sessions (same paths,
        # providers.md §1.8-§1.9) are pooled per worker and key, so a long job opens a
        # handful instead of one per item.
        transports={"tts": ("http", "websocket"), "stt": ("http", "websocket")},
    ),
    "smallest": ProviderSpec(
        name="smallest",
        tts_models=("lightning_v3.1", "lightning_v3.1_pro"),
        stt_models=("pulse", "pulse-pro"),
        default_tts_model="lightning_v3.1",
        default_stt_model="pulse",
        default_voice="magnus",
        # Lightning's model card gives 250 characters a request (best near 140); whether more
        # is refused or only degraded is UNCONFIRMED (providers.md §2.2), so refuse it here.
        max_chars=250,
        # One TTS request in flight per account (providers.md §2.5); Pulse is limited to 25
        # requests a minute (§2.4) and documents no concurrency: 4 in flight is our choice.
        max_concurrency=1,
        max_rps=None,
        kind_limits={"stt": (4, 25 / 60)},
        # `auto` is HTTP: a Lightning line (250 characters, ~20 s) never reaches
        # STREAM_ABOVE_CHARS, and for short lines SSE's base64 (+33 %) and frame parsing buy
        # nothing. bench/transports.py: http 0.96 x C/L, SSE 0.90-0.93, WebSocket 0.97.
        transports={"tts": ("http", "stream", "websocket"), "stt": ("http",)},
        retired_models={
            "lightning": "lightning_v3.1",
            "lightning-v2": "lightning_v3.1",
            "lightning-large": "lightning_v3.1",
        },
        max_audio_bytes=250 * 1024 * 1024,  # Pulse takes 250 MB a request (providers.md §7)
    ),
    # --- deepgram (issue 11) ---
    "deepgram": ProviderSpec(
        name="deepgram",
        # The TTS model is the Aura family; the voice picks Deepgram's `model` parameter
        # (`aura-2` + `thalia-en` → aura-2-thalia-en; workers/providers/deepgram.py).
        tts_models=("aura-2", "aura"),
        # Pre-recorded models of providers.md §3.2 (`base` is what Deepgram uses when none is
        # named; `whisper` is whisper-medium); nova-3-medical as SLNG's bridge lists it.
        stt_models=(
            *("nova-3", "nova-3-medical", "nova-2", "base"),
            *("whisper", "whisper-tiny", "whisper-base", "whisper-small"),
            *("whisper-medium", "whisper-large"),
        ),
        default_tts_model="aura-2",
        default_stt_model="nova-3",
        default_voice="thalia-en",
        # Sources conflict (providers.md §3.3): text-to-speech.mdx gives Aura-2 1,000 and
        # Aura-1 2,000 characters (422 over), errors.mdx 2,400 (413). UNCONFIRMED which is
        # current: keep the lower figures.
        max_chars=1000,
        max_chars_by_model={"aura-2": 1000, "aura": 2000},
        # Deepgram limits concurrency per project, not requests a minute (§3.2-3.3): 15 REST
        # TTS requests (PAYG/Growth since 2025-09; 5 in older docs) and 100 pre-recorded STT
        # requests in flight, counted as `deepgram-stt`. Whisper Cloud allows only 5 (15 paid),
        # audio intelligence 5-10: a project using those should lower deepgram-stt with
        # SPEECHBATCH_PROVIDER_LIMITS (429s adapt otherwise).
        max_concurrency=15,
        max_rps=None,
        kind_limits={"stt": (100, None)},
        # `/v1/speak` always streams its body: HTTP reads it whole (`auto` up to
        # STREAM_ABOVE_CHARS), `stream` hands its PCM to storage as it arrives.
        transports={"tts": ("http", "stream"), "stt": ("http",)},
    ),
    # --- end deepgram ---
    # --- openai (issue 11) ---
    "openai": ProviderSpec(
        name="openai",
        tts_models=("tts-1", "tts-1-hd", "gpt-4o-mini-tts"),
        stt_models=("whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe"),
        default_tts_model="tts-1",
        default_stt_model="whisper-1",
        default_voice="alloy",
        # `input` is maxLength 4096 in OpenAI's spec for every speech model (providers.md §4.2).
        max_chars=4096,
        # UNCONFIRMED: OpenAI limits requests per minute per organisation and model, by usage
        # tier (providers.md §4.4 names no figures) and documents no concurrency cap. 8/s is
        # just under 500 a minute, what its limits page gives the lowest paid tier; 8 in
        # flight covers that rate at about a second a call. 429s slow the throttle further,
        # and SPEECHBATCH_PROVIDER_LIMITS lifts both for a higher tier. Speech and
        # transcription models are counted apart, as OpenAI counts per model.
        max_concurrency=8,
        max_rps=8.0,
        kind_limits={"stt": (8, 8.0)},
        # `auto` is HTTP (a WAV) up to STREAM_ABOVE_CHARS, then `stream`: raw PCM pushed to
        # storage as the chunked body arrives.
        transports={"tts": ("http", "stream"), "stt": ("http",)},
        max_audio_bytes=25 * 1024 * 1024,  # 25 MiB a transcription request (providers.md §4.3)
    ),
    # --- end openai ---
    # --- elevenlabs (issue 11) ---
    "elevenlabs": ProviderSpec(
        name="elevenlabs",
        tts_models=(
            "eleven_multilingual_v2",
            "eleven_flash_v2_5",
            "eleven_turbo_v2_5",
            "eleven_flash_v2",
            "eleven_turbo_v2",
            "eleven_v3",
            "eleven_multilingual_v1",
        ),
        stt_models=("scribe_v1", "scribe_v2"),
        default_tts_model="eleven_multilingual_v2",  # the API's own default (providers.md §5.2)
        default_stt_model="scribe_v1",
        # "George", a premade voice in ElevenLabs' own quickstarts. UNCONFIRMED that every
        # account has it; a job may name any voice id of its account.
        default_voice="JBFqnCBsd6RMkjVDRZzb",
        # Per-request limits of the 2025-08 model page (providers.md §5.2); eleven_v3 is
        # 5,000 in newer third-party notes (UNCONFIRMED), so the documented 3,000 is kept.
        max_chars=10000,
        max_chars_by_model={
            "eleven_multilingual_v2": 10000,
            "eleven_flash_v2_5": 40000,
            "eleven_turbo_v2_5": 40000,
            "eleven_flash_v2": 30000,
            "eleven_turbo_v2": 30000,
            "eleven_v3": 3000,
            "eleven_multilingual_v1": 10000,
        },
        # Concurrency is per plan and model family (providers.md §5.3: Free 2 Multilingual /
        # 4 Turbo-Flash / 10 STT ... Scale 15/30/75); the key's plan is not known here, so the
        # Free plan's Multilingual figure, safe on every plan and model. UNCONFIRMED whether TTS
        # and STT count apart (the table lists them apart); 429s adapt it down, a paid plan
        # raises it with SPEECHBATCH_PROVIDER_LIMITS (e.g. elevenlabs=10,elevenlabs-stt=50).
        max_concurrency=2,
        max_rps=None,  # ElevenLabs documents concurrency, not a request rate
        kind_limits={"stt": (10, None)},
        # `auto` is HTTP up to STREAM_ABOVE_CHARS, then `/stream` (chunked raw PCM).
        transports={"tts": ("http", "stream"), "stt": ("http",)},
    ),
    # --- end elevenlabs ---
    "local": ProviderSpec(
        name="local",
        tts_models=("espeak-ng",),
        stt_models=("pocketsphinx",),
        default_tts_model="espeak-ng",
        default_stt_model="pocketsphinx",
        default_voice="en-us",
        max_chars=5000,
        needs_api_key=False,
        transports={"tts": (), "stt": ()},  # in-process engines: nothing to choose
        # espeak-ng and pocketsphinx run inside the worker and are CPU-bound: 2 at a time keeps
        # a core free for the worker itself. No credential, so throttle it per host.
        max_concurrency=2,
        max_rps=None,
    ),
}


def get_provider_spec(name: str) -> ProviderSpec | None:
    """The spec for `name`, or None when speechbatch does not know that provider."""
    return PROVIDERS.get(name)


def limits_name(provider: str, kind: str) -> str:
    """Whose limits a `kind` call to `provider` counts against: `provider`, or
    `provider-kind` when the catalog gives that kind limits of its own (e.g. `smallest-stt`)."""
    spec = PROVIDERS.get(provider)
    return f"{provider}-{kind}" if spec is not None and kind in spec.kind_limits else provider
