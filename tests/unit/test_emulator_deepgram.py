"""The emulator's Deepgram routes: Aura audio as a paced chunked body, pre-recorded transcripts
with the features asked for, Token auth, Deepgram's own limits and its error bodies."""

from __future__ import annotations

import asyncio
import io
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf
from starlette.applications import Starlette
from starlette.routing import Route

from emulator.app import create_app
from emulator.config import EmulatorConfig
from emulator.deepgram_listen import ListenApi
from emulator.dials import Dials
from emulator.faults import StreamCut
from tests.unit.emulator_client import run
from tests.unit.test_streamed_audio import Collected
from tests.unit.ws_emulator import serving
from workers.audio import pcm16_to_wav
from workers.providers.base import AudioInput
from workers.providers.deepgram import DeepgramProvider

AUTH = {"Authorization": "Token test-key"}
SPEAK = "/deepgram/v1/speak"
LISTEN = "/deepgram/v1/listen"
TEXT = "Hello there, this is a test of the emulator voice."  # 50 chars -> ~3.33 s
PCM_WAV = "?model=aura-2-thalia-en&encoding=linear16&sample_rate=16000"


def post(path: str, config: EmulatorConfig | None = None, **kwargs: Any) -> httpx.Response:
    headers = {**AUTH, **kwargs.pop("headers", {})}
    response: httpx.Response = run(
        lambda client: client.post(path, headers=headers, **kwargs), config
    )
    return response


def wav_bytes(seconds: float, rate: int = 16000) -> bytes:
    """A 300 Hz tone of `seconds` as a 16-bit WAV."""
    tone = 6000 * np.sin(2 * np.pi * 300 * np.arange(int(seconds * rate)) / rate)
    return pcm16_to_wav(tone.astype("<i2").tobytes(), rate)


def error_of(response: httpx.Response) -> tuple[int, str, str]:
    """(status, err_code, err_msg), checking the request id matches the header."""
    body = response.json()
    assert body["request_id"] == response.headers["dg-request-id"]
    if "category" in body:  # the JSON-parse envelope
        return response.status_code, body["category"], body["details"]
    return response.status_code, body.get("err_code", body.get("error_code")), body["err_msg"]


# --- /v1/speak ----------------------------------------------------------------------------------


def test_linear16_gives_a_wav_of_plausible_length_with_deepgrams_headers() -> None:
    """A linear16 request is a 16 kHz WAV about len(text)/15 s long, with dg-request-id,
    dg-model-name, dg-model-uuid and dg-char-count."""
    response = post(SPEAK + PCM_WAV, json={"text": TEXT})
    assert response.status_code == 200
    assert response.headers["content-type"] == "audio/wav"
    info = sf.info(io.BytesIO(response.content))
    assert info.samplerate == 16000
    assert info.duration == pytest.approx(len(TEXT) / 15, abs=0.05)
    assert response.headers["dg-model-name"] == "aura-2-thalia-en"
    assert response.headers["dg-char-count"] == str(len(TEXT))
    assert response.headers["dg-request-id"] and len(response.headers["dg-model-uuid"]) == 36


def test_defaults_container_none_and_text_plain() -> None:
    """No query is Aura-1 asteria as MP3; container=none is bare PCM labelled audio/l16 with
    its rate; a text/plain body is spoken like JSON's text."""
    default = post(SPEAK, json={"text": TEXT})
    assert default.headers["content-type"] == "audio/mpeg"
    assert default.headers["dg-model-name"] == "aura-asteria-en"
    assert sf.info(io.BytesIO(default.content)).duration == pytest.approx(3.33, abs=0.2)
    bare = post(f"{SPEAK}?model=aura-2-zeus-en&encoding=linear16&container=none", content=TEXT,
                headers={"Content-Type": "text/plain"})  # fmt: skip
    assert bare.headers["content-type"] == "audio/l16;rate=24000"
    assert len(bare.content) == pytest.approx(2 * 24000 * len(TEXT) / 15, abs=48)
    assert bare.content[:4] != b"RIFF"


