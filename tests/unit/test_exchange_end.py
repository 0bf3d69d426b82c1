"""A single-request TTS call (SLNG, Smallest, and the hosted vendors through one helper)
frees its throttle slot as soon as its whole 2xx answer is read, before the answer is checked;
error answers and calls outside a permit free nothing early."""

from __future__ import annotations

import httpx
import pytest

from tests.unit.test_openai_provider import NOISE as OPENAI_NOISE
from tests.unit.test_openai_provider import WAV as OPENAI_WAV
from tests.unit.test_openai_provider import speak as openai_speak
from tests.unit.test_slng_provider import WAV as SLNG_WAV
from tests.unit.test_slng_provider import speak as slng_speak
from tests.unit.test_smallest_provider import NOISE
from tests.unit.test_smallest_provider import WAV as SMALLEST_WAV
from tests.unit.test_smallest_provider import speak as smallest_speak
from workers.providers.errors import ProviderUnavailable, RateLimited
from workers.providers.exchange_end import exchange_ended, releasable


def test_the_release_runs_once_and_only_inside_its_block() -> None:
    """Outside any block the call is a no-op; inside, the release runs on the first call only,
    and the block's end restores the outer state."""
    exchange_ended()
    released: list[str] = []
    with releasable(lambda: released.append("slot")):
        exchange_ended()
        exchange_ended()
    exchange_ended()
    assert released == ["slot"]


def test_slng_http_frees_the_slot_on_a_2xx_answer_before_checking_it() -> None:
    """A whole 200 answer frees the slot (even when its audio then fails the checks); a 429
    answer does not, so the adaptive limit hears of it at the block's end."""
    released: list[str] = []
    with releasable(lambda: released.append("ok")):
        slng_speak(lambda r: httpx.Response(200, content=SLNG_WAV))
    with releasable(lambda: released.append("garbage")), pytest.raises(ProviderUnavailable):
        slng_speak(lambda r: httpx.Response(200, content=b"<html>oops</html>"))
    with releasable(lambda: released.append("429")), pytest.raises(RateLimited):
        slng_speak(lambda r: httpx.Response(429, json={"error": "slow down"}))
    assert released == ["ok", "garbage"]


def test_smallest_http_frees_the_slot_on_a_2xx_answer_before_checking_it() -> None:
    """The same for Smallest's plain HTTP route: 200s free the slot early, a 429 does not."""
    released: list[str] = []
    wav = {"content-type": "audio/wav"}
    with releasable(lambda: released.append("ok")):
        smallest_speak(lambda r: httpx.Response(200, content=SMALLEST_WAV, headers=wav))
    with releasable(lambda: released.append("noise")), pytest.raises(ProviderUnavailable):
        smallest_speak(lambda r: httpx.Response(200, content=NOISE))
    with releasable(lambda: released.append("429")), pytest.raises(RateLimited):
        smallest_speak(lambda r: httpx.Response(429, json={"message": "slow down"}))
    assert released == ["ok", "noise"]


def test_hosted_vendors_free_the_slot_on_a_whole_2xx_answer_before_checking_it() -> None:
    """OpenAI's WAV answer (through `HostedHttp._spoken`, shared with Deepgram and
    ElevenLabs) frees the slot before the speech check, noise included; a 429 does not."""
    released: list[str] = []
    with releasable(lambda: released.append("ok")):
        openai_speak(lambda r: httpx.Response(200, content=OPENAI_WAV))
    with releasable(lambda: released.append("noise")), pytest.raises(ProviderUnavailable):
        openai_speak(lambda r: httpx.Response(200, content=OPENAI_NOISE))
    with releasable(lambda: released.append("429")), pytest.raises(RateLimited):
        openai_speak(lambda r: httpx.Response(429, json={"error": {"message": "slow down"}}))
    assert released == ["ok", "noise"]
