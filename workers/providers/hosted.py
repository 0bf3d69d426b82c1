"""What every hosted vendor's HTTP adapter keeps: its base URL, key, bounds and exchange.

Deepgram, OpenAI and ElevenLabs build on `HostedHttp` (the seed vendors predate it and carry
WebSocket links of their own); each names itself in `vendor` (as messages say it) and adds
its own auth header, bodies and error mapping around `self._call`.
"""

from __future__ import annotations

from functools import partial
from typing import ClassVar

import httpx

from workers.providers import exchange
from workers.providers.answers import check_speech
from workers.providers.base import Synthesis
from workers.providers.exchange import Bounds
from workers.providers.exchange_end import exchange_ended


class HostedHttp:
    """One account of `vendor` behind an injected `httpx.Client`; one request per call."""

    vendor: ClassVar[str]

    def __init__(
        self, client: httpx.Client, *, base_url: str, api_key: str, bounds: Bounds | None = None
    ) -> None:
        self._base = base_url.rstrip("/")
        self._key = api_key
        self._bounds = bounds or Bounds()
        # Every call goes through the exchange's deadline and size cap, the key redacted.
        self._call = partial(exchange.call, client, "POST", provider=self.vendor, secret=api_key)

    def _spoken(
        self, wav: bytes, text: str, response: httpx.Response, request_id: str | None
    ) -> Synthesis:
        """A whole WAV answer, once it passes the answer checks for `text`. Its one exchange
        is over, so the call's throttle slot is freed before the checks."""
        exchange_ended()
        check_speech(
            wav,
            text=text,
            max_samples=self._bounds.max_decode_samples,
            provider=self.vendor,
            request_id=request_id,
        )
        return Synthesis(
            audio=wav,
            content_type="audio/wav",
            request_id=request_id,
            status_code=response.status_code,
        )


def streamed(response: httpx.Response, request_id: str | None) -> Synthesis:
    """The answer of a call whose PCM went to the pipeline's sink as it arrived."""
    return Synthesis(
        b"", "audio/L16", request_id=request_id, status_code=response.status_code, streamed=True
    )
