"""Streamed TTS audio written to the item's output key as it arrives (issue 10).

`StoredSpeech` is the `AudioSink` the pipeline hands a provider call: each PCM chunk a
streaming transport (SSE, WebSocket) pushes is checked (`answers.StreamedSpeech`: never
more audio than the text could take, not white noise), encoded into the requested format
(`audio.PcmEncoder`) and written into an `ObjectWriter` of the store, which uploads in
parts. Memory stays at a few parts whatever the output's length. Nothing is visible at the
key until `commit`; a stream that breaks off, or any check that fails, aborts the writer, so
a truncated output is never stored and the retry starts clean.

Most streamed lines are a few seconds long. Their PCM is kept as it comes, up to
`BUFFERED_PCM_BYTES` (one upload part), and `commit` converts it in one go: opening
libsndfile on a writer and feeding it chunk by chunk through Python callbacks cost a worker
about 3 ms of CPU per line (bench/transports.py), more than the rest of the item. Such a
line's `commit` returns the encoded bytes (`HeldAudio`) for the caller to put once the
provider's permit is released, as a plain HTTP answer is: a PUT inside the permit held the
provider's slot for the PUT's time too. A stream that outgrows the buffer moves to the
encoder and writer, starting with what it holds, and its `commit` completes the upload.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType

from storage.objects import MiB, ObjectStore, ObjectWriter
from workers.audio import PcmEncoder, content_type_of, convert, pcm16_to_wav
from workers.providers.answers import StreamedSpeech

# PCM held before a stream moves to the encoder and writer: one S3 part (8 MiB), about three
# minutes of 24 kHz speech.
BUFFERED_PCM_BYTES = 8 * MiB


@dataclass(frozen=True)
class StoredAudio:
    """What a committed stream left at its key."""

    size: int
    content_type: str
    duration_s: float


@dataclass(frozen=True)
class HeldAudio:
    """A short stream's audio, checked and encoded, not yet stored at its key."""

    data: bytes
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
        self._rate = 0
        self._pcm = bytearray()  # until it outgrows BUFFERED_PCM_BYTES (then the encoder's)
        self._committed = False

    @property
    def writer(self) -> ObjectWriter | None:
        """The open writer (None while the audio fits the buffer), e.g. for a benchmark's
        timings."""
        return self._writer

    def start(self, sample_rate: int) -> None:
        if self._check is not None:
            raise RuntimeError("StoredSpeech.start called twice")
        self._check = StreamedSpeech(text=self._text, rate=sample_rate, provider=self._provider)
        self._rate = sample_rate

    def write(self, pcm: bytes) -> None:
        if self._check is None:
            raise RuntimeError("StoredSpeech.write before start")
        self._check.feed(pcm)
        if self._encoder is not None:
            self._encoder.write(pcm)
            return
        self._pcm += pcm
        if len(self._pcm) > BUFFERED_PCM_BYTES:
            self._writer = self.store.open_writer(self.key, content_type_of(self._fmt))
            self._encoder = PcmEncoder(
                self._writer, fmt=self._fmt, rate=self._rate, sample_rate=self._sample_rate
            )
            held, self._pcm = bytes(self._pcm), bytearray()
            self._encoder.write(held)

    def commit(self, request_id: str | None = None) -> StoredAudio | HeldAudio:
        """After the checks: the encoded audio of a stream that fit the buffer (for the caller
        to put), or a longer stream's finished upload, visible at the key."""
        if self._check is None:
            # Nothing was streamed: the check's own "no audio" error.
            StreamedSpeech(text=self._text, rate=1, provider=self._provider).finish(request_id)
            raise RuntimeError("a stream with no audio passed its check")
        self._check.finish(request_id)
        if self._encoder is None or self._writer is None:
            wav = pcm16_to_wav(bytes(self._pcm), self._rate)
            self._pcm = bytearray()
            encoded = convert(wav, fmt=self._fmt, sample_rate=self._sample_rate)
            self._committed = True  # nothing was written: there is nothing to abort
            return HeldAudio(encoded.data, encoded.content_type, encoded.duration_s)
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
