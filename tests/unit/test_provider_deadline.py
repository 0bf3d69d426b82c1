"""A drip-fed answer against the real socket path: the call's own deadline ends it.

The emulator runs under uvicorn on a loopback port (the per-read timeout never fires when a
byte arrives every half second), and the SLNG adapter's deadline is sized to the request.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn

from emulator.app import create_app
from emulator.config import EmulatorConfig
from tests.services import free_port, wait_for_port
from workers.providers.errors import ProviderTimeout
from workers.providers.exchange import Bounds
from workers.providers.slng import SlngProvider

AURA_EN = "slng/deepgram/aura:2-en"


@pytest.fixture(scope="module")
def emulator_url() -> Iterator[str]:
    """The emulator, dripping bytes every 0.5 s when asked, on a free loopback port."""
    port = free_port()
    config = uvicorn.Config(
        create_app(EmulatorConfig(drip_interval_s=0.5)),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="off",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for_port("127.0.0.1", port, 10.0)
    yield f"http://127.0.0.1:{port}/slng"
    server.should_exit = True
    thread.join(timeout=5)


def test_a_drip_fed_answer_fails_as_provider_timeout_at_the_calls_deadline(
    emulator_url: str,
) -> None:
    """On a reused keep-alive connection, a body sent one byte per 0.5 s ends as
    provider_timeout about when the 1.5 s deadline passes, not after the 60 s read timeout
    times every byte."""
    bounds = Bounds(tts_base_s=1.5, tts_per_char_s=0.0)
    with httpx.Client(timeout=httpx.Timeout(60.0, connect=5.0)) as client:
        slng = SlngProvider(client, base_url=emulator_url, api_key="sk-test", bounds=bounds)
        assert slng.synthesize("Warm up.", model=AURA_EN, voice=None, options={}).audio
        started = time.monotonic()
        with pytest.raises(ProviderTimeout) as excinfo:
            slng.synthesize("Hi. [[answer:drip]]", model=AURA_EN, voice=None, options={})
        elapsed = time.monotonic() - started
    assert excinfo.value.code == "provider_timeout"
    assert "1.5 s allowed" in excinfo.value.message
    assert 1.4 <= elapsed < 3.0


def test_deadlines_are_sized_to_the_request_and_capped_by_the_setting() -> None:
    """A short line gets ~10 s, a long one more, an STT file more per audio second; none more
    than SPEECHBATCH_PROVIDER_TIMEOUT_SECONDS."""
    bounds = Bounds(timeout_s=60.0)
    assert bounds.tts_deadline_s(12) < 11.0
    assert bounds.tts_deadline_s(12) < bounds.tts_deadline_s(900) <= 60.0
    assert bounds.stt_deadline_s(10.0) < bounds.stt_deadline_s(60.0) <= 60.0
    assert Bounds(timeout_s=5.0).tts_deadline_s(12) == 5.0
