"""Deepgram's Aura voices, and how a speechbatch model and voice name one of them.

Deepgram's `/v1/speak` takes one `model` parameter that is family, voice and language at once
(`aura-2-thalia-en`); speechbatch's job `model` is the family (`aura-2`, or `aura` for Aura-1)
and its `voice` the rest (`thalia-en`), so the catalog can hold a character limit per family
and a voice can be refused, naming the ones there are, before any request is made.
"""

from __future__ import annotations

from jobs.error_codes import ErrorCode
from workers.providers.errors import InvalidInput

# Voices per family, from deepgram-docs fern/docs/tts-models.mdx. The Spanish Aura-2 voices
# are newer than that snapshot: UNCONFIRMED (Deepgram answers 400 for a voice it lacks).
AURA_2_EN = (
    *("amalthea", "andromeda", "apollo", "arcas", "aries", "asteria", "athena", "atlas"),
    *("aurora", "callista", "cora", "cordelia", "delia", "draco", "electra", "harmonia"),
    *("helena", "hera", "hermes", "hyperion", "iris", "janus", "juno", "jupiter", "luna"),
    *("mars", "minerva", "neptune", "odysseus", "ophelia", "orion", "orpheus", "pandora"),
    *("phoebe", "pluto", "saturn", "selene", "thalia", "theia", "vesta", "zeus"),
)
AURA_2_ES = (
    *("alvaro", "aquila", "carina", "celeste", "diana", "estrella", "javier", "nestor"),
    *("selena", "sirio"),
)
AURA_1_EN = (
    *("angus", "arcas", "asteria", "athena", "helios", "hera", "luna", "orion", "orpheus"),
    *("perseus", "stella", "zeus"),
)
AURA_VOICES: dict[str, tuple[str, ...]] = {
    "aura-2": (*(f"{v}-en" for v in AURA_2_EN), *(f"{v}-es" for v in AURA_2_ES)),
    "aura": tuple(f"{v}-en" for v in AURA_1_EN),
}


def aura_model(model: str, voice: str) -> str:
    """Deepgram's `model` query parameter for a job's family and voice (`aura-2`, `thalia-en`
    → `aura-2-thalia-en`); InvalidInput naming the known voices for any other voice."""
    voices = AURA_VOICES.get(model, ())
    name = voice.strip().lower().removeprefix(f"{model}-")
    if name not in voices:
        raise InvalidInput(
            f"Deepgram {model} has no voice {voice!r}; use one of: {', '.join(voices)}.",
            code=ErrorCode.UNKNOWN_VOICE,
        )
    return f"{model}-{name}"
