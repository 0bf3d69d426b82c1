"""Provider state read outside the workers: the real throttle and circuit write Redis, and
`jobs.provider_states` and `GET /v1/providers` read it back (or say Redis is down)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from jobs.api import create_app
from jobs.catalog import PROVIDERS
from jobs.catalog_limits import provider_limits
from jobs.migrate import upgrade_to_head
from jobs.provider_states import ProviderState, read_provider_states
from jobs.settings import Settings
from jobs.tenants import create_api_key
from storage.db import make_engine, make_session_factory
from storage.provider_keys import credential_fingerprint
from tests.integration.test_api import running_api
from tests.services import free_port
from workers.circuit import RedisCircuit
from workers.throttle import CallOutcome, ProviderThrottle

pytestmark = pytest.mark.integration


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis[Any]]:
    with redis.Redis.from_url(redis_url) as conn:
        yield conn


@pytest.fixture
def settings(redis_url: str) -> Settings:
    """Settings with fresh Deepgram and Smallest keys, so no other test's state is seen."""
    return Settings(
        broker_url=redis_url,
        DEEPGRAM_API_KEY=f"dg-{uuid.uuid4().hex}",
        SMALLEST_API_KEY=f"sm-{uuid.uuid4().hex}",
        provider_limits="deepgram=15/4",
    )


def by_name(states: list[ProviderState]) -> dict[str, ProviderState]:
    return {s.limits_name: s for s in states}


def test_rows_cover_every_hosted_throttle_with_configured_limits(settings: Settings) -> None:
    """Each hosted provider and each kind with limits of its own is a row, in catalog order,
    with the configured limits (overrides applied), its key's fingerprint and nothing held."""
    states = read_provider_states(settings)
    names = [s.limits_name for s in states]
    assert "local" not in {s.provider for s in states}
    assert names[: names.index("smallest-stt") + 1] == ["slng", "smallest", "smallest-stt"]
    assert [s.provider for s in states] == sorted(
        (s.provider for s in states), key=list(PROVIDERS).index
    )
    rows = by_name(states)
    assert rows["smallest"].kinds == ("tts",) and rows["smallest-stt"].kinds == ("stt",)
    assert rows["slng"].kinds == ("tts", "stt")
    deepgram = rows["deepgram"]
    assert (deepgram.max_concurrency, deepgram.max_rps) == (15, 4.0)
    assert (deepgram.effective_concurrency, deepgram.effective_rps) == (15, 4.0)
    assert deepgram.credential == credential_fingerprint(settings.provider_api_key("deepgram"))
    assert deepgram.configured and deepgram.in_flight == 0 and deepgram.circuit == "closed"
    assert deepgram.error is None
    stt = rows["smallest-stt"]
    expected = provider_limits()["smallest-stt"]
    assert (stt.max_concurrency, stt.max_rps) == (expected.max_concurrency, expected.max_rps)
    assert rows["openai"].configured is bool(settings.provider_api_key("openai"))


def test_reader_sees_held_permits_cut_limits_and_an_open_circuit(
    settings: Settings, client: redis.Redis[Any]
) -> None:
    """Permits held by the real throttle show as in_flight, lapsed ones do not; 429s reported
    to it show as lowered effective limits; failures in the real circuit show it open."""
    fp = credential_fingerprint(settings.provider_api_key("deepgram"))
    limits = provider_limits(settings.provider_limits)
    throttle = ProviderThrottle(client, limits, lease_s=30)
    held = [throttle.acquire("deepgram", fp, max_wait_s=1) for _ in range(2)]
    assert all(held)
    short = ProviderThrottle(client, limits, lease_s=0.05)
    assert short.acquire("deepgram", fp, max_wait_s=1) is not None
    time.sleep(0.1)  # that lease lapsed: no worker holds it any more
    assert by_name(read_provider_states(settings))["deepgram"].in_flight == 2

    for permit in held:
        assert permit is not None
        permit.release(CallOutcome.SUCCESS)
    for _ in range(4):  # more than a fifth of a 15-call window answered 429: a cut
        permit = throttle.acquire("deepgram", fp, max_wait_s=2)
        assert permit is not None
        permit.release(CallOutcome.RATE_LIMITED)
    breaker = RedisCircuit(client, failures=2, open_s=30)
    for _ in range(2):
        breaker.failed(("deepgram", fp))

    state = by_name(read_provider_states(settings))["deepgram"]
    assert state.in_flight == 0
    assert state.effective_concurrency == 7 and state.effective_rps == pytest.approx(2.0)
    assert state.circuit == "open" and state.circuit_open_until is not None
    assert state.circuit_open_until.timestamp() == pytest.approx(time.time() + 30, abs=5)
    later = read_provider_states(settings, clock=lambda: time.time() + 60)
    assert by_name(later)["deepgram"].circuit == "half-open"
    assert by_name(read_provider_states(settings))["slng"].circuit == "closed"


