"""When each chunk of a streamed TTS answer goes out: one schedule for SSE and both WebSockets.

A streamed answer has a time to first byte (`ttfb_ms`) and a total latency (`latency_ms`
plus `[[latency:MS]]` tokens): the first audio chunk goes out at the first, the others are
spread evenly so the last one, and the terminator after it, go out at the second. If
`realtime_factor` is set, the audio is also never sent faster than that many seconds of
audio per wall-clock second from the first chunk, so a ten-minute answer takes realistic time.
`schedule` is the pure arithmetic; `paced` sleeps to it by absolute deadlines from the
request's start, so time spent sending or encoding a chunk does not push the later ones back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

CHUNK_S = 0.25  # audio per streamed chunk: 2,400 chunks for a ten-minute answer


@dataclass(frozen=True)
class StreamTiming:
    """One streamed answer's dials, already jittered: seconds to the first chunk, seconds to
    the end, and audio seconds allowed per wall-clock second (0: no limit)."""

    ttfb_s: float
    total_s: float
    realtime_factor: float = 0.0


@dataclass(frozen=True)
class Schedule:
    """Offsets in seconds from the request's start: one per chunk, and the terminator's."""

    chunks: tuple[float, ...]
    end: float


def schedule(count: int, audio_s: float, timing: StreamTiming) -> Schedule:
    """When each of `count` chunks (carrying `audio_s` seconds of audio in all) goes out."""
    first = timing.ttfb_s
    end = max(timing.total_s, first)
    if timing.realtime_factor > 0:
        end = max(end, first + audio_s / timing.realtime_factor)
    if count <= 1:
        # A lone chunk is the first one; the terminator still waits for the total.
        return Schedule((first,) * count, end)
    step = (end - first) / (count - 1)
    offsets = (*(first + n * step for n in range(count - 1)), end)
    return Schedule(offsets, end)


async def paced(
    chunks: Sequence[T],
    audio_s: float,
    timing: StreamTiming,
    *,
    started: float,
    clock: Callable[[], float] = time.perf_counter,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> AsyncGenerator[T, None]:
    """Yield each chunk at its offset after `started` (a `clock` reading), then wait for the
    terminator's offset before ending; a late chunk goes at once and the rest keep their time."""
    planned = schedule(len(chunks), audio_s, timing)
    for chunk, offset in zip(chunks, planned.chunks, strict=True):
        await _sleep_until(started + offset, clock, sleep)
        yield chunk
    await _sleep_until(started + planned.end, clock, sleep)


async def _sleep_until(
    deadline: float, clock: Callable[[], float], sleep: Callable[[float], Awaitable[None]]
) -> None:
    delay = deadline - clock()
    if delay > 0:
        await sleep(delay)


def chunked(content: bytes, sample_rate: int) -> list[memoryview]:
    """`content` in slices of CHUNK_S seconds of 16-bit audio at `sample_rate` (whole samples;
    compressed audio comes in fewer), as views: a long answer is not copied again."""
    step = 2 * max(1, int(sample_rate * CHUNK_S))
    view = memoryview(content)
    return [view[i : i + step] for i in range(0, len(content), step)]
