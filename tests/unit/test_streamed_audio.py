"""Streamed TTS audio: the chunk-by-chunk encoder, the checks a stream gets as it arrives, the
in-order assembly of SLNG's numbered chunks, and Smallest's SSE frames pushed into a sink."""

from __future__ import annotations

import io
import random
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import soundfile as sf

from emulator.audio import render_speech
from jobs.catalog import PROVIDERS, STREAM_ABOVE_CHARS
from tests.unit.test_smallest_provider import BASE, DONE, KEY, PCM, TEXT, audio_frame
from workers.audio import PcmEncoder
from workers.providers.answers import StreamedSpeech
from workers.providers.errors import ProviderUnavailable
from workers.providers.slng_ws import _InOrder
from workers.providers.smallest import SmallestProvider

RATE = 24000


def speech_pcm(seconds: float, rate: int = RATE) -> bytes:
    """Raw 16-bit PCM of the emulator's speech-like tone (words and gaps, not noise)."""
    return render_speech(seconds, "linear16", rate, "none")[0]


def pieces(data: bytes, sizes: tuple[int, ...] = (1, 999, 4097, 10_001)) -> Iterator[bytes]:
    """`data` in uneven pieces, some ending mid-sample."""
    at, n = 0, 0
    while at < len(data):
        step = sizes[n % len(sizes)]
        yield data[at : at + step]
        at, n = at + step, n + 1


class Collected:
    """A sink that keeps what it is given, for adapter tests."""

    def __init__(self) -> None:
        self.rate: int | None = None
        self.chunks: list[bytes] = []

    def start(self, sample_rate: int) -> None:
        self.rate = sample_rate

    def write(self, pcm: bytes) -> None:
        self.chunks.append(pcm)


@pytest.mark.parametrize(
    ("fmt", "asked", "rate"),
    [
        ("wav", None, RATE),
        ("flac", None, RATE),
        ("wav", 16000, 16000),
        ("mp3", 22050, 22050),
        ("opus", None, 24000),
        ("ogg", 44100, 44100),
    ],
)
def test_pcm_pushed_in_pieces_encodes_to_the_format_and_rate_asked(
    fmt: str, asked: int | None, rate: int
) -> None:
    """PCM fed in uneven pieces (some splitting a sample) comes out as a decodable file of
    the requested format, at the requested rate, as long as the input."""
    pcm = speech_pcm(3.0)
    out = io.BytesIO()
    encoder = PcmEncoder(out, fmt=fmt, rate=RATE, sample_rate=asked)
    for piece in pieces(pcm):
        encoder.write(piece)
    seconds = encoder.finish()
    decoded, decoded_rate = sf.read(io.BytesIO(out.getvalue()), dtype="int16")
    assert decoded_rate == rate
    assert seconds == pytest.approx(3.0, abs=0.05)
    assert len(decoded) / decoded_rate == pytest.approx(3.0, abs=0.1)  # mp3/opus pad a little


def test_wav_at_the_input_rate_keeps_the_samples_exactly() -> None:
    """With no resampling, the stored WAV holds the very samples that were streamed."""
    pcm = speech_pcm(1.0)
    out = io.BytesIO()
    encoder = PcmEncoder(out, fmt="wav", rate=RATE)
    for piece in pieces(pcm):
        encoder.write(piece)
    encoder.finish()
    decoded, _ = sf.read(io.BytesIO(out.getvalue()), dtype="int16")
    assert decoded.tobytes() == pcm


def test_a_stream_longer_than_its_text_could_take_is_refused_as_it_arrives() -> None:
    """Audio past the text's longest plausible reading fails at the chunk that crosses it,
    not after the whole (possibly endless) stream: this is what bounds a streamed answer."""
    check = StreamedSpeech(text="Hi.", rate=RATE, provider="Vendor")  # at most 11.5 s
    check.feed(speech_pcm(10.0))
    with pytest.raises(ProviderUnavailable) as caught:
        check.feed(speech_pcm(2.0))
    assert caught.value.code == "bad_provider_output"
    assert "3 characters" in caught.value.message


def test_white_noise_is_refused_once_its_first_window_is_in() -> None:
    """Random bytes are judged noise from the stream's first third of a second."""
    check = StreamedSpeech(text=TEXT, rate=RATE, provider="Vendor")

    def feed_noise() -> None:
        for piece in pieces(random.Random(3).randbytes(RATE * 2)):
            check.feed(piece)

    with pytest.raises(ProviderUnavailable, match="white noise"):
        feed_noise()