def test_redis_down_gives_rows_with_the_error_not_an_exception() -> None:
    """With nothing listening at the broker URL every row still comes back, with configured
    limits, an unknown circuit and `error` saying Redis is unavailable."""
    settings = Settings(broker_url=f"redis://127.0.0.1:{free_port()}/0")
    states = read_provider_states(settings)
    assert states and all(s.error and "redis unavailable" in s.error for s in states)
    assert {s.circuit for s in states} == {"unknown"}
    assert by_name(states)["slng"].max_concurrency == PROVIDERS["slng"].max_concurrency


def test_local_mode_says_there_is_no_shared_state() -> None:
    """Without a broker the rows say local mode keeps no shared state."""
    states = read_provider_states(Settings(broker_url=None))
    assert states and all(s.error and "no broker" in s.error for s in states)


def test_route_needs_a_key_and_answers_the_rows(
    sqlite_url: str, redis_url: str, tmp_path: Path, client: redis.Redis[Any]
) -> None:
    """GET /v1/providers is 401 without a key (the envelope), else the rows with a held
    permit counted, the queue depth, and it is in the OpenAPI schema with its model."""
    key = f"sk-{uuid.uuid4().hex}"
    fp = credential_fingerprint(key)
    overrides = {"storage_url": f"file://{tmp_path}/objects", "SLNG_API_KEY": key}
    with running_api(sqlite_url, redis_url, **overrides) as api:
        permit = ProviderThrottle(client, provider_limits(), lease_s=30).acquire(
            "slng", fp, max_wait_s=1
        )
        assert permit is not None
        refused = api.client.get("/v1/providers")
        answer = api.client.get("/v1/providers", headers=api.auth())
        permit.release()
        schema = api.client.get("/openapi.json").json()
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized"
    assert answer.status_code == 200
    body = answer.json()
    assert body["queue_depth"] == 0
    slng = next(p for p in body["providers"] if p["limits_name"] == "slng")
    assert slng["credential"] == fp and slng["configured"] is True
    assert slng["in_flight"] == 1 and slng["circuit"] == "closed" and slng["error"] is None
    assert key not in answer.text
    ok = schema["paths"]["/v1/providers"]["get"]["responses"]["200"]
    assert ok["content"]["application/json"]["schema"]["$ref"].endswith("/ProvidersOut")


def test_route_answers_200_with_errors_when_redis_is_down(sqlite_url: str, tmp_path: Path) -> None:
    """With Redis unreachable the route still answers 200: every row carries the error and
    the queue depth is null."""
    upgrade_to_head(sqlite_url)
    key = create_api_key(make_session_factory(make_engine(sqlite_url)), "acme")
    settings = Settings(
        database_url=sqlite_url,
        broker_url=f"redis://127.0.0.1:{free_port()}/0",
        storage_url=f"file://{tmp_path}/objects",
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as api:
        answer = api.get("/v1/providers", headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 200
    body = answer.json()
    assert body["queue_depth"] is None
    assert body["providers"] and all("redis unavailable" in p["error"] for p in body["providers"])
