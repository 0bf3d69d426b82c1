"""What the emulator's SLNG TTS routes accept and answer, model family by model family.

Per-model TTS routes mirror their upstream (providers.md §1.3, S1's schemas): Aura (voice in
`model`, zod-style field errors), Deepgram's third-party route (`voice`, raw PCM), Rime
(`speaker`, `audioFormat` as a MIME type; Coda answers a bad speaker with 500), Orpheus
(`prompt`), Inworld (flat audio fields; answers JSON with base64 audio). The bridge (§1.4)
takes only `{text, voice}` and sends audio in an undocumented codec: here WAV, except raw
PCM from Deepgram's own route and MP3 from ElevenLabs, so clients must sniff. A parser
returns a `TtsRequest` or raises `Refused` with the status and body the real route sends.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

AURA_MODELS = frozenset({"slng/deepgram/aura:2-en", "slng/deepgram/aura:2-es"})
DEEPGRAM_AURA = "deepgram/aura:2"
RIME_ARCANA_VARIANTS = ("3-en", "3-hi", "ar", "de", "en", "es", "fr")
RIME_CODA = "slng/rime/coda:0-id"
ORPHEUS = "slng/canopylabs/orpheus:en"
INWORLD = "slng/inworld/max:1.5"
BRIDGE_TTS_VARIANTS = frozenset(
    {
        "cartesia/sonic:3",
        DEEPGRAM_AURA,
        "elevenlabs/eleven-flash:2",
        "elevenlabs/eleven-flash:2.5",
        "elevenlabs/eleven-multilingual:2",
        "elevenlabs/eleven:3",
        "kugelaudio/kugel:1",
        "kugelaudio/kugel:1-turbo",
        "kugelaudio/kugel:2",
        "murf/murftts:falcon",
        "sarvam/bulbul:v3",
        ORPHEUS,
        *AURA_MODELS,
        *(f"slng/rime/arcana:{v}" for v in RIME_ARCANA_VARIANTS),
        RIME_CODA,
        "soniox/tts-rt:v1",
    }
)

_ENCODINGS = ("linear16", "mp3", "opus", "flac", "aac", "mulaw", "alaw")
_SAMPLE_RATES = (8000, 16000, 24000, 32000, 48000)
_CONTAINERS = ("none", "wav", "ogg")
_RIME_FORMATS = {
    "audio/wav": ("linear16", "wav"),
    "audio/pcm": ("linear16", "none"),
    "audio/mp3": ("mp3", "none"),
    "audio/ogg;codecs=opus": ("opus", "ogg"),
    "audio/x-mulaw": ("mulaw", "none"),
}
_RIME_RATES = (8000, 16000, 22050, 24000, 44100, 48000, 96000)
_CODA_SPEAKERS = ("pujianti_plesmita", "siswoko_sigit", "taryadi_dani", "usmany_tatianna")
_ORPHEUS_VOICES = ("tara", "leah", "jess", "leo", "dan", "mia", "zac", "zoe")
_INWORLD_ENCODINGS = {
    "LINEAR16": ("linear16", "wav"),
    "WAV": ("linear16", "wav"),
    "PCM": ("linear16", "none"),
    "MP3": ("mp3", "none"),
    "OGG_OPUS": ("opus", "ogg"),
    "FLAC": ("flac", "none"),
    "MULAW": ("mulaw", "wav"),
    "ALAW": ("alaw", "wav"),
}
_INWORLD_RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)
INWORLD_MAX_CHARS = 2000


class Refused(Exception):
    """The request is refused with `status` and the route's own error `body`."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(body)
        self.status, self.body = status, body


@dataclass(frozen=True)
class TtsRequest:
    text: str
    encoding: str
    sample_rate: int
    container: str
    speed: float = 1.0


@dataclass(frozen=True)
class TtsModel:
    """How one TTS route reads its body, and whether its audio comes as JSON (Inworld)."""

    parse: Callable[[dict[str, Any]], TtsRequest]
    json_answer: bool = False


def _choices(values: tuple[object, ...]) -> str:
    return " | ".join(repr(v) for v in values)


def _aura(family: str) -> Callable[[dict[str, Any]], TtsRequest]:
    """Aura's zod-validated body: "aura" (SLNG-hosted: voice in `model`, required) or
    "deepgram" (third-party: optional `voice`). SLNG's documented defaults (mp3 in a wav
    container) are a combination Deepgram rejects, so a missing encoding means linear16."""

    def parse(body: dict[str, Any]) -> TtsRequest:
        problems: dict[str, list[str]] = {}
        text = body.get("text")
        if not isinstance(text, str) or not text:
            problems["text"] = ["Required" if text in (None, "") else "Expected string"]
        voice_field = "model" if family == "aura" else "voice"
        voice = body.get(voice_field)
        if family == "aura" and not voice:
            problems["model"] = ["Required"]
        elif voice is not None and not isinstance(voice, str):
            problems[voice_field] = ["Expected string"]
        encoding = body.get("encoding") or "linear16"
        if encoding not in _ENCODINGS:
            problems["encoding"] = [f"Invalid enum value. Expected {_choices(_ENCODINGS)}"]
        rate = body.get("sample_rate") or 24000
        if rate not in _SAMPLE_RATES or isinstance(rate, bool):
            problems["sample_rate"] = [f"Invalid enum value. Expected {_choices(_SAMPLE_RATES)}"]
        container = body.get("container") or ("wav" if family == "aura" else "none")
        if container not in _CONTAINERS:
            problems["container"] = [f"Invalid enum value. Expected {_choices(_CONTAINERS)}"]
        if problems:
            first = next(iter(problems))
            verb = "is required" if problems[first] == ["Required"] else "is invalid"
            summary = f"{first.replace('_', ' ').capitalize()} {verb}"
            raise Refused(400, {"error": summary, "fieldErrors": problems})
        return TtsRequest(str(text), str(encoding), int(rate), str(container))

    return parse


