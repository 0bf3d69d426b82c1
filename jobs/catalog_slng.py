"""SLNG's model identifiers, the longest lists of the provider catalog (`jobs.catalog`).

SLNG models are the route after `/v1/tts/` or `/v1/stt/` (design §6): its per-model routes,
its bridge ("Unmute") routes under `unmute/`, and its batch API, with the upload limit that
decides which a recording takes. `workers.providers.slng_models` maps each id to its route.
"""

from __future__ import annotations

SLNG_DEEPGRAM_STT_VARIANTS = ("en", "es", "hi", "kn", "mr", "multi", "ta", "te")
SLNG_RIME_ARCANA_VARIANTS = ("3-en", "3-hi", "ar", "de", "en", "es", "fr")
# SLNG's per-model TTS routes with a documented body (providers.md §1.3).
SLNG_TTS_MODELS = (
    "slng/deepgram/aura:2-en",
    "slng/deepgram/aura:2-es",
    "deepgram/aura:2",
    *(f"slng/rime/arcana:{v}" for v in SLNG_RIME_ARCANA_VARIANTS),
    "slng/rime/coda:0-id",
    "slng/canopylabs/orpheus:en",
    "slng/inworld/max:1.5",
)
# SLNG's batch API (api.batch.slng.ai, providers.md §1.7): submitted, then polled.
SLNG_BATCH_STT_MODEL = "slng/speechmatics/batch:15.0.0"
# The synchronous STT routes' documented upload limit (Whisper 25 MB, providers.md §1.10);
# a larger recording goes to the batch API (SPEECHBATCH_SLNG_BATCH_OVER_BYTES).
SLNG_SYNC_STT_MAX_BYTES = 25 * 1024 * 1024
SLNG_STT_MODELS = (
    *(f"slng/deepgram/nova:3-{v}" for v in SLNG_DEEPGRAM_STT_VARIANTS),
    "slng/openai/whisper:large-v3",
)
# The bridge ("Unmute") routes take one body for every model; speechbatch names them
# `unmute/<model_variant>` so that an id picks one route (providers.md §1.2, §1.4, §1.6).
SLNG_BRIDGE_TTS_VARIANTS = (
    "cartesia/sonic:3",
    "deepgram/aura:2",
    "elevenlabs/eleven-flash:2",
    "elevenlabs/eleven-flash:2.5",
    "elevenlabs/eleven-multilingual:2",
    "elevenlabs/eleven:3",
    "kugelaudio/kugel:1",
    "kugelaudio/kugel:1-turbo",
    "kugelaudio/kugel:2",
    "murf/murftts:falcon",
    "sarvam/bulbul:v3",
    "slng/canopylabs/orpheus:en",
    "slng/deepgram/aura:2-en",
    "slng/deepgram/aura:2-es",
    *(f"slng/rime/arcana:{v}" for v in SLNG_RIME_ARCANA_VARIANTS),
    "slng/rime/coda:0-id",
    "soniox/tts-rt:v1",
)
SLNG_BRIDGE_STT_VARIANTS = (
    "deepgram/nova:2",
    "deepgram/nova:3",
    "deepgram/nova:3-medical",
    "reson8/reson8stt:v1",
    *(f"slng/deepgram/nova:3-{v}" for v in SLNG_DEEPGRAM_STT_VARIANTS),
    "slng/openai/whisper:large-v3",
    "soniox/speech-ai:rt-v4",
    "sarvam/saaras:v3",
)
