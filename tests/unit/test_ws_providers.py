"""The SLNG and Smallest adapters over `transport: websocket`, against the emulator served in
a thread and against a scripted in-process WebSocket server: audio and transcripts, pooled
sessions, each error code's mapping, drops, deadlines, size caps and reconnect backoff."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import soundfile as sf
from websockets.sync.server import Server, ServerConnection, serve

from emulator.config import EmulatorConfig
from emulator.dials import Dials
from jobs.error_codes import ErrorCode
from tests.unit.ws_emulator import serving
from workers.providers import slng_ws
from workers.providers.base import AudioInput
from workers.providers.errors import (
    AuthenticationFailed,
    InvalidInput,
    PermanentProviderError,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
)
from workers.providers.exchange import Bounds
from workers.providers.registry import ProviderRegistry
from workers.providers.slng import SlngProvider
from workers.providers.smallest import SmallestProvider
from workers.providers.ws_link import WsLink, ws_url
from workers.providers.ws_pool import ConnectBackoff

KEY = "sk-ws-provider-test-0123"
WS = {"transport": "websocket", "sample_rate": 8000}
AURA = "slng/deepgram/aura:2-en"
RIME = "slng/rime/arcana:en"


@pytest.fixture(scope="module")
def emulator() -> Iterator[tuple[str, Dials]]:
    with serving(EmulatorConfig(api_keys=frozenset({KEY}))) as running:
        yield running


@pytest.fixture
def dials(emulator: tuple[str, Dials]) -> Iterator[Dials]:
    """The shared emulator's dials, reset and with the default config restored afterwards."""
    _base, state = emulator
    config = state.config
    state.reset()
    yield state
    state.config = config


def slng(emulator: tuple[str, Dials], **kw: Any) -> SlngProvider:
    return SlngProvider(httpx.Client(), base_url=f"{emulator[0]}/slng", api_key=KEY, **kw)


def smallest(emulator: tuple[str, Dials], **kw: Any) -> SmallestProvider:
    return SmallestProvider(httpx.Client(), base_url=f"{emulator[0]}/smallest", api_key=KEY, **kw)


def seconds(audio: bytes) -> float:
    return float(sf.info(io.BytesIO(audio)).duration)


def test_ws_urls_derive_from_the_http_base_url() -> None:
    """http becomes ws and https wss, path kept; anything else is a configuration error."""
    assert (
        ws_url("http://127.0.0.1:9100/slng/", "/v1/tts/a:b")
        == "ws://127.0.0.1:9100/slng/v1/tts/a:b"
    )
    assert ws_url("https://api.slng.ai", "/x") == "wss://api.slng.ai/x"
    with pytest.raises(PermanentProviderError) as refused:
        ws_url("ftp://example.com", "/x")
    assert refused.value.code == ErrorCode.INVALID_BASE_URL


@pytest.mark.parametrize("model", [AURA, f"unmute/{AURA}"])
def test_slng_tts_over_websocket_decodes_and_reuses_one_session(
    emulator: tuple[str, Dials], dials: Dials, model: str
) -> None:
    """Five lines over a per-model route (base64 chunks) or a bridge (binary frames) each
    come back as a WAV of the line's length, all on one session."""
    provider = slng(emulator)
    for n in range(5):
        text = f"This is spoken line number {n}."
        out = provider.synthesize(text, model=model, voice=None, options=WS)
        assert out.content_type == "audio/wav"
        assert seconds(out.audio) == pytest.approx(len(text) / 15, abs=0.05)
    assert dials.ws.stats()["opened"] == 1
    provider.close()


def test_rime_closing_with_1000_after_audio_end_is_a_normal_end(
    emulator: tuple[str, Dials], dials: Dials
) -> None:
    """Rime closes each session after its utterance: every line still succeeds, on a new
    session each time."""
    provider = slng(emulator)
    for _ in range(3):
        out = provider.synthesize("A Rime line.", model=RIME, voice=None, options=WS)
        assert seconds(out.audio) > 0.5
    assert dials.ws.stats()["opened"] == 3


