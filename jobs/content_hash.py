"""The content hash of a TTS line: what its audio is made of, so identical lines share one.

Two items whose hashes are equal would get the same audio from the same call: the same
tenant (outputs are never shared across tenants, so the tenant is hashed in and a lookup by
hash alone stays inside it), provider, model, voice, the options that change the audio
(format, sample rate, language, speed) and the exact text. `transport` and the transcript
options are left out: they change how the audio travels, not what it is. The submit stores
the hash of the job's own route; a worker that speaks the line on a fallback records that
route's hash instead (`workers.reuse`), so a hash always names the audio actually stored.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

# The job options that change the bytes a provider returns for a line.
AUDIO_OPTIONS = ("format", "sample_rate", "language", "speed")
VERSION = 1  # bump when what is hashed changes: old hashes then simply stop matching


def tts_content_hash(
    *,
    tenant_id: str,
    provider: str,
    model: str,
    voice: str | None,
    options: Mapping[str, Any],
    text: str,
) -> str:
    """SHA-256 (hex) of the canonical JSON of everything that decides the line's audio."""
    canonical = json.dumps(
        {
            "v": VERSION,
            "tenant": tenant_id,
            "provider": provider,
            "model": model,
            "voice": voice,
            "options": {name: options.get(name) for name in AUDIO_OPTIONS},
            "text": text,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()
