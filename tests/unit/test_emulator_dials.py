"""The emulator's dials: concurrency cap, injected faults, magic tokens, scripts and the log."""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

import httpx
import pytest

from emulator.config import ConfigError, EmulatorConfig, config_from_options
from emulator.dials import Dials, Fault
from tests.unit.emulator_client import AURA_EN, run

KEY = "sk-secret-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


async def speak(client: httpx.AsyncClient, text: str = "hello", key: str = KEY) -> httpx.Response:
    body = {"text": text, "model": "aura-2-thalia-en"}
    return await client.post(AURA_EN, json=body, headers={"Authorization": f"Bearer {key}"})


def test_concurrency_cap_rejects_with_retry_after_and_is_never_exceeded() -> None:
    """With a cap of 3, 20 simultaneous slow requests get 429s and at most 3 run at once."""

    async def check(client: httpx.AsyncClient) -> tuple[list[httpx.Response], Any]:
        responses = await asyncio.gather(*(speak(client) for _ in range(20)))
        return list(responses), (await client.get("/_emulator/stats")).json()

    responses, stats = run(check, EmulatorConfig(concurrency=3, latency_ms=50, retry_after_s=2))
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 3
    rejected = [r for r in responses if r.status_code == 429]
    assert len(rejected) == 17
    assert rejected[0].json() == {"error": "Too many concurrent requests", "status": 429}
    assert rejected[0].headers["Retry-After"] == "2"
    assert stats["max_in_flight"] == 3
    assert stats["in_flight"] == 0
    assert stats["by_status"] == {"200": 3, "429": 17}


def test_cap_is_per_api_key() -> None:
    """Two keys each get their own cap of one in-flight request."""

    async def check(client: httpx.AsyncClient) -> list[int]:
        responses = await asyncio.gather(speak(client, key="a"), speak(client, key="b"))
        return [r.status_code for r in responses]

    assert run(check, EmulatorConfig(concurrency=1, latency_ms=30)) == [200, 200]


@pytest.mark.parametrize(
    ("kind", "status", "body"),
    [
        ("500", 500, {"error": "Service error", "details": "Internal processing error"}),
        ("503", 503, {"error": "Service unavailable", "status": 503}),
        ("429", 429, {"error": "Too many requests", "status": 429}),
        ("timeout", 504, {"error": "Gateway timeout", "status": 504}),
    ],
)
def test_fault_rate_one_always_injects_the_kind(kind: str, status: int, body: Any) -> None:
    """fault_rate=1 with a single kind answers every request with that fault's status and body."""
    config = EmulatorConfig(fault_rate=1.0, fault_kinds=(kind,), timeout_s=0.05, retry_after_s=0.5)
    started = time.perf_counter()
    response = run(speak, config)
    assert response.status_code == status
    assert response.json() == body
    assert ("Retry-After" in response.headers) == (kind == "429")
    if kind == "429":
        assert response.headers["Retry-After"] == "0.5"
    if kind == "timeout":
        assert time.perf_counter() - started >= 0.05


def test_fail_token_fails_exactly_twice_then_succeeds() -> None:
    """`[[fail:2]]` makes the first two requests with that text 503 and the third succeed."""

    async def check(client: httpx.AsyncClient) -> list[int]:
        return [(await speak(client, "retry me [[fail:2]]")).status_code for _ in range(4)]

    assert run(check) == [503, 503, 200, 200]


def test_status_and_latency_tokens() -> None:
    """`[[status:400]]` always rejects; `[[latency:MS]]` delays that request by MS."""

    async def check(client: httpx.AsyncClient) -> tuple[int, int, float]:
        rejected = await speak(client, "bad [[status:400]]")
        again = await speak(client, "bad [[status:400]]")
        started = time.perf_counter()
        await speak(client, "slow [[latency:80]]")
        return rejected.status_code, again.status_code, time.perf_counter() - started

    first, second, elapsed = run(check)
    assert first == second == 400
    assert elapsed >= 0.08


def test_admin_script_queues_failures_for_matching_paths() -> None:
    """A script fails the next N matching requests with its status and Retry-After, then stops."""
    script = {"fail_next": 2, "status": 429, "retry_after": 3, "path_contains": "/v1/tts/"}

    async def check(client: httpx.AsyncClient) -> list[httpx.Response]:
        assert (await client.post("/_emulator/script", json=script)).status_code == 200
        stt = await client.post(
            "/slng/v1/stt/slng/deepgram/nova:3-en", headers=AUTH, files={"audio": ("a", b"")}
        )
        return [stt] + [await speak(client) for _ in range(3)]

    stt, *tts = run(check)
    assert stt.status_code == 400  # the path did not match, so the real answer came back
    assert [r.status_code for r in tts] == [429, 429, 200]
    assert tts[0].headers["Retry-After"] == "3"


def test_script_rejects_bad_bodies() -> None:
    """A script whose status is not an error code is refused with 400."""
    response = run(lambda c: c.post("/_emulator/script", json={"fail_next": 1, "status": 200}))
    assert response.status_code == 400