def test_speech_passes_and_an_empty_or_too_short_stream_does_not() -> None:
    """A plausible stream passes with its length; none at all is empty_response; a blip for
    a long text is bad_provider_output."""
    check = StreamedSpeech(text=TEXT, rate=RATE, provider="Vendor")
    for piece in pieces(speech_pcm(1.5)):
        check.feed(piece)
    assert check.finish() == pytest.approx(1.5, abs=0.01)
    with pytest.raises(ProviderUnavailable) as empty:
        StreamedSpeech(text=TEXT, rate=RATE, provider="Vendor").finish()
    assert empty.value.code == "empty_response"
    short = StreamedSpeech(text="word " * 200, rate=RATE, provider="Vendor")
    short.feed(speech_pcm(0.5))
    with pytest.raises(ProviderUnavailable) as blip:
        short.finish()
    assert blip.value.code == "bad_provider_output"


def test_numbered_chunks_are_handed_on_in_order_as_gaps_fill() -> None:
    """SLNG's audio_chunks go out in sequence order the moment the run is contiguous."""
    taken: list[bytes] = []
    order = _InOrder(taken.append)
    order.numbered(1, b"a")
    order.numbered(3, b"c")
    assert taken == [b"a"]  # 3 waits for 2
    order.numbered(2, b"b")
    assert taken == [b"a", b"b", b"c"]
    order.end()


@pytest.mark.parametrize(
    "steps",
    [
        [("n", 1), ("n", 3)],  # a gap left at the end
        [("n", 1), ("n", 1)],  # a repeat
        [("n", 1), ("f", 0)],  # both framings
    ],
)
def test_gaps_repeats_and_mixed_framings_are_truncated_answers(
    steps: list[tuple[str, int]],
) -> None:
    """Whatever would make the stored audio wrong is bad_provider_output, never audio."""
    order = _InOrder(lambda _chunk: None)

    def replay() -> None:
        for kind, sequence in steps:
            if kind == "n":
                order.numbered(sequence, b"x")
            else:
                order.frame(b"x")
        order.end()

    with pytest.raises(ProviderUnavailable) as caught:
        replay()
    assert caught.value.code == "bad_provider_output"


def sse_provider(body: Iterator[bytes]) -> SmallestProvider:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})

    return SmallestProvider(
        httpx.Client(transport=httpx.MockTransport(handler)), base_url=BASE, api_key=KEY
    )


def test_sse_frames_go_to_the_sink_as_they_arrive() -> None:
    """Over SSE with a sink, each frame's PCM is pushed to it in order at the asked rate,
    and the Synthesis says the audio was streamed (it holds none itself)."""
    halves = [PCM[: len(PCM) // 2], PCM[len(PCM) // 2 :]]
    sink = Collected()
    answer = sse_provider(iter([audio_frame(h) for h in halves] + [DONE])).synthesize(
        TEXT,
        model="lightning_v3.1",
        voice=None,
        options={"transport": "stream", "sample_rate": RATE},
        sink=sink,
    )
    assert answer.streamed and answer.audio == b""
    assert sink.rate == RATE
    assert sink.chunks == halves


def test_a_broken_sse_stream_raises_after_pushing_what_came() -> None:
    """A stream cut before its done frame raises (so the caller aborts what it stored)."""
    sink = Collected()
    with pytest.raises(ProviderUnavailable):
        sse_provider(iter([audio_frame(PCM[:4000])])).synthesize(
            TEXT, model="lightning_v3.1", voice=None, options={"transport": "stream"}, sink=sink
        )
    assert sink.chunks == [PCM[:4000]]


def test_http_ignores_the_sink_and_answers_whole() -> None:
    """The HTTP transport has its audio whole: it returns it and leaves the sink unused."""

    def handler(request: httpx.Request) -> httpx.Response:
        wav = io.BytesIO()
        sf.write(wav, np.frombuffer(PCM, dtype="<i2"), RATE, format="WAV", subtype="PCM_16")
        return httpx.Response(200, content=wav.getvalue(), headers={"content-type": "audio/wav"})

    provider = SmallestProvider(
        httpx.Client(transport=httpx.MockTransport(handler)), base_url=BASE, api_key=KEY
    )
    sink = Collected()
    answer = provider.synthesize(TEXT, model="lightning_v3.1", voice=None, options={}, sink=sink)
    assert not answer.streamed and answer.audio[:4] == b"RIFF"
    assert sink.rate is None and sink.chunks == []


def test_auto_streams_a_long_line_where_the_vendor_can_and_keeps_short_ones_on_http() -> None:
    """`auto` is HTTP up to STREAM_ABOVE_CHARS and the vendor's best streaming transport past
    it; a vendor with none stays on what it has, and an explicit transport is kept."""
    slng, smallest = PROVIDERS["slng"], PROVIDERS["smallest"]
    assert slng.pick_transport("tts", "auto", chars=STREAM_ABOVE_CHARS) == "http"
    assert slng.pick_transport("tts", None, chars=STREAM_ABOVE_CHARS + 1) == "websocket"
    assert smallest.pick_transport("tts", "auto", chars=STREAM_ABOVE_CHARS + 1) == "websocket"
    assert slng.pick_transport("tts", "http", chars=5000) == "http"
    assert PROVIDERS["local"].pick_transport("tts", "auto", chars=5000) is None
