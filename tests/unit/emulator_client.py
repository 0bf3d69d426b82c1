"""Driving the emulator's ASGI app in-process from tests (no server, no network)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from emulator.app import create_app
from emulator.config import EmulatorConfig

AURA_EN = "/slng/v1/tts/slng/deepgram/aura:2-en"


def run(
    check: Callable[[httpx.AsyncClient], Awaitable[Any]], config: EmulatorConfig | None = None
) -> Any:
    """Run `check(client)` against a fresh emulator app built from `config`."""

    async def main() -> Any:
        transport = httpx.ASGITransport(app=create_app(config or EmulatorConfig()))
        async with httpx.AsyncClient(transport=transport, base_url="http://emulator") as client:
            return await check(client)

    return asyncio.run(main())
