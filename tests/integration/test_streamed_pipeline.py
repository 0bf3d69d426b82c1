"""Streamed TTS through the real pipeline: audio written to the output key while it arrives,
over a real S3 server (multipart) and a local directory, with a real database.

The provider double pushes PCM into the pipeline's sink as a streaming transport does (the
transports themselves are tested against the emulator); it can break off mid-stream, which
is the failure this path exists to make harmless.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import pytest
import soundfile as sf
from sqlalchemy import select

from emulator.audio import render_speech
from jobs.models import Item
from storage.objects import ObjectStore
from tests.integration.helpers import migrated_ledger, published
from tests.integration.test_pipeline import runtime, submitted
from workers.pipeline import Outcome, run_item
from workers.providers.base import AudioSink, Synthesis
from workers.providers.errors import ProviderUnavailable

pytestmark = pytest.mark.integration

RATE = 24000
# 200 s of speech is 9.6 MB of 24 kHz PCM: more than one 8 MiB part, so S3 goes multipart.
LONG_TEXT = "A long narration for a documentary about rivers and the towns along them. " * 6


class Streaming:
    """Pushes `seconds` of speech-like PCM into the sink in 0.1 s chunks; the first `breaks`
    calls stop half-way with a dropped session. Notes what the key held mid-stream."""

    name = "smallest"

    def __init__(self, store: ObjectStore, seconds: float, breaks: int = 0) -> None:
        self.store, self.seconds, self.breaks = store, seconds, breaks
        self.calls = 0
        self.mid_stream_sizes: list[int | None] = []

    def synthesize(self, text: str, *, sink: AudioSink | None = None, **_: Any) -> Synthesis:
        assert sink is not None, "the pipeline hands every call a sink"
        self.calls += 1
        pcm = render_speech(self.seconds, "linear16", RATE, "none")[0]
        step, half = RATE // 5, len(pcm) // 2
        sink.start(RATE)
        for at in range(0, half, step):
            sink.write(pcm[at : min(at + step, half)])
        self.mid_stream_sizes.append(self.store.size(sink.key))  # type: ignore[attr-defined]
        if self.calls <= self.breaks:
            raise ProviderUnavailable("The session dropped mid-utterance; retrying.")
        for at in range(half, len(pcm), step):
            sink.write(pcm[at : at + step])
        return Synthesis(b"", "audio/L16", request_id=f"r{self.calls}", streamed=True)

    def transcribe(self, audio: Any, *, model: str, options: Mapping[str, Any]) -> Any:
        raise NotImplementedError


def stored_item(database_url: str, item_id: int) -> Item:
    with migrated_ledger(database_url).db.sessions() as session:
        return session.scalars(select(Item).where(Item.id == item_id)).one()


@pytest.fixture(params=["s3", "local"])
def store(request: pytest.FixtureRequest) -> ObjectStore:
    """A real S3 server (SeaweedFS, multipart) or a local directory."""
    fixture = "s3_store" if request.param == "s3" else "local_store"
    found: ObjectStore = request.getfixturevalue(fixture)
    return found


def test_a_long_stream_is_stored_while_it_arrives_and_only_visible_once_complete(
    database_url: str, store: ObjectStore
) -> None:
    """A 200 s streamed answer lands at the item's key as one decodable WAV of 200 s; half-way
    through the stream nothing was visible at the key yet."""
    api, _ = submitted(database_url, [LONG_TEXT])
    provider = Streaming(store, seconds=200.0)
    rt = runtime(database_url, store, provider)
    (item_id,) = published(api).ids
    assert run_item(rt, item_id) == Outcome.SUCCEEDED
    assert provider.mid_stream_sizes == [None]
    item = stored_item(database_url, item_id)
    data = store.get_bytes(item.output_key)
    frames, rate = sf.read(io.BytesIO(data), dtype="int16")
    assert rate == RATE and len(frames) == 200 * RATE
    assert item.output_bytes == len(data)
    assert item.duration_s == pytest.approx(200.0)


def test_a_stream_that_breaks_off_leaves_nothing_and_the_retry_stores_it_whole(
    database_url: str, store: ObjectStore
) -> None:
    """Two streams cut half-way leave no object at the key (not even a partial one); the third
    attempt's complete stream is what gets stored."""
    api, _ = submitted(database_url, ["Hello there, this is a short streamed line."])
    provider = Streaming(store, seconds=3.0, breaks=2)
    rt = runtime(database_url, store, provider, call_attempts=3, call_base_s=0.0)
    (item_id,) = published(api).ids
    assert run_item(rt, item_id) == Outcome.SUCCEEDED
    assert provider.calls == 3
    assert provider.mid_stream_sizes == [None, None, None]
    item = stored_item(database_url, item_id)
    frames, _ = sf.read(io.BytesIO(store.get_bytes(item.output_key)), dtype="int16")
    assert len(frames) == 3 * RATE


def test_a_stream_that_always_breaks_stores_nothing(database_url: str, store: ObjectStore) -> None:
    """When every attempt breaks off, the item is retried later and its key stays empty."""
    api, job = submitted(database_url, ["Hello there, this is a short streamed line."])
    provider = Streaming(store, seconds=3.0, breaks=99)
    rt = runtime(database_url, store, provider, call_attempts=2, call_base_s=0.0)
    (item_id,) = published(api).ids
    assert run_item(rt, item_id) == Outcome.RETRYING
    assert list(store.list_keys(f"{job.tenant_id}/{job.id}/")) == []


def test_a_stream_is_converted_on_the_fly_to_the_format_asked(
    database_url: str, store: ObjectStore
) -> None:
    """options.format mp3 at 16 kHz: the 24 kHz PCM stream is stored as a 16 kHz MP3."""
    api, _ = submitted(
        database_url,
        ["Hello there, this is a short streamed line."],
        options={"format": "mp3", "sample_rate": 16000},
    )
    rt = runtime(database_url, store, Streaming(store, seconds=3.0))
    (item_id,) = published(api).ids
    assert run_item(rt, item_id) == Outcome.SUCCEEDED
    item = stored_item(database_url, item_id)
    assert item.output_key.endswith(".mp3")
    info = sf.info(io.BytesIO(store.get_bytes(item.output_key)))
    assert info.samplerate == 16000
    assert info.duration == pytest.approx(3.0, abs=0.1)