@pytest.mark.parametrize(
    ("status", "error", "code"),
    [
        (401, AuthenticationFailed, "auth_error"),
        (400, InvalidInput, "config_error"),
        (429, RateLimited, "rate_limit"),
        (500, ProviderUnavailable, "provider_error"),
        (503, ProviderUnavailable, "backend_connection_failed"),
    ],
)
def test_each_slng_error_code_maps_onto_the_error_tree(
    emulator: tuple[str, Dials], dials: Dials, status: int, error: type[ProviderError], code: str
) -> None:
    """SLNG's error{code} (here injected as [[status:N]]) raises its class of the tree,
    naming the code."""
    with pytest.raises(error, match=code) as raised:
        slng(emulator).synthesize(f"Bad [[status:{status}]]", model=AURA, voice=None, options=WS)
    assert type(raised.value) is error


def test_a_refused_upgrade_is_authentication_failed(emulator: tuple[str, Dials]) -> None:
    """A wrong key refuses the upgrade with 401: AuthenticationFailed naming SLNG_API_KEY."""
    provider = SlngProvider(httpx.Client(), base_url=f"{emulator[0]}/slng", api_key="wrong-key-42")
    with pytest.raises(AuthenticationFailed, match="SLNG_API_KEY"):
        provider.synthesize("Hello.", model=AURA, voice=None, options=WS)


def test_a_dropped_session_is_retryable_and_not_reused(
    emulator: tuple[str, Dials], dials: Dials
) -> None:
    """A session dropped mid-utterance is a retryable ProviderUnavailable (no audio kept);
    the next call opens a new session and succeeds."""
    dials.config = dials.config.with_changes({"ws_drop_every": 2})
    provider = slng(emulator)
    provider.synthesize("First line is fine.", model=AURA, voice=None, options=WS)
    with pytest.raises(ProviderUnavailable, match="dropped"):
        provider.synthesize("Second line is cut off part way.", model=AURA, voice=None, options=WS)
    provider.synthesize("Third line is fine.", model=AURA, voice=None, options=WS)
    assert dials.ws.stats()["opened"] == 2


def test_a_slow_session_times_out_at_the_call_deadline(
    emulator: tuple[str, Dials], dials: Dials
) -> None:
    """An answer slower than the call's deadline is ProviderTimeout at the deadline."""
    dials.config = dials.config.with_changes({"latency_ms": 3000})
    provider = slng(emulator, bounds=Bounds(timeout_s=0.5))
    started = time.monotonic()
    with pytest.raises(ProviderTimeout):
        provider.synthesize("Slow.", model=AURA, voice=None, options=WS)
    assert time.monotonic() - started < 2.0


def test_audio_over_the_size_cap_is_refused(emulator: tuple[str, Dials], dials: Dials) -> None:
    """More audio than SPEECHBATCH_MAX_TTS_RESPONSE_BYTES over a session is refused."""
    provider = slng(emulator, bounds=Bounds(max_tts_bytes=2000))
    with pytest.raises(PermanentProviderError) as refused:
        provider.synthesize("A line with plenty of audio.", model=AURA, voice=None, options=WS)
    assert refused.value.code == ErrorCode.PROVIDER_RESPONSE_TOO_LARGE


def test_slng_stt_streams_pcm_and_assembles_timed_finals(
    emulator: tuple[str, Dials], dials: Dials
) -> None:
    """Three recordings on one pooled STT session each become a transcript whose words and
    segments lie within that recording (the session clock's offset taken off)."""
    provider = slng(emulator)
    for n in range(3):
        text = "Some words for the transcriber " + "again " * n
        wav = provider.synthesize(text, model=AURA, voice=None, options={"sample_rate": 16000})
        clip = AudioInput(wav.audio, "clip.wav", "audio/wav")
        heard = provider.transcribe(clip, model="slng/deepgram/nova:3-en", options=WS)
        length = seconds(wav.audio)
        assert heard.text and heard.words and heard.segments
        assert heard.duration_s == pytest.approx(length, abs=0.01)
        assert heard.words[0].start < 0.2 and heard.segments[-1].end <= length
        assert heard.text == " ".join(s.text for s in heard.segments)
    assert dials.ws.stats()["opened_by_vendor"] == {"slng": 1}