def test_request_log_records_calls_without_the_api_key() -> None:
    """The log has one entry per request with a key fingerprint, and never the key itself."""

    async def check(client: httpx.AsyncClient) -> tuple[str, list[Any]]:
        await speak(client, "hello [[fail:1]]")
        await speak(client, "hello [[fail:1]]")
        response = await client.get("/_emulator/requests")
        return response.text, response.json()

    raw, records = run(check)
    assert KEY not in raw
    assert [r["status"] for r in records] == [503, 200]
    assert records[0]["fault"] == "fail-token"
    assert records[0]["key_fingerprint"] == hashlib.sha256(KEY.encode()).hexdigest()[:8]
    assert records[1]["model"] == "slng/deepgram/aura:2-en"
    assert records[1]["text_chars"] == len("hello [[fail:1]]")


def test_clearing_requests_resets_log_counters_and_fail_tokens() -> None:
    """DELETE /_emulator/requests empties the log and stats and restarts `[[fail:N]]` counts."""

    async def check(client: httpx.AsyncClient) -> tuple[Any, Any, int]:
        await speak(client, "x [[fail:1]]")
        await client.delete("/_emulator/requests")
        log = (await client.get("/_emulator/requests")).json()
        stats = (await client.get("/_emulator/stats")).json()
        return log, stats, (await speak(client, "x [[fail:1]]")).status_code

    log, stats, status = run(check)
    assert log == []
    assert stats["total"] == 0
    assert status == 503


def test_config_patch_changes_runtime_dials_only() -> None:
    """PATCH /_emulator/config applies runtime fields and refuses fixed or invalid ones."""

    async def check(client: httpx.AsyncClient) -> tuple[httpx.Response, ...]:
        return (
            await client.patch("/_emulator/config", json={"fault_rate": 1, "fault_kinds": ["503"]}),
            await speak(client),
            await client.patch("/_emulator/config", json={"max_text_chars": 5}),
            await client.patch("/_emulator/config", json={"fault_rate": 2}),
            await client.get("/_emulator/health"),
        )

    changed, faulted, fixed, invalid, health = run(check)
    assert changed.json()["fault_rate"] == 1.0
    assert faulted.status_code == 503
    assert fixed.status_code == invalid.status_code == 400
    assert health.json() == {"ok": True}


def test_config_rejects_unknown_fault_kinds() -> None:
    """A config naming a fault kind the emulator cannot produce fails at construction."""
    with pytest.raises(ValueError, match="unknown fault kinds"):
        EmulatorConfig(fault_kinds=("418",))
    with pytest.raises(ConfigError):
        EmulatorConfig().with_changes({"seed": 3})


def test_command_line_values_become_the_config() -> None:
    """`speechbatch emulator` options and EMULATOR_API_KEYS end up in EmulatorConfig."""
    config = config_from_options(
        fault_kinds="503, timeout",
        api_keys=("k3",),
        environ={"EMULATOR_API_KEYS": "k1, k2"},
        concurrency=4,
    )
    assert config.concurrency == 4
    assert config.fault_kinds == ("503", "timeout")
    assert config.api_keys == {"k1", "k2", "k3"}


def test_max_text_chars_is_a_command_line_option(monkeypatch: pytest.MonkeyPatch) -> None:
    """`speechbatch emulator --max-text-chars 5000` reaches the config, under which SLNG's
    Soniox bridge takes a 5,000-character text and refuses one more."""
    from click.testing import CliRunner

    from speechbatch import cli, processes

    started: list[EmulatorConfig] = []
    monkeypatch.setattr(
        processes, "run_emulator", lambda host, port, config: started.append(config)
    )
    result = CliRunner().invoke(cli.main, ["emulator", "--max-text-chars", "5000"], env={})
    assert result.exit_code == 0, result.output
    assert started[0].max_text_chars == 5000

    async def check(client: httpx.AsyncClient) -> list[int]:
        soniox = "/slng/v1/bridges/unmute/tts/soniox/tts-rt:v1"
        answers = [
            await client.post(soniox, headers=AUTH, json={"text": "x" * n}) for n in (5000, 5001)
        ]
        return [a.status_code for a in answers]

    assert run(check, started[0]) == [200, 400]