@pytest.mark.parametrize(
    ("query", "body", "headers", "expected"),
    [
        ("?model=aura-2-nobody-en", {"text": "hi"}, {}, (400, "Bad Request")),
        ("?encoding=linear16&container=ogg", {"text": "hi"}, {}, (400, "INVALID_QUERY_PARAMETER")),
        ("?encoding=mp3&sample_rate=16000", {"text": "hi"}, {}, (400, "INVALID_QUERY_PARAMETER")),
        ("?encoding=linear16&sample_rate=44100", {"text": "hi"}, {},
         (400, "INVALID_QUERY_PARAMETER")),
        ("?encoding=aac", {"text": "hi"}, {}, (400, "INVALID_QUERY_PARAMETER")),
        ("", {"text": "  "}, {}, (400, "Bad Request")),
        ("", {"speech": "hi"}, {}, (400, "PAYLOAD_ERROR")),
        ("", {"url": "https://example.com/t.txt"}, {}, (400, "REMOTE_CONTENT_ERROR")),
        ("", "hi", {"Content-Type": "text/html"}, (415, "UNSUPPORTED_MEDIA_TYPE")),
        ("?model=aura-2-thalia-en", {"text": "a" * 1001}, {}, (422, "UNPROCESSABLE_ENTITY")),
        ("?model=aura-zeus-en", {"text": "a" * 2001}, {}, (422, "UNPROCESSABLE_ENTITY")),
        ("?model=aura-zeus-en", {"text": "a" * 2401}, {}, (413, "Payload Too Large")),
        ("?callback=https://example.com/hook", {"text": "hi"}, {},
         (400, "INVALID_QUERY_PARAMETER")),
    ],
)  # fmt: skip
def test_bad_speak_requests_are_refused_in_deepgrams_shape(
    query: str, body: Any, headers: dict[str, str], expected: tuple[int, str]
) -> None:
    """Unknown voices, bad formats, empty or over-long text and wrong bodies get Deepgram's
    documented status and err_code."""
    kwargs: dict[str, Any] = {"content": body} if isinstance(body, str) else {"json": body}
    response = post(SPEAK + query, headers=headers, **kwargs)
    assert error_of(response)[:2] == expected


def test_malformed_json_gets_the_category_message_variant() -> None:
    """A body that is not JSON is 400 in errors.mdx's other envelope, {category: INVALID_JSON,
    message, details, request_id}."""
    response = post(SPEAK, content=b"{nope", headers={"Content-Type": "application/json"})
    assert set(response.json()) == {"category", "message", "details", "request_id"}
    status, code, details = error_of(response)
    assert (status, code) == (400, "INVALID_JSON")
    assert "Json deserialize error" in details


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Token"}, {"Authorization": "Basic abc"}, {"Authorization": "Token no"}],
)
def test_a_missing_or_wrong_key_is_401_invalid_auth(headers: dict[str, str]) -> None:
    """No key, another scheme or a key not configured is 401 INVALID_AUTH on both routes;
    a configured key passes as Token or Bearer."""
    config = EmulatorConfig(api_keys=frozenset({"good-key"}))

    async def check(client: httpx.AsyncClient) -> list[httpx.Response]:
        return [
            await client.post(SPEAK, headers=headers, json={"text": "hi"}),
            await client.post(LISTEN, headers=headers, content=wav_bytes(0.5)),
        ]

    for response in run(check, config):
        assert error_of(response) == (401, "INVALID_AUTH", "Invalid credentials.")
    ok = [post(SPEAK, config, headers={"Authorization": f"{s} good-key"}, json={"text": "hi"})
          for s in ("Token", "Bearer")]  # fmt: skip
    assert [r.status_code for r in ok] == [200, 200]


