"""Which SLNG route a model is called on, with what body, and where its answer holds the result.

SLNG's per-model routes (family A, providers.md §1.3, §1.5) mirror each upstream's own API,
so bodies differ by model family: Aura names its voice `model`, Rime `speaker`, Orpheus
calls the text `prompt`, and Inworld answers JSON with base64 audio instead of raw bytes.
The bridge routes (family B, §1.4, §1.6) take one shape for every model; speechbatch names
them `unmute/<model_variant>` (e.g. `unmute/slng/deepgram/aura:2-en`), so one model id picks
exactly one route. The tables below map a model id's prefix to its family; which ids exist is
the catalog's business (`jobs/catalog.py`), and a unit test keeps the two in step.
"""

from __future__ import annotations

from binascii import Error as Base64Error
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from pybase64 import b64decode  # SIMD: a 24 kB frame in 3 µs, not 117 µs

from jobs.error_codes import ErrorCode
from jobs.media import sniff_audio
from workers.audio_decode import AudioInfo
from workers.providers import http
from workers.providers.answers import bad_output, check_content_type
from workers.providers.base import Transcript
from workers.providers.errors import InvalidInput
from workers.providers.transcripts import (
    json_object,
    parse_bridge,
    parse_deepgram,
    parse_whisper,
)

BRIDGE_PREFIX = "unmute/"
AURA_RATES = (8000, 16000, 24000, 32000, 48000)
RIME_RATES = (8000, 16000, 22050, 24000, 44100, 48000, 96000)
INWORLD_RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)
BRIDGE_STT_RATES = (8000, 16000, 22050, 24000, 32000, 48000)
DEFAULT_TTS_SAMPLE_RATE = 24000
# A raw PCM answer from a route whose body cannot ask for a rate (Orpheus, the bridge) is
# taken to be 24 kHz, Aura's and Orpheus' native rate (UNCONFIRMED for the bridge, §1.4).
ASSUMED_PCM_RATE = 24000
INWORLD_SPEEDS = (0.5, 1.5)
# Each family-A model's own default voice (S1's schema defaults); a bridge route uses the one
# of the model it bridges to, or sends none and lets SLNG choose.
DEFAULT_VOICES = {
    "slng/deepgram/aura:2-en": "aura-2-thalia-en",
    "slng/deepgram/aura:2-es": "aura-2-celeste-es",
    "deepgram/aura:2": "aura-2-thalia-en",
    "slng/rime/arcana:3-en": "astra",
    "slng/rime/arcana:3-hi": "astra",
    "slng/rime/arcana:ar": "sakina",
    "slng/rime/arcana:de": "sigurd",
    "slng/rime/arcana:en": "astra",
    "slng/rime/arcana:es": "seraphina",
    "slng/rime/arcana:fr": "livet_aurelie",
    "slng/rime/coda:0-id": "pujianti_plesmita",
    "slng/canopylabs/orpheus:en": "tara",
    "slng/inworld/max:1.5": "Ashley",
}


@dataclass(frozen=True)
class TtsCall:
    """What one TTS request asks for, before a family turns it into a body."""

    text: str
    voice: str | None
    sample_rate: int
    speed: float | None  # None: the model's normal pace


def _aura(call: TtsCall) -> dict[str, Any]:
    # Aura calls its voices "model"; encoding and container are sent explicitly because the
    # documented defaults (mp3 in wav) contradict each other.
    return {
        "text": call.text,
        "model": call.voice,
        "encoding": "linear16",
        "container": "wav",
        "sample_rate": call.sample_rate,
    }


def _deepgram(call: TtsCall) -> dict[str, Any]:
    # The third-party route takes Deepgram's own body and answers raw PCM (§1.3).
    return {
        "text": call.text,
        "voice": call.voice,
        "encoding": "linear16",
        "sample_rate": call.sample_rate,
    }


def _rime(model_id: str) -> Callable[[TtsCall], dict[str, Any]]:
    def body(call: TtsCall) -> dict[str, Any]:
        sent = {
            "text": call.text,
            "speaker": call.voice,
            "modelId": model_id,
            "audioFormat": "audio/wav",
            "sample_rate": call.sample_rate,
        }
        return sent | ({"speed": call.speed} if call.speed is not None else {})

    return body


