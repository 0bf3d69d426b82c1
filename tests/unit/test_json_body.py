"""The cheap pre-parse of JSON bodies: a value bound that ignores strings and stays linear."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest

from jobs.api.json_body import parse_bounded, value_bound, values_allowed
from jobs.errors import ApiError


@pytest.mark.parametrize(
    "value",
    [
        {"kind": "tts", "items": [{"text": "a, [b] {c}", "id": "x"}, {"text": '"q", \\'}]},
        [1, [2, 3], {"a": [4, {"b": 5}]}, "[,,{"],
        {"items": [{}] * 50},
    ],
)
def test_the_bound_counts_values_outside_strings(value: object) -> None:
    """Commas and brackets inside strings (escaped quotes too) do not count as values."""

    def count(node: object) -> int:
        if isinstance(node, dict):
            return 1 + sum(count(v) for v in node.values())
        if isinstance(node, list):
            return 1 + sum(count(v) for v in node)
        return 1

    raw = json.dumps(value).encode()
    # Exact but for empty containers, which hold one comma fewer than a bound assumes.
    assert count(value) <= value_bound(raw) <= count(value) + raw.count(b"{}") + raw.count(b"[]")


@pytest.mark.parametrize(
    "build",
    [
        lambda n: b'["' + b'\\"' * n + b'"]',  # one string of escaped quotes
        lambda n: b'["' + b'\\"' * n,  # the same, never closed
        lambda n: b'"a' * (n // 2) + b"\\",  # many strings, the last one left open on a backslash
    ],
)
def test_the_bound_is_linear_on_pathological_quotes(build: Callable[[int], bytes]) -> None:
    """8 MB of quotes and backslashes cost at most ~8x the CPU of 1 MB (linear; backtracking
    would be ~64x), and under a second of CPU: measured as this thread's CPU time, the best of
    three, so neither a loaded machine nor another thread of the test process fails it (a CI
    run measured with the process's CPU time saw 26x once)."""
    small, large = build(500_000), build(4_000_000)
    value_bound(small)  # warm

    def cpu_s(raw: bytes) -> float:
        times = []
        for _ in range(3):
            started = time.thread_time()
            value_bound(raw)
            times.append(time.thread_time() - started)
        return min(times)

    small_s, large_s = cpu_s(small), cpu_s(large)
    assert large_s < 1.0
    assert large_s < 24 * max(small_s, 0.005)


def test_a_body_with_more_values_than_its_items_allow_is_refused_unparsed() -> None:
    """Over the value bound the body is refused as too many items without json.loads."""
    raw = b'{"items": [' + b",".join([b"[]"] * (values_allowed(10) + 1)) + b"]}"
    with pytest.raises(ApiError) as refused:
        parse_bounded(raw, max_items=10)
    assert (refused.value.status, refused.value.code) == (413, "too_many_items")


def test_a_valid_body_at_the_cap_is_parsed_once_and_handed_on() -> None:
    """A job of exactly `max_items` full items passes both checks and comes back parsed."""
    body = {
        "kind": "tts",
        "provider": "slng",
        "model": "m",
        "voice": "v",
        "options": {"format": "wav", "transcript_formats": ["json", "txt", "srt", "vtt"]},
        "output": {"prefix": "p"},
        "items": [{"id": str(i), "text": "t", "voice": "v", "source": "s"} for i in range(10)],
    }
    assert parse_bounded(json.dumps(body).encode(), max_items=10) == body