def test_the_body_is_paced_by_ttfb_and_latency() -> None:
    """The chunked body's first chunk comes at ttfb_ms and its end at latency_ms: a streaming
    client sees the audio begin well before it ends."""
    config = EmulatorConfig(ttfb_ms=150, latency_ms=600)
    with serving(config) as (url, _), httpx.Client(base_url=url, headers=AUTH) as client:
        started = time.perf_counter()
        with client.stream("POST", SPEAK + PCM_WAV, json={"text": TEXT}) as response:
            chunks = response.iter_bytes()
            first = next(chunks)
            first_at = time.perf_counter() - started
            rest = b"".join(chunks)
        ended_at = time.perf_counter() - started
    assert response.headers.get("transfer-encoding") == "chunked"
    assert first[:4] == b"RIFF" and len(first + rest) > 100_000
    assert 0.12 <= first_at < 0.45
    assert ended_at >= 0.58


def test_cut_fault_breaks_the_body_off_part_way() -> None:
    """[[answer:cut]] sends about half the audio and then drops the connection."""
    body = {"text": f"{TEXT} [[answer:cut]]"}

    async def main() -> bytes:
        quiet = httpx.ASGITransport(app=create_app(EmulatorConfig()), raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=quiet, base_url="http://e") as client:
            return (await client.post(SPEAK + PCM_WAV, headers=AUTH, json=body)).content

    whole = post(SPEAK + PCM_WAV, json={"text": TEXT}).content
    received = asyncio.run(main())
    assert 0 < len(received) < len(whole) * 0.75
    with pytest.raises(StreamCut):
        post(SPEAK + PCM_WAV, json=body)


def test_faults_come_in_deepgrams_shapes() -> None:
    """An injected 503 carries error_code (as errors.mdx shows it), a 429 on TTS reads
    `Too Many Requests` with Retry-After, a 402 is ASR_PAYMENT_REQUIRED."""
    down = post(SPEAK, json={"text": "hi [[status:503]]"})
    assert set(down.json()) == {"error_code", "err_msg", "request_id"}
    assert error_of(down)[:2] == (503, "Service Unavailable")
    slow = post(SPEAK, EmulatorConfig(retry_after_s=2), json={"text": "hi [[status:429]]"})
    assert error_of(slow) == (429, "Too Many Requests", "Please try again later.")
    assert slow.headers["retry-after"] == "2"
    broke = post(SPEAK, json={"text": "hi [[status:402]]"})
    assert error_of(broke)[:2] == (402, "ASR_PAYMENT_REQUIRED")


def test_fifteen_tts_requests_in_flight_per_key() -> None:
    """The 16th concurrent /v1/speak of one key is 429 in Deepgram's TTS shape; another key
    is not refused."""
    config = EmulatorConfig(latency_ms=400)

    async def check(client: httpx.AsyncClient) -> list[httpx.Response]:
        first = [
            asyncio.ensure_future(client.post(SPEAK, headers=AUTH, json={"text": "hi"}))
            for _ in range(15)
        ]
        await asyncio.sleep(0.15)
        over = await client.post(SPEAK, headers=AUTH, json={"text": "hi"})
        other = await client.post(SPEAK, headers={"Authorization": "Token k2"}, json={"text": "x"})
        return [*(await asyncio.gather(*first)), over, other]

    answers = run(check, config)
    assert [a.status_code for a in answers] == [200] * 15 + [429, 200]
    assert error_of(answers[15])[1] == "Too Many Requests"


# --- /v1/listen ---------------------------------------------------------------------------------


def test_listen_answers_the_features_asked_for() -> None:
    """smart_format punctuates, diarize gives alternating speakers, utterances adds timed
    utterances, and the metadata has every field the SDK's model requires."""
    clip = wav_bytes(3.0)
    query = "?model=nova-3&smart_format=true&diarize=true&utterances=true"
    body = post(LISTEN + query, content=clip, headers={"Content-Type": "audio/wav"}).json()
    metadata = body["metadata"]
    assert set(metadata) >= {"request_id", "sha256", "created", "duration", "channels",
                             "models", "model_info"}  # fmt: skip
    assert metadata["duration"] == pytest.approx(3.0)
    assert metadata["model_info"][metadata["models"][0]]["name"] == "nova-3"
    best = body["results"]["channels"][0]["alternatives"][0]
    assert best["transcript"][0].isupper() and best["transcript"].endswith(".")
    words = best["words"]
    assert {w["speaker"] for w in words} == {0, 1}
    assert all(0 <= w["start"] < w["end"] <= 3.0 for w in words)
    utterances = body["results"]["utterances"]
    assert [u["speaker"] for u in utterances] == [n % 2 for n in range(len(utterances))]
    assert sum(len(u["words"]) for u in utterances) == len(words)


