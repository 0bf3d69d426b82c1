"""A recording over its provider's size limit, through the real pipeline, database and store:
spooled, re-encoded and split at its pauses, each piece transcribed alone, and one transcript
stored on the recording's own timeline."""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from emulator.audio import render_speech
from jobs import catalog
from jobs.schemas import JobCreate
from jobs.service import submit_job
from jobs.tenants import ensure_tenant
from storage.keys import upload_key
from storage.localfs import LocalObjectStore
from tests.integration.helpers import migrated_ledger, published
from tests.integration.test_pipeline import runtime
from workers.pipeline import Outcome, run_item
from workers.providers.base import AudioInput, Transcript, Word

pytestmark = pytest.mark.integration

LIMIT = 150_000  # bytes a request, shrunk from OpenAI's 25 MiB for the test


class PieceByPiece:
    """An STT double: a word at 0.5 s into every piece it gets; notes each piece's size and
    length."""

    name = "openai"

    def __init__(self) -> None:
        self.pieces: list[tuple[int, float]] = []

    def synthesize(self, text: str, **_: Any) -> Any:
        raise NotImplementedError

    def transcribe(self, audio: AudioInput, *, model: str, options: Mapping[str, Any]) -> Any:
        info = sf.info(io.BytesIO(audio.data))
        self.pieces.append((len(audio.data), info.duration))
        n = len(self.pieces)
        return Transcript(
            text=f"piece{n}",
            language="en",
            duration_s=info.duration,
            provider="openai",
            model=model,
            words=[Word(f"piece{n}", 0.5, 0.9, 0.9)],
        )


def recording() -> bytes:
    """90 s of 44.1 kHz stereo speech-like audio with a 1.5 s pause every 10 s."""
    burst = render_speech(8.5, "linear16", 44100, "none")[0]
    talk = np.frombuffer(burst, dtype="<i2")
    pause = np.zeros(int(1.5 * 44100), dtype="<i2")
    mono = np.concatenate([np.concatenate([talk, pause]) for _ in range(9)])
    buffer = io.BytesIO()
    sf.write(buffer, np.stack([mono, mono], axis=1), 44100, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def test_a_recording_over_the_limit_is_split_at_pauses_and_merged_on_its_timeline(
    database_url: str, local_store: LocalObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 90 s stereo 44.1 kHz upload (15.9 MB) for a provider taking 150 kB a request goes as
    16 kHz mono FLAC pieces each under the limit, cut in pauses (each starts on a 10 s
    boundary), and the stored transcript places every piece's word at its piece's offset."""
    spec = dataclasses.replace(catalog.PROVIDERS["openai"], max_audio_bytes=LIMIT)
    monkeypatch.setitem(catalog.PROVIDERS, "openai", spec)
    api = migrated_ledger(database_url)
    tenant = ensure_tenant(api.db.sessions, "acme").id
    upload_id = "cd" * 16
    local_store.put_bytes(upload_key(tenant, upload_id, "audio.wav"), recording(), "audio/wav")
    body = JobCreate.model_validate(
        {
            "kind": "stt",
            "provider": "openai",
            "items": [{"id": "call", "source": f"upload://{upload_id}/audio.wav"}],
        }
    )
    job = submit_job(api, tenant, body, idempotency_key=None, max_items=10).job
    provider = PieceByPiece()
    rt = runtime(database_url, local_store, provider)
    assert run_item(rt, published(api).ids[0]) == Outcome.SUCCEEDED
    assert len(provider.pieces) > 1
    assert all(size <= LIMIT for size, _ in provider.pieces)
    offsets = np.cumsum([0.0] + [seconds for _, seconds in provider.pieces[:-1]])
    assert all(abs(offset / 10 - round(offset / 10)) < 0.16 for offset in offsets)  # in pauses
    assert sum(seconds for _, seconds in provider.pieces) == pytest.approx(90.0, abs=0.05)
    stored = json.loads(local_store.get_bytes(f"{tenant}/{job.id}/000001-call.json"))
    starts = [word["start"] for word in stored["words"]]
    assert starts == pytest.approx([offset + 0.5 for offset in offsets], abs=0.01)
    assert stored["duration_s"] == pytest.approx(90.0, abs=0.05)