def test_smallest_tts_over_websocket_reuses_one_session(
    emulator: tuple[str, Dials], dials: Dials
) -> None:
    """Lines over Smallest's WebSocket come back as WAVs of their length, on one session."""
    provider = smallest(emulator)
    for n in range(4):
        text = f"Smallest line {n} here."
        out = provider.synthesize(text, model="lightning_v3.1", voice="magnus", options=WS)
        assert seconds(out.audio) == pytest.approx(len(text) / 15, abs=0.05)
    assert dials.ws.stats()["opened_by_vendor"] == {"smallest": 1}


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (401, AuthenticationFailed),
        (400, InvalidInput),
        (429, RateLimited),
        (500, ProviderUnavailable),
    ],
)
def test_smallest_error_codes_map_onto_the_error_tree(
    emulator: tuple[str, Dials], dials: Dials, status: int, error: type[ProviderError]
) -> None:
    """Smallest's {status: error, error: {code}} raises the class its code names."""
    with pytest.raises(error) as raised:
        smallest(emulator).synthesize(
            f"Bad [[status:{status}]]", model="lightning_v3.1", voice="magnus", options=WS
        )
    assert type(raised.value) is error


def test_smallest_extra_connection_refusal_is_rate_limited() -> None:
    """With the key's connections all taken, Smallest's extra-connection error is RateLimited."""
    config = EmulatorConfig(api_keys=frozenset({KEY}), smallest_ws_connections=1)
    with serving(config) as running:
        holder = smallest(running)
        holder.synthesize("Take the one slot.", model="lightning_v3.1", voice="magnus", options=WS)
        with pytest.raises(RateLimited, match="connections"):
            smallest(running).synthesize(
                "Extra.", model="lightning_v3.1", voice="magnus", options=WS
            )
        holder.close()


def test_registry_close_closes_pooled_sessions(emulator: tuple[str, Dials], dials: Dials) -> None:
    """ProviderRegistry.close() ends the sessions its adapters keep open."""
    registry = ProviderRegistry(
        httpx.Client(), base_urls={"slng": f"{emulator[0]}/slng"}, api_keys={"slng": KEY}
    )
    before = dials.ws.stats()["open"]  # sessions other tests' adapters still hold
    registry.get("slng").synthesize("Pooled.", model=AURA, voice=None, options=WS)
    assert dials.ws.stats()["open"] == before + 1
    registry.close()
    deadline = time.monotonic() + 5
    while dials.ws.stats()["open"] > before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert dials.ws.stats()["open"] == before


def test_failed_connects_back_off_1_then_2_s() -> None:
    """Connecting to a port nobody listens on fails retryably; the next connects first wait
    1 s, then 2 s (a fake clock and sleep, so nothing really sleeps)."""
    now, slept = [0.0], []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    backoff = ConnectBackoff(clock=lambda: now[0], sleep=sleep)
    link = WsLink("SLNG", "SLNG_API_KEY", KEY, idle_s=60, backoff=backoff)
    provider = SlngProvider(
        httpx.Client(), base_url="http://127.0.0.1:9/slng", api_key=KEY, ws_link=link
    )
    for _ in range(3):
        with pytest.raises(ProviderUnavailable, match="Could not open"):
            provider.synthesize("Hello.", model=AURA, voice=None, options=WS)
    assert slept == [1.0, 2.0]


# --- a scripted server: answers no real vendor would give -------------------------------------

Script = Callable[[ServerConnection], None]