def test_listen_without_features_is_plain_and_defaults_to_base() -> None:
    """With no query the model is base, words have no speaker or punctuated_word, and there
    are no utterances; octet-stream bodies are read like audio/*."""
    clip = wav_bytes(2.0)
    body = post(LISTEN, content=clip, headers={"Content-Type": "application/octet-stream"}).json()
    metadata = body["metadata"]
    assert metadata["model_info"][metadata["models"][0]]["name"] == "base"
    words = body["results"]["channels"][0]["alternatives"][0]["words"]
    assert words and all(set(w) == {"word", "start", "end", "confidence"} for w in words)
    assert "utterances" not in body["results"]


@pytest.mark.parametrize(
    ("query", "body", "expected"),
    [
        ("?model=nova-9", wav_bytes(1), (400, "Bad Request")),
        ("?punctuate=maybe", wav_bytes(1), (400, "INVALID_QUERY_PARAMETER")),
        ("", b"", (400, "Bad Request")),
        ("", b"not audio at all" * 20, (400, "Bad Request")),
        ("?callback=ftp://example.com/hook", wav_bytes(1), (400, "INVALID_QUERY_PARAMETER")),
        ("?callback=http://h.test/&callback_method=GET", wav_bytes(1),
         (400, "INVALID_QUERY_PARAMETER")),
    ],
)  # fmt: skip
def test_listen_refusals_use_deepgrams_shape(
    query: str, body: bytes, expected: tuple[int, str]
) -> None:
    """Unknown models, bad booleans, empty or undecodable audio and bad callbacks are refused
    as {err_code, err_msg, request_id}."""
    response = post(LISTEN + query, content=body, headers={"Content-Type": "audio/wav"})
    assert error_of(response)[:2] == expected
    if body[:4] == b"not ":
        assert "corrupt or unsupported data" in error_of(response)[2]


def test_listen_over_the_size_limit_and_a_bad_url_body() -> None:
    """Audio over max_audio_bytes is 413; a JSON body without an http(s) url is 400."""
    clip = wav_bytes(1.0)
    big = post(LISTEN, EmulatorConfig(max_audio_bytes=len(clip) - 1), content=clip)
    assert error_of(big)[:2] == (413, "PAYLOAD_TOO_LARGE")
    no_url = post(LISTEN, json={"uri": "ftp://x"})
    assert error_of(no_url)[:2] == (400, "INVALID_JSON")