def _orpheus(call: TtsCall) -> dict[str, Any]:
    sent = {"voice": call.voice, "prompt": call.text}
    return sent | ({"speed": call.speed} if call.speed is not None else {})


def _inworld(call: TtsCall) -> dict[str, Any]:
    sent = {
        "text": call.text,
        "voice": call.voice,
        "modelId": "inworld-tts-1.5-max",
        "encoding": "WAV",
        "sample_rate": call.sample_rate,
    }
    if call.speed is None:
        return sent
    low, high = INWORLD_SPEEDS
    if not low <= call.speed <= high:
        raise InvalidInput(
            f"Inworld speaks at {low:g}-{high:g}x only, not {call.speed:g}x; "
            "change options.speed and resubmit.",
            code=ErrorCode.INVALID_OPTION,
        )
    return sent | {"speaking_rate": call.speed}


def _bridge(call: TtsCall) -> dict[str, Any]:
    # Only these two fields: the bridge's HTTP body has no config (§1.4).
    return {"text": call.text} | ({"voice": call.voice} if call.voice else {})


def raw_audio(response: httpx.Response, request_id: str | None) -> bytes | None:
    """The body itself (every TTS route but Inworld's); None when it is a JSON object."""
    if json_object(response.content) is not None:
        return None
    check_content_type(
        response.headers.get("content-type", ""), response.content, "SLNG", request_id
    )
    return response.content


def inworld_audio(response: httpx.Response, request_id: str | None) -> bytes | None:
    """The base64 `audioContent` of Inworld's JSON answer; None when there is none."""
    payload = json_object(response.content)
    encoded = payload.get("audioContent") if payload is not None else None
    if not isinstance(encoded, str) or not encoded:
        return None
    try:
        return b64decode(encoded, validate=True)
    except (Base64Error, ValueError):
        raise bad_output("SLNG", "an audioContent that is not base64", request_id) from None


@dataclass(frozen=True)
class TtsFamily:
    """How a family of TTS models is asked, and where its 200 keeps the audio."""

    body: Callable[[TtsCall], dict[str, Any]]
    audio: Callable[[httpx.Response, str | None], bytes | None] = raw_audio
    rates: tuple[int, ...] = ()  # rates the body may ask for; () = none (ASSUMED_PCM_RATE)
    accept: str = "audio/*"


@dataclass(frozen=True)
class SttFamily:
    """How a family of STT models is sent a recording, and the answer shape it gives."""

    form: Callable[[Mapping[str, Any], bytes, AudioInfo | None], dict[str, str]]
    parse: Callable[[Mapping[str, Any], str, Mapping[str, Any]], Transcript | None]


def _language_form(
    options: Mapping[str, Any], audio: bytes, info: AudioInfo | None
) -> dict[str, str]:
    return {"language": str(options["language"])} if options.get("language") else {}


# What the bridge's `encoding` field calls a container we recognise (§1.6 lists three).
_BRIDGE_ENCODINGS = {"audio/wav": "linear16", "audio/mpeg": "mp3"}


def _bridge_form(
    options: Mapping[str, Any], audio: bytes, info: AudioInfo | None
) -> dict[str, str]:
    # A batch wants finals only; the rate and codec are said when we know them, since the
    # bridge replays the file through a streaming model that needs both (§1.6).
    form = _language_form(options, audio, info) | {"enable_partials": "false"}
    encoding = _BRIDGE_ENCODINGS.get(sniff_audio(audio[:16]) or "")
    if encoding:
        form["encoding"] = encoding
    if info is not None and info.sample_rate in BRIDGE_STT_RATES:
        form["sample_rate"] = str(info.sample_rate)
    return form