def _validation(details: str) -> Refused:
    return Refused(400, {"error": "Validation error", "details": details})


def _required(body: dict[str, Any], *names: str) -> str:
    """The first of `names` holding a non-empty string (later ones are legacy aliases)."""
    for name in names:
        value = body.get(name)
        if isinstance(value, str) and value:
            return value
    raise _validation(f"Missing required field: {names[0]}")


def _speed(body: dict[str, Any], name: str, low: float, high: float) -> float:
    value = body.get(name, 1.0)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise _validation(f"{name} must be a number from {low:g} to {high:g}")
    return float(value)


def _rime(speakers: tuple[str, ...] | None = None) -> Callable[[dict[str, Any]], TtsRequest]:
    def parse(body: dict[str, Any]) -> TtsRequest:
        text, speaker = _required(body, "text"), _required(body, "speaker")
        if speakers is not None and speaker not in speakers:
            # Coda's known bug: an invalid speaker is a 500 (providers.md §1.3).
            details = "Rime TTS API error: 400 Bad Request - Invalid argument: Invalid speaker: "
            raise Refused(500, {"error": "TTS service error", "details": details + speaker})
        codec = _RIME_FORMATS.get(str(body.get("audioFormat") or "audio/wav"))
        rate = body.get("sample_rate") or 24000
        if codec is None or rate not in _RIME_RATES:
            details = "Rime TTS API error: 400 Bad Request - Unsupported audio format"
            raise Refused(400, {"error": "TTS service error", "details": details})
        return TtsRequest(text, codec[0], int(rate), codec[1], _speed(body, "speed", 0.25, 2.0))

    return parse


def _orpheus(body: dict[str, Any]) -> TtsRequest:
    text = _required(body, "prompt", "text")  # `text` is the legacy name
    voice = body.get("voice", "tara")
    if voice not in _ORPHEUS_VOICES:
        raise _validation(f"Invalid voice: {voice}; expected one of {_choices(_ORPHEUS_VOICES)}")
    return TtsRequest(text, "linear16", 24000, "wav", _speed(body, "speed", 0.5, 2.0))


def _inworld(body: dict[str, Any]) -> TtsRequest:
    text = _required(body, "text")
    if len(text) > INWORLD_MAX_CHARS:
        raise _validation(f"text must be at most {INWORLD_MAX_CHARS} characters")
    codec = _INWORLD_ENCODINGS.get(str(body.get("encoding") or "MP3"))
    rate = body.get("sample_rate") or 48000
    if codec is None or rate not in _INWORLD_RATES:
        raise _validation("encoding or sample_rate is not supported")
    speed = _speed(body, "speaking_rate", 0.5, 1.5)
    return TtsRequest(text, codec[0], int(rate), codec[1], speed)


def _bridge_tts(variant: str) -> Callable[[dict[str, Any]], TtsRequest]:
    # The codec is undocumented (§1.4); vary it by upstream so clients have to sniff.
    codec = ("linear16", "none") if variant == DEEPGRAM_AURA else ("linear16", "wav")
    codec = ("mp3", "none") if variant.startswith("elevenlabs/") else codec

    def parse(body: dict[str, Any]) -> TtsRequest:
        extra = sorted(set(body) - {"text", "voice"})
        if extra:
            details = f"Unrecognized key(s) in object: {', '.join(map(repr, extra))}"
            raise Refused(400, {"error": "Invalid request body", "status": 400, "details": details})
        text, voice = body.get("text"), body.get("voice")
        if not isinstance(text, str) or not text or not isinstance(voice, str | None):
            raise Refused(400, {"error": "Text is required", "status": 400})
        return TtsRequest(text, codec[0], 24000, codec[1])

    return parse


TTS_MODELS: dict[str, TtsModel] = {
    **{model: TtsModel(_aura("aura")) for model in AURA_MODELS},
    DEEPGRAM_AURA: TtsModel(_aura("deepgram")),
    **{f"slng/rime/arcana:{v}": TtsModel(_rime()) for v in RIME_ARCANA_VARIANTS},
    RIME_CODA: TtsModel(_rime(_CODA_SPEAKERS)),
    ORPHEUS: TtsModel(_orpheus),
    INWORLD: TtsModel(_inworld, json_answer=True),
}
BRIDGE_TTS_MODELS = {v: TtsModel(_bridge_tts(v)) for v in BRIDGE_TTS_VARIANTS}