def test_stt_limit_and_429_shape() -> None:
    """Over ListenApi's in-flight limit a request is 429 TOO_MANY_REQUESTS with Retry-After."""
    dials = Dials(EmulatorConfig(latency_ms=300, retry_after_s=3))
    api = ListenApi(dials, concurrency=1)
    app = Starlette(routes=[Route("/v1/listen", api.listen, methods=["POST"])])
    clip = wav_bytes(0.5)

    async def main() -> tuple[httpx.Response, httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://e") as client:
            first = asyncio.ensure_future(client.post("/v1/listen", headers=AUTH, content=clip))
            await asyncio.sleep(0.1)
            second = await client.post("/v1/listen", headers=AUTH, content=clip)
            return await first, second

    first, second = asyncio.run(main())
    assert first.status_code == 200
    assert error_of(second) == (
        429,
        "TOO_MANY_REQUESTS",
        "Too many requests. Please try again later",
    )
    assert second.headers["retry-after"] == "3"
    assert [r["fault"] for r in dials.requests()] == ["cap", None]  # logged as they end


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[str, dict[str, str], bytes]]]]:
    """A loopback HTTP server that fails its first delivery with 500, then records and
    accepts each one: (URL, [(method, headers, body)])."""
    received: list[tuple[str, dict[str, str], bytes]] = []
    tries = [0]

    class Handler(BaseHTTPRequestHandler):
        def _any(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            tries[0] += 1
            if tries[0] > 1:
                received.append((self.command, dict(self.headers), body))
            self.send_response(500 if tries[0] == 1 else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_POST(self) -> None:
            self._any()

        def do_PUT(self) -> None:
            self._any()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/hook", received
    finally:
        server.shutdown()
        server.server_close()


def test_a_callback_gets_the_request_id_now_and_the_transcript_later(
    receiver: tuple[str, list[tuple[str, dict[str, str], bytes]]],
) -> None:
    """With callback=URL the answer is {request_id} at once; the transcript is PUT to the URL
    (callback_method), redelivered after the receiver's first 500, with a dg-token header."""
    url, received = receiver

    async def check(client: httpx.AsyncClient) -> httpx.Response:
        query = {"callback": url, "callback_method": "put", "model": "nova-2"}
        answer = await client.post(LISTEN, params=query, headers=AUTH, content=wav_bytes(2.0))
        for _ in range(100):
            if received:
                break
            await asyncio.sleep(0.05)
        return answer

    answer = run(check)
    assert set(answer.json()) == {"request_id"}
    ((method, headers, body),) = received
    transcript = json.loads(body)
    assert method == "PUT" and headers["dg-token"]
    assert transcript["metadata"]["request_id"] == answer.json()["request_id"]
    assert transcript["results"]["channels"][0]["alternatives"][0]["words"]


def test_answer_faults_spoil_deepgram_word_times() -> None:
    """An `unordered` answer fault really reverses the word times of a Deepgram answer."""
    spoiled = post(LISTEN, EmulatorConfig(answer_fault="unordered"), content=wav_bytes(3.0))
    words = spoiled.json()["results"]["channels"][0]["alternatives"][0]["words"]
    starts = [w["start"] for w in words]
    assert starts == sorted(starts, reverse=True) and len(starts) > 1


# --- the adapter against the emulator -----------------------------------------------------------


def test_the_adapter_speaks_streams_and_listens_through_the_emulator() -> None:
    """The worker's Deepgram adapter is understood by the emulator over a real socket: a WAV
    over HTTP, bare PCM streamed into a sink, and a transcript of the emulator's own clip."""
    with serving(EmulatorConfig(api_keys=frozenset({"good-key"}))) as (url, dials):
        with httpx.Client(timeout=10) as client:
            adapter = DeepgramProvider(client, base_url=f"{url}/deepgram", api_key="good-key")
            whole = adapter.synthesize(TEXT, model="aura-2", voice="luna-en", options={})
            sink = Collected()
            streamed = adapter.synthesize(
                TEXT, model="aura-2", voice=None, options={"transport": "stream"}, sink=sink
            )
            clip = AudioInput(whole.audio, "clip.wav", whole.content_type)
            transcript = adapter.transcribe(clip, model="nova-3", options={"language": "en"})
        paths = [(r["path"], r["model"], r["status"]) for r in dials.requests()]
    assert sf.info(io.BytesIO(whole.audio)).duration == pytest.approx(len(TEXT) / 15, abs=0.05)
    assert streamed.streamed and sink.rate == 24000
    assert len(b"".join(sink.chunks)) == pytest.approx(2 * 24000 * len(TEXT) / 15, abs=48)
    assert transcript.text and transcript.words and transcript.segments
    assert {w.speaker for w in transcript.words} <= {"0", "1"}
    assert transcript.request_id == dials.requests()[-1]["request_id"]
    assert paths == [
        ("/deepgram/v1/speak", "aura-2-luna-en", 200),
        ("/deepgram/v1/speak", "aura-2-thalia-en", 200),
        ("/deepgram/v1/listen", "nova-3", 200),
    ]