# Model-id prefix -> family, most specific first.
TTS_FAMILIES: tuple[tuple[str, TtsFamily], ...] = (
    (BRIDGE_PREFIX, TtsFamily(_bridge)),
    ("slng/deepgram/aura:", TtsFamily(_aura, rates=AURA_RATES)),
    ("deepgram/aura:", TtsFamily(_deepgram, rates=AURA_RATES)),
    ("slng/rime/arcana:3-", TtsFamily(_rime("arcana-3"), rates=RIME_RATES)),
    ("slng/rime/arcana:", TtsFamily(_rime("arcana"), rates=RIME_RATES)),
    ("slng/rime/coda:", TtsFamily(_rime("coda"), rates=RIME_RATES)),
    ("slng/canopylabs/orpheus:", TtsFamily(_orpheus)),
    (
        "slng/inworld/max:",
        TtsFamily(_inworld, audio=inworld_audio, rates=INWORLD_RATES, accept="application/json"),
    ),
)
STT_FAMILIES: tuple[tuple[str, SttFamily], ...] = (
    (BRIDGE_PREFIX, SttFamily(_bridge_form, parse_bridge)),
    ("slng/deepgram/nova:", SttFamily(_language_form, parse_deepgram)),
    ("slng/openai/whisper:", SttFamily(_language_form, parse_whisper)),
)
# SLNG's answer shapes are partly UNCONFIRMED (§1.5): a family's own parser is tried first,
# then the others, so a route answering in another documented shape still parses.
ANSWER_PARSERS = (parse_deepgram, parse_whisper, parse_bridge)


@dataclass(frozen=True)
class TtsRoute:
    """One TTS model resolved: its path, its family and its own default voice."""

    path: str
    family: TtsFamily
    default_voice: str | None


@dataclass(frozen=True)
class SttRoute:
    path: str
    family: SttFamily


def tts_route(model: str, known: tuple[str, ...]) -> TtsRoute:
    """The route for a catalog TTS model; InvalidInput(unknown_model) naming `known` else."""
    family, variant, path = _resolve(model, known, TTS_FAMILIES, "tts")
    return TtsRoute(path, family, DEFAULT_VOICES.get(variant))


def stt_route(model: str, known: tuple[str, ...]) -> SttRoute:
    """The route for a catalog STT model; InvalidInput(unknown_model) naming `known` else."""
    family, _variant, path = _resolve(model, known, STT_FAMILIES, "stt")
    return SttRoute(path, family)


Family = TypeVar("Family", TtsFamily, SttFamily)


def _resolve(
    model: str, known: tuple[str, ...], families: tuple[tuple[str, Family], ...], kind: str
) -> tuple[Family, str, str]:
    """(family, the model as SLNG names it, the path) for `model`."""
    found = next((f for prefix, f in families if model.startswith(prefix)), None)
    if model not in known or found is None:
        raise http.unknown_model("SLNG", model, known)
    # Paths keep the model's "/" and ":" as they are: httpx leaves both unescaped.
    if model.startswith(BRIDGE_PREFIX):
        variant = model.removeprefix(BRIDGE_PREFIX)
        return found, variant, f"/v1/bridges/unmute/{kind}/{variant}"
    return found, model, f"/v1/{kind}/{model}"


def pick_voice(route: TtsRoute, voice: str | None, catalog_default: str | None) -> str | None:
    """The voice to send: the job's, unless it named none or the provider-wide default.

    The API fills in the catalog's one default voice (an Aura voice) when a job names none,
    so that voice on another model means "none chosen": the model's own default is sent.
    """
    if voice and voice != catalog_default:
        return voice
    return route.default_voice


def tts_sample_rate(options: Mapping[str, Any], rates: tuple[int, ...] = AURA_RATES) -> int:
    """options.sample_rate moved up to the next of `rates` (24 kHz when absent)."""
    raw = options.get("sample_rate")
    if raw is None:
        return DEFAULT_TTS_SAMPLE_RATE
    try:
        wanted = int(raw)
    except (TypeError, ValueError):
        raise InvalidInput(
            f"sample_rate must be a whole number of Hz, got {raw!r}.", code=ErrorCode.INVALID_OPTION
        ) from None
    return next((r for r in rates if r >= wanted), rates[-1])


def tts_call(
    text: str, voice: str | None, options: Mapping[str, Any], family: TtsFamily
) -> TtsCall:
    """The request for `family`: the rate it can ask for (or the assumed one) and the speed."""
    rate = tts_sample_rate(options, family.rates) if family.rates else ASSUMED_PCM_RATE
    speed = options.get("speed")
    pace = float(speed) if isinstance(speed, int | float) and float(speed) != 1.0 else None
    return TtsCall(text, voice, rate, pace)
