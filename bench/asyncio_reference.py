"""The reference a batch system is measured against: a plain asyncio + httpx script.

It makes the same TTS calls to the same emulator with a semaphore of C and nothing else
(no database, no broker, no storage), so its rate is what the provider allows in practice.
A few rounds of C calls warm the emulator and the connections before the clock starts.
"""

from __future__ import annotations

import asyncio
import time

import httpx

MODEL = "slng/deepgram/aura:2-en"


async def run_reference(base_url: str, api_key: str, *, items: int, concurrency: int) -> float:
    """Make `items` TTS calls with at most `concurrency` in flight; returns items per second."""
    semaphore = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=base_url, limits=limits, timeout=60, headers={"Authorization": f"Bearer {api_key}"}
    ) as client:

        async def one(n: int) -> None:
            async with semaphore:
                while True:
                    response = await client.post(
                        f"/v1/tts/{MODEL}",
                        json={
                            "text": f"Reference line {n} of the benchmark.",
                            "model": "aura-2-thalia-en",
                            "encoding": "linear16",
                            "container": "wav",
                            "sample_rate": 24000,
                        },
                    )
                    if response.status_code == 200:
                        return
                    await asyncio.sleep(0.05)

        # Untimed first: the emulator renders and caches each new audio length once, and the
        # client opens its connections; the pipeline measured after this finds both warm.
        await asyncio.gather(*(one(n) for n in range(-4 * concurrency, 0)))
        started = time.perf_counter()
        await asyncio.gather(*(one(n) for n in range(items)))
        return items / (time.perf_counter() - started)


def reference_rate(base_url: str, api_key: str, *, items: int, concurrency: int) -> float:
    return asyncio.run(run_reference(base_url, api_key, items=items, concurrency=concurrency))