@pytest.fixture
def scripted() -> Iterator[Callable[[Script], str]]:
    """Start a websockets server in a thread that runs a given script per connection."""
    servers: list[Server] = []

    def start(script: Script) -> str:
        server = serve(script, "127.0.0.1", 0)
        servers.append(server)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{server.socket.getsockname()[1]}"

    yield start
    for server in servers:
        server.shutdown()


def init_then(*messages: str | bytes, close: int | None = None) -> Script:
    def script(ws: ServerConnection) -> None:
        ws.recv()  # init
        ws.send(json.dumps({"type": "ready", "session_id": "s1"}))
        ws.recv()  # text
        for message in messages:
            ws.send(message)
        if close is not None:
            ws.close(close)
        else:
            time.sleep(1)

    return script


def chunk(sequence: int) -> str:
    return json.dumps({"type": "audio_chunk", "data": "AAAA", "sequence": sequence})


@pytest.mark.parametrize(
    ("messages", "close", "error", "said"),
    [
        ((chunk(1), chunk(3), '{"type": "flushed"}'), None, ProviderUnavailable, "gaps"),
        ((chunk(1), b"\x00\x00", '{"type": "flushed"}'), None, ProviderUnavailable, "both"),
        ((chunk(1), chunk(2)), 1000, ProviderUnavailable, "dropped"),
    ],
)
def test_truncated_audio_is_never_success(
    scripted: Callable[[Script], str],
    messages: tuple[str | bytes, ...],
    close: int | None,
    error: type[ProviderError],
    said: str,
) -> None:
    """A gap in the chunk sequence, mixed framings, or a close (even 1000) before flushed is a
    retryable failure, never audio."""
    base = scripted(init_then(*messages, close=close))
    with pytest.raises(error, match=said):
        slng_provider(base).synthesize("Hello there.", model=AURA, voice=None, options=WS)


def slng_provider(base: str) -> SlngProvider:
    return SlngProvider(httpx.Client(), base_url=base, api_key=KEY, bounds=Bounds(timeout_s=3))


def test_ws_error_maps_unknown_codes_to_unavailable() -> None:
    """An error code SLNG has not documented is retryable, and the key never shows."""
    error = slng_ws.ws_error({"code": "mystery", "message": f"bad key {KEY}"}, KEY)
    assert type(error) is ProviderUnavailable and KEY not in error.message


def test_slng_session_cap_refusal_is_rate_limited() -> None:
    """Over SLNG's sessions per key, the refusal (error rate_limit, close 1013) reaches the
    caller as RateLimited, not as a dropped session."""
    with serving(EmulatorConfig(api_keys=frozenset({KEY}), slng_ws_sessions=1)) as running:
        holder = slng(running)
        holder.synthesize("Take the one session.", model=AURA, voice=None, options=WS)
        with pytest.raises(RateLimited, match="rate_limit"):
            slng(running).synthesize("Extra.", model=AURA, voice=None, options=WS)
        holder.close()


def test_a_late_audio_end_of_the_previous_line_does_not_end_the_next_one() -> None:
    """On a reused session, an `audio_end` left over from the previous utterance (it follows
    `flushed`) arriving before the next line's audio is skipped, not taken as an empty answer."""

    class Replay:
        """A session that answers from a script."""

        def __init__(self, messages: list[str | bytes]) -> None:
            self.messages = messages

        def recv(self) -> str | bytes:
            return self.messages.pop(0)

        def recv_ready(self) -> str | bytes | None:
            return None

    chunk = base64.b64encode(b"\x01\x00" * 100).decode()
    script: list[str | bytes] = [
        json.dumps({"type": "audio_end", "duration": 1.0}),  # the previous line's
        json.dumps({"type": "audio_chunk", "data": chunk, "sequence": 1}),
        json.dumps({"type": "flushed"}),
    ]
    link = WsLink("SLNG", "SLNG_API_KEY", KEY, idle_s=60)
    ws = slng_ws.SlngWebSocket(link, base_url="http://127.0.0.1:9/slng", headers={})
    assert ws._collect_audio(Replay(script)) == b"\x01\x00" * 100  # type: ignore[arg-type]
