"""Streamed TTS audio written to the item's output key as it arrives (issue 10).

`StoredSpeech` is the `AudioSink` the pipeline hands a provider call: each PCM chunk a
streaming transport (SSE, WebSocket) pushes is checked (`answers.StreamedSpeech`: never
more audio than the text could take, not white noise), encoded into the requested format
(`audio.PcmEncoder`) and written into an `ObjectWriter` of the store, which uploads in
parts. Memory stays at a few parts whatever the output's length. Nothing is visible at the
key until `commit`; a stream that breaks off, or any check that fails, aborts the writer, so
a truncated output is never stored and the retry starts clean.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType

from storage.objects import ObjectStore, ObjectWriter
from workers.audio import PcmEncoder, content_type_of
from workers.providers.answers import StreamedSpeech


@dataclass(frozen=True)
class StoredAudio:
    """What a committed stream left at its key."""

    size: int
    content_type: str
    duration_s: float


class StoredSpeech:
    """An AudioSink encoding one call's streamed PCM straight into `key` of `store`."""

    def __init__(
        self,
        store: ObjectStore,
        key: str,
        *,
        fmt: str,
        sample_rate: int | None,
        text: str,
        provider: str,
    ) -> None:
        self.store, self.key = store, key
        self._fmt, self._sample_rate, self._text, self._provider = fmt, sample_rate, text, provider
        self._writer: ObjectWriter | None = None
        self._encoder: PcmEncoder | None = None
        self._check: StreamedSpeech | None = None
        self._committed = False

    @property
    def writer(self) -> ObjectWriter | None:
        """The open writer (None before the first audio), e.g. for a benchmark's timings."""
        return self._writer

    def start(self, sample_rate: int) -> None:
        if self._writer is not None:
            raise RuntimeError("StoredSpeech.start called twice")
        self._check = StreamedSpeech(text=self._text, rate=sample_rate, provider=self._provider)
        self._writer = self.store.open_writer(self.key, content_type_of(self._fmt))
        self._encoder = PcmEncoder(
            self._writer, fmt=self._fmt, rate=sample_rate, sample_rate=self._sample_rate
        )

    def write(self, pcm: bytes) -> None:
        if self._check is None or self._encoder is None:
            raise RuntimeError("StoredSpeech.write before start")
        self._check.feed(pcm)
        self._encoder.write(pcm)

    def commit(self, request_id: str | None = None) -> StoredAudio:
        """Finish the encoding and make the object visible at the key (after the checks)."""
        if self._check is None or self._encoder is None or self._writer is None:
            # Nothing was streamed: the check's own "no audio" error.
            StreamedSpeech(text=self._text, rate=1, provider=self._provider).finish(request_id)
            raise RuntimeError("a stream with no audio passed its check")
        self._check.finish(request_id)
        duration = self._encoder.finish()
        size = self._writer.commit()
        self._committed = True
        return StoredAudio(size, self._encoder.content_type, duration)

    def abort(self) -> None:
        """Throw away whatever was written; nothing new is left at the key."""
        if self._encoder is not None:
            self._encoder.close()
        if self._writer is not None:
            self._writer.abort()

    def __enter__(self) -> StoredSpeech:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if not self._committed:
            self.abort()
