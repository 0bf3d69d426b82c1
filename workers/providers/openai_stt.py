"""OpenAI transcription answers normalised to the one transcript schema (providers.md §4.3).

whisper-1 answers `verbose_json`: `{task, language, duration, text, words: [{word, start,
end}], segments: [{id, seek, start, end, text, tokens, temperature, avg_logprob, ...}]}`.
The gpt-4o models answer only `json`, `{text, usage?}`: their transcript keeps the text
and has no words or segments — none are made up from the text. Neither gives word
confidences or speakers, so those stay None. `language` in verbose_json is a language's
English name ("english", UNCONFIRMED in providers.md), turned into its ISO-639-1 code
when it is a common one; a language the job asked for wins, since OpenAI transcribes in it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from workers.providers import http
from workers.providers.answers import check_transcript
from workers.providers.base import Segment, Transcript, Word
from workers.providers.transcripts import as_float, as_str

# Models that take only `response_format=json` (providers.md §4.3): text, no timings.
UNTIMED_MODELS = frozenset({"gpt-4o-transcribe", "gpt-4o-mini-transcribe"})
# Whisper's names for the languages most asked for; any other name is kept as given.
_LANGUAGE_NAMES = {
    "english": "en",
    "spanish": "es",
    "french": "fr",
    "german": "de",
    "italian": "it",
    "portuguese": "pt",
    "dutch": "nl",
    "polish": "pl",
    "russian": "ru",
    "ukrainian": "uk",
    "turkish": "tr",
    "arabic": "ar",
    "hindi": "hi",
    "japanese": "ja",
    "korean": "ko",
    "chinese": "zh",
    "swedish": "sv",
    "danish": "da",
    "norwegian": "no",
    "finnish": "fi",
}


def parse_transcription(
    body: Mapping[str, Any],
    model: str,
    options: Mapping[str, Any],
    *,
    audio_s: float | None,
    request_id: str | None,
) -> Transcript | None:
    """A checked `Transcript` from a json or verbose_json answer, or None for another shape.

    `audio_s` is the recording's length by its header: the duration when the answer gives
    none (json answers), and the bound `check_transcript` holds the times to.
    """
    text = body.get("text")
    if not isinstance(text, str):
        return None
    words = [
        Word(text=str(w.get("word", "")).strip(), start=s, end=e)
        for w in _list(body.get("words"))
        if isinstance(w, Mapping)
        and (s := as_float(w.get("start"))) is not None
        and (e := as_float(w.get("end"))) is not None
    ]
    segments = [
        Segment(start=s, end=e, text=str(seg.get("text", "")).strip())
        for seg in _list(body.get("segments"))
        if isinstance(seg, Mapping)
        and (s := as_float(seg.get("start"))) is not None
        and (e := as_float(seg.get("end"))) is not None
    ] or http.segments_from_words(words)
    duration = as_float(body.get("duration"))
    usage = body.get("usage")
    if duration is None and isinstance(usage, Mapping) and usage.get("type") == "duration":
        duration = as_float(usage.get("seconds"))
    transcript = Transcript(
        text=text.strip(),
        language=_language(body, options),
        duration_s=duration if duration is not None else audio_s,
        provider="openai",
        model=model,
        words=words,
        segments=segments,
        request_id=request_id,
    )
    return check_transcript(transcript, audio_s=audio_s, request_id=request_id)


def _language(body: Mapping[str, Any], options: Mapping[str, Any]) -> str | None:
    if options.get("language"):
        return str(options["language"])
    said = as_str(body.get("language"))
    return _LANGUAGE_NAMES.get(said.lower(), said) if said else None


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []
