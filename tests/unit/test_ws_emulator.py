"""The emulator's WebSocket sessions (SLNG TTS/STT, Smallest TTS) over Starlette's in-process
test client: message sequences, framings, refusals, caps, drops and idle timeouts."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.websockets import WebSocketDisconnect

from emulator.app import create_app
from emulator.config import EmulatorConfig

KEY = "sk-ws-emulator-test-0123"
AUTH = {"Authorization": f"Bearer {KEY}"}
AURA = "/slng/v1/tts/slng/deepgram/aura:2-en"
BRIDGE = "/slng/v1/bridges/unmute/tts/slng/deepgram/aura:2-en"
RIME = "/slng/v1/tts/slng/rime/arcana:en"
NOVA = "/slng/v1/stt/slng/deepgram/nova:3-en"
LIVE = "/smallest/waves/v1/tts/live"
INIT = {"type": "init", "voice": "aura-2-thalia-en", "config": {"sample_rate": 8000}}


def client(**config: Any) -> TestClient:
    return TestClient(create_app(EmulatorConfig(api_keys=frozenset({KEY}), **config)))


@pytest.fixture
def emulator() -> Iterator[TestClient]:
    with client() as test_client:
        yield test_client


def utterance(ws: Any) -> tuple[list[dict[str, Any]], list[bytes]]:
    """The JSON messages and binary frames of one utterance, up to audio_end."""
    messages: list[dict[str, Any]] = []
    frames: list[bytes] = []
    while True:
        raw = ws.receive()
        if raw.get("bytes") is not None:
            frames.append(raw["bytes"])
            continue
        messages.append(json.loads(raw["text"]))
        if messages[-1]["type"] == "audio_end":
            return messages, frames


def until_closed(ws: Any) -> tuple[list[str], int]:
    """The types of the JSON messages received until the server closed, and its close code."""
    kinds: list[str] = []
    while True:
        try:
            kinds.append(ws.receive_json()["type"])
        except WebSocketDisconnect as closed:
            return kinds, closed.code


def test_tts_session_answers_init_text_flush_and_clear_in_order(emulator: TestClient) -> None:
    """A per-model TTS session answers ready, then segment_start, numbered base64 chunks,
    segment_end, flushed and audio_end for a flushed text, and cleared for clear."""
    with emulator.websocket_connect(AURA, headers=AUTH) as ws:
        ws.send_json(INIT)
        assert ws.receive_json()["type"] == "ready"
        ws.send_json({"type": "text", "text": "Hello there, "})
        ws.send_json({"type": "text", "text": "general reader.", "flush": True})
        messages, frames = utterance(ws)
        kinds = [m["type"] for m in messages]
        assert kinds[0] == "segment_start" and kinds[-3:] == ["segment_end", "flushed", "audio_end"]
        chunks = [m for m in messages if m["type"] == "audio_chunk"]
        assert [c["sequence"] for c in chunks] == list(range(1, len(chunks) + 1))
        pcm = b"".join(base64.b64decode(c["data"]) for c in chunks)
        assert frames == []
        assert len(pcm) / 2 / 8000 == pytest.approx(messages[-1]["duration"], abs=0.01)
        ws.send_json({"type": "clear"})
        assert ws.receive_json() == {"type": "cleared"}


def test_bridge_sends_binary_frames_and_the_dial_can_switch_framing() -> None:
    """Bridges send raw binary audio frames by default; ws_audio=base64 makes them send
    numbered audio_chunk messages instead."""
    for framing, binary in (("route", True), ("base64", False)):
        with (
            client(ws_audio=framing) as emulator,
            emulator.websocket_connect(BRIDGE, headers=AUTH) as ws,
        ):
            ws.send_json(INIT)
            ws.receive_json()
            ws.send_json({"type": "flush", "text": "Speak this line."})
            messages, frames = utterance(ws)
            assert bool(frames) is binary
            assert any(m["type"] == "audio_chunk" for m in messages) is not binary


def test_text_before_init_is_an_error_and_ignored(emulator: TestClient) -> None:
    """Text sent before init is answered error{config_error} and produces no audio; the
    session then works once init arrives."""
    with emulator.websocket_connect(AURA, headers=AUTH) as ws:
        ws.send_json({"type": "text", "text": "Too early.", "flush": True})
        error = ws.receive_json()
        assert (error["type"], error["code"]) == ("error", "config_error")
        ws.send_json(INIT)
        assert ws.receive_json()["type"] == "ready"


def test_bad_init_config_is_a_config_error(emulator: TestClient) -> None:
    """An init whose sample rate SLNG does not take is answered config_error, not ready."""
    with emulator.websocket_connect(AURA, headers=AUTH) as ws:
        ws.send_json({"type": "init", "config": {"sample_rate": 12345}})
        assert ws.receive_json()["code"] == "config_error"


@pytest.mark.parametrize(
    ("path", "headers", "status", "said"),
    [
        (AURA, {}, 401, "Unauthorized"),
        (AURA, {"Authorization": "Bearer wrong-key"}, 401, "Unauthorized"),
        ("/slng/v1/tts/nobody/none:1", AUTH, 404, "Model not found"),
        (LIVE, {}, 401, "Bearer token is missing or invalid."),
    ],
)
def test_a_refused_upgrade_is_an_http_answer_with_a_body(
    emulator: TestClient, path: str, headers: dict[str, str], status: int, said: str
) -> None:
    """A missing or wrong key, or an unknown model, refuses the upgrade with an HTTP status
    and a JSON body saying why."""
    with pytest.raises(WebSocketDenialResponse) as refused:
        emulator.websocket_connect(path, headers=headers).__enter__()
    assert refused.value.status_code == status
    assert said in refused.value.text


def test_slng_accepts_the_key_as_a_token_query_parameter(emulator: TestClient) -> None:
    """SLNG's WebSocket also takes the key as ?token= (providers.md §1.1)."""
    with emulator.websocket_connect(f"{AURA}?token={KEY}") as ws:
        ws.send_json(INIT)
        assert ws.receive_json()["type"] == "ready"


def test_rime_closes_with_1000_right_after_audio_end(emulator: TestClient) -> None:
    """A Rime route ends the socket with a normal close straight after audio_end."""
    with emulator.websocket_connect(RIME, headers=AUTH) as ws:
        ws.send_json(INIT)
        ws.receive_json()
        ws.send_json({"type": "text", "text": "One line.", "flush": True})
        utterance(ws)
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == 1000


def test_a_session_dropped_mid_utterance_closes_1011_before_audio_end() -> None:
    """With ws_drop_every=1 the utterance stops part-way with close code 1011, no flushed."""
    with client(ws_drop_every=1) as emulator, emulator.websocket_connect(AURA, headers=AUTH) as ws:
        ws.send_json(INIT)
        ws.receive_json()
        ws.send_json(
            {"type": "text", "text": "A line long enough for several chunks.", "flush": True}
        )
        seen, code = until_closed(ws)
        assert code == 1011
        assert "audio_chunk" in seen and "flushed" not in seen


def test_slng_session_cap_refuses_with_rate_limit(emulator: TestClient) -> None:
    """Over slng_ws_sessions open sessions per key, the next one gets error{rate_limit} and
    a 1013 close, while the first keeps working."""
    with client(slng_ws_sessions=1) as capped, capped.websocket_connect(AURA, headers=AUTH) as ws:
        with capped.websocket_connect(AURA, headers=AUTH) as extra:
            assert extra.receive_json()["code"] == "rate_limit"
            with pytest.raises(WebSocketDisconnect) as closed:
                extra.receive_json()
            assert closed.value.code == 1013
        ws.send_json(INIT)
        assert ws.receive_json()["type"] == "ready"


def test_stt_session_transcribes_each_finalize_on_one_clock(emulator: TestClient) -> None:
    """Binary PCM then finalize gives final_transcripts with start, duration and words and an
    utterance_end; a second utterance's times continue after the first's audio."""
    with emulator.websocket_connect(NOVA, headers=AUTH) as ws:
        ws.send_json({"type": "init", "config": {"sample_rate": 16000, "enable_partials": False}})
        assert ws.receive_json()["type"] == "ready"
        ends = []
        for _ in range(2):
            ws.send_bytes(b"\x10\x00" * 32000)  # two seconds
            ws.send_json({"type": "finalize"})
            finals = []
            while (message := ws.receive_json())["type"] != "utterance_end":
                finals.append(message)
            assert finals and all(f["type"] == "final_transcript" for f in finals)
            assert finals[-1]["from_finalize"] is True
            assert all(f["words"] and f["duration"] > 0 for f in finals)
            ends.append((finals[0]["start"], message["last_word_end"]))
        assert ends[0][1] <= 2.0 < ends[1][0] < ends[1][1] <= 4.0


def test_stt_audio_as_base64_messages_is_accepted(emulator: TestClient) -> None:
    """Audio sent as {"type": "audio", "data": base64} is transcribed like binary frames."""
    with emulator.websocket_connect(NOVA, headers=AUTH) as ws:
        ws.send_json({"type": "init", "config": {"sample_rate": 16000}})
        ws.receive_json()
        data = base64.b64encode(b"\x10\x00" * 16000).decode()
        ws.send_json({"type": "audio", "data": data})
        ws.send_json({"type": "close"})
        kinds, code = until_closed(ws)
        assert "final_transcript" in kinds and kinds[-1] == "utterance_end"
        assert code == 1000


def test_stt_audio_before_ready_is_a_policy_violation_close(emulator: TestClient) -> None:
    """Audio sent before init/ready closes the session with 1008."""
    with emulator.websocket_connect(NOVA, headers=AUTH) as ws:
        ws.send_bytes(b"\x00\x00" * 100)
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == 1008


def test_smallest_session_speaks_each_flushed_request_and_stays_open(
    emulator: TestClient,
) -> None:
    """Two continue+flush requests on one Smallest socket each get chunks then complete; a
    continue:false request is answered and the socket closed."""
    request = {"voice_id": "magnus", "sample_rate": 8000, "continue": True, "flush": True}
    with emulator.websocket_connect(LIVE, headers=AUTH) as ws:
        for text in ("First line here.", "Second line here."):
            ws.send_json({**request, "text": text})
            statuses = []
            while (message := ws.receive_json())["status"] == "chunk":
                statuses.append(base64.b64decode(message["data"]["audio"]))
            assert message["status"] == "complete" and statuses
        ws.send_json({**request, "text": "Last.", "continue": False, "flush": False})
        while ws.receive_json()["status"] == "chunk":
            pass
        with pytest.raises(WebSocketDisconnect):
            ws.receive_json()


def test_smallest_refuses_a_sixth_connection_with_its_error() -> None:
    """Over smallest_ws_connections per key, the extra connection gets Smallest's error
    (code 429) and is closed."""
    with (
        client(smallest_ws_connections=1) as emulator,
        emulator.websocket_connect(LIVE, headers=AUTH),
        emulator.websocket_connect(LIVE, headers=AUTH) as extra,
    ):
        refused = extra.receive_json()
        assert refused["status"] == "error" and refused["error"]["code"] == 429
        assert "connections" in refused["error"]["message"]


def test_smallest_idle_timeout_sends_its_message_and_closes(emulator: TestClient) -> None:
    """A silent Smallest session (timeout shortened with ?timeout=) gets the documented
    inactivity error, then a close."""
    with emulator.websocket_connect(f"{LIVE}?timeout=0.2", headers=AUTH) as ws:
        message = ws.receive_json()
        assert message["status"] == "error"
        assert "timed out after 0.2 seconds of inactivity" in message["message"]
        with pytest.raises(WebSocketDisconnect):
            ws.receive_json()


def test_stats_count_every_session_opened(emulator: TestClient) -> None:
    """GET /_emulator/stats reports sessions opened per vendor; DELETE /requests resets it."""
    for path in (AURA, NOVA, LIVE):
        with emulator.websocket_connect(path, headers=AUTH):
            pass
    ws = emulator.get("/_emulator/stats").json()["ws"]
    assert ws["opened"] == 3 and ws["opened_by_vendor"] == {"slng": 2, "smallest": 1}
    emulator.delete("/_emulator/requests")
    assert emulator.get("/_emulator/stats").json()["ws"]["opened"] == 0


def test_slng_tts_keepalive_is_not_answered_and_keeps_the_session_open() -> None:
    """Keepalives after ready get no answer and reset the idle timer: a session idling
    0.3 s stays open for 0.6 s of keepalives and then speaks."""
    with (
        client(slng_ws_idle_s=0.3) as emulator,
        emulator.websocket_connect(AURA, headers=AUTH) as ws,
    ):
        ws.send_json(INIT)
        assert ws.receive_json()["type"] == "ready"
        for _ in range(4):
            time.sleep(0.15)
            ws.send_json({"type": "keepalive"})
        ws.send_json({"type": "flush", "text": "Still here."})
        messages, _frames = utterance(ws)
        assert messages[0]["type"] == "segment_start"
        assert messages[-1]["type"] == "audio_end"


def test_slng_stt_keepalive_is_not_answered_and_keeps_the_session_open() -> None:
    """An STT session idling 0.3 s outlives 0.6 s of keepalives, none answered, and then
    transcribes; silence past the idle time closes it."""
    with (
        client(slng_ws_idle_s=0.3) as emulator,
        emulator.websocket_connect(NOVA, headers=AUTH) as ws,
    ):
        ws.send_json({"type": "init", "config": {"sample_rate": 16000, "enable_partials": False}})
        assert ws.receive_json()["type"] == "ready"
        ws.send_bytes(b"\x10\x00" * 16000)
        for _ in range(4):
            time.sleep(0.15)
            ws.send_json({"type": "keepalive"})
        ws.send_json({"type": "finalize"})
        assert ws.receive_json()["type"] == "final_transcript"
        while ws.receive_json()["type"] != "utterance_end":
            pass
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()  # nothing more is sent: the idle close
        assert closed.value.code == 1000