def test_stream_pacing_dials_are_runtime_and_checked() -> None:
    """ttfb_ms and realtime_factor change at runtime and show in the config view; negative or
    non-finite values are refused."""

    async def check(client: httpx.AsyncClient) -> tuple[httpx.Response, ...]:
        return (
            await client.patch("/_emulator/config", json={"ttfb_ms": 250, "realtime_factor": 1.5}),
            await client.patch("/_emulator/config", json={"ttfb_ms": -1}),
            await client.patch("/_emulator/config", json={"realtime_factor": -0.5}),
            await client.get("/_emulator/config"),
        )

    changed, negative_ttfb, negative_factor, view = run(check)
    assert changed.status_code == 200
    assert negative_ttfb.status_code == negative_factor.status_code == 400
    assert "ttfb_ms" in negative_ttfb.json()["error"]
    assert (view.json()["ttfb_ms"], view.json()["realtime_factor"]) == (250.0, 1.5)
    with pytest.raises(ValueError, match="realtime_factor"):
        EmulatorConfig(realtime_factor=float("nan"))
    with pytest.raises(ValueError, match="ttfb_ms"):
        EmulatorConfig(ttfb_ms=-5)
    with pytest.raises(ConfigError, match="ttfb_ms must be a number"):
        EmulatorConfig().with_changes({"ttfb_ms": "300"})


# -- rate_limit_rps ------------------------------------------------------------------------


def test_rate_limit_config_is_validated() -> None:
    """rate_limit_rps must be a finite number >= 0, at construction and in a runtime change."""
    with pytest.raises(ValueError, match="rate_limit_rps"):
        EmulatorConfig(rate_limit_rps=-1)
    with pytest.raises(ValueError, match="rate_limit_rps"):
        EmulatorConfig(rate_limit_rps=float("inf"))
    with pytest.raises(ConfigError, match="rate_limit_rps must be a number"):
        EmulatorConfig().with_changes({"rate_limit_rps": "10"})
    with pytest.raises(ConfigError):
        EmulatorConfig().with_changes({"rate_limit_rps": -0.5})
    assert EmulatorConfig().with_changes({"rate_limit_rps": 25}).rate_limit_rps == 25.0


def test_rate_bucket_holds_one_second_and_refills_at_the_rate() -> None:
    """With rate 4 a fresh key gets 4 at once, then one more per 0.25 s, and never more."""
    now = [100.0]
    dials = Dials(EmulatorConfig(rate_limit_rps=4), clock=lambda: now[0])
    assert [dials.try_rate("k") for _ in range(4)] == [None] * 4
    refused = dials.try_rate("k")
    assert refused == Fault("rate", 429, 0.25)
    now[0] += 0.125
    refused = dials.try_rate("k")
    assert refused is not None and refused.retry_after == 0.125
    now[0] += 0.125
    assert dials.try_rate("k") is None
    assert dials.try_rate("k") is not None
    assert dials.try_rate("other") is None  # each key has its own bucket
    now[0] += 60  # a long pause refills only up to one second's worth
    assert [dials.try_rate("k") is None for _ in range(5)] == [True] * 4 + [False]
    assert dials.stats()["rate_limited"] == 4


def test_requests_over_the_rate_get_429_with_retry_after_and_are_counted() -> None:
    """Over rate_limit_rps the emulator answers 429 + Retry-After and counts it as rate_limited."""

    async def check(client: httpx.AsyncClient) -> tuple[list[httpx.Response], Any]:
        responses = [await speak(client) for _ in range(5)]
        return responses, (await client.get("/_emulator/stats")).json()

    responses, stats = run(check, EmulatorConfig(rate_limit_rps=2))
    assert [r.status_code for r in responses] == [200, 200, 429, 429, 429]
    rejected = responses[2]
    assert rejected.json() == {"error": "Rate limit exceeded", "status": 429}
    assert 0 < float(rejected.headers["Retry-After"]) <= 0.5
    assert 0 < int(rejected.headers["retry-after-ms"]) <= 500
    assert stats["rate_limited"] == 3
    assert stats["by_status"] == {"200": 2, "429": 3}


def test_rate_limit_is_a_runtime_dial_and_zero_turns_it_off() -> None:
    """PATCH sets rate_limit_rps (the next request over it is refused); 0 removes the limit."""

    async def check(client: httpx.AsyncClient) -> tuple[float, list[int], list[int], Any]:
        patched = await client.patch("/_emulator/config", json={"rate_limit_rps": 1})
        limited = [(await speak(client)).status_code for _ in range(2)]
        await client.patch("/_emulator/config", json={"rate_limit_rps": 0})
        unlimited = [(await speak(client)).status_code for _ in range(5)]
        records = (await client.get("/_emulator/requests")).json()
        return patched.json()["rate_limit_rps"], limited, unlimited, records

    rate, limited, unlimited, records = run(check)
    assert rate == 1.0
    assert limited == [200, 429]
    assert unlimited == [200] * 5
    assert records[1]["fault"] == "rate"


def test_rate_limited_requests_never_take_a_concurrency_slot() -> None:
    """A request refused for rate does not count in flight, so the cap sees only admitted ones."""

    async def check(client: httpx.AsyncClient) -> Any:
        await asyncio.gather(*(speak(client) for _ in range(6)))
        return (await client.get("/_emulator/stats")).json()

    stats = run(check, EmulatorConfig(rate_limit_rps=2, concurrency=5, latency_ms=30))
    assert stats["by_status"] == {"200": 2, "429": 4}
    assert stats["rate_limited"] == 4
    assert stats["max_in_flight"] == 2
