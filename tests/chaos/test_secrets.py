"""S1: no secret in plaintext wherever we keep data: process logs, server logs, DB, broker."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import redis
from sqlalchemy import create_engine, text

from tests.chaos.conftest import ChaosStack, stop_all
from tests.e2e.stack import EMULATOR_KEY

pytestmark = [pytest.mark.chaos]


def database_dump(database_url: str) -> str:
    """Every row of every table in the public schema, as PostgreSQL's text form of the row."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            tables = conn.execute(
                text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            ).scalars()
            lines = []
            for table in list(tables):
                rows = conn.execute(text(f'SELECT t::text FROM "{table}" t')).scalars()  # noqa: S608 - names from pg_tables
                lines += [f"{table}: {row}" for row in rows]
    finally:
        engine.dispose()
    return "\n".join(lines)


def broker_dump(url: str) -> str:
    """Every key and value in the Redis broker (queues, unacked hashes, bindings)."""
    parts: list[str] = []
    with redis.Redis.from_url(url) as client:
        for key in client.scan_iter():
            kind = client.type(key).decode()  # type: ignore[no-untyped-call]
            if kind == "string":
                value: object = client.get(key)
            elif kind == "list":
                value = client.lrange(key, 0, -1)
            elif kind == "hash":
                value = client.hgetall(key)
            elif kind == "set":
                value = client.smembers(key)
            elif kind == "zset":
                value = client.zrange(key, 0, -1)
            else:
                value = kind
            parts.append(f"{key!r}: {value!r}")
    return "\n".join(parts)


def test_no_plaintext_key_in_logs_database_or_broker(chaos_stack: ChaosStack) -> None:
    """After a job with a provider 401 and a wrong API key, no key shows up in any log or table."""
    stack = chaos_stack
    api_key = stack.api_key
    prefix = api_key.split("_")[1]
    wrong_key = f"sb_{prefix}_{'W' * 27}"  # our prefix, a wrong secret: looked up, then refused
    items = [{"id": f"s-{n}", "text": f"Secret test line {n}."} for n in range(20)]
    items.append({"id": "auth", "text": "The provider refuses this [[status:401]]"})
    body = {
        "kind": "tts",
        "provider": "slng",
        "model": "slng/deepgram/aura:2-en",
        "voice": "aura-2-thalia-en",
        "items": items,
    }
    with stack.client() as client:
        created = client.post("/v1/jobs", json=body)
    assert created.status_code == 202, created.text
    job_id = created.json()["id"]
    job = stack.wait_for_job(job_id, timeout=60)
    with stack.client() as client:
        client.headers["Authorization"] = f"Bearer {wrong_key}"
        assert client.get(f"/v1/jobs/{job_id}").status_code == 401
        assert client.get("/v1/jobs").status_code == 401
    refused = next(i for i in stack.items(job_id) if i["id"] == "auth")
    assert (job["counts"]["succeeded"], job["counts"]["failed"]) == (20, 1), job["counts"]
    assert refused["error"]["code"] == "provider_auth_failed", refused

    stop_all(stack.procs)  # so every log line is on disk
    services = (stack.redis, stack.postgres, stack.seaweedfs)
    logs: dict[str, str] = {
        str(path): path.read_text(errors="replace") for path in stack.workdir.glob("*.log")
    }
    for service in services:
        if service.process is not None:
            logs[str(service.process.log_path)] = Path(service.process.log_path).read_text(
                errors="replace"
            )
    logs["database"] = database_dump(stack.database_url)
    logs["broker"] = broker_dump(stack.redis.url)

    # Controls: the places searched really hold this run's data.
    assert {"emulator", "api", "worker-1", "worker-2", "beat"} <= {Path(name).stem for name in logs}
    assert any("outcome failed" in body for body in logs.values()), "worker logs are empty"
    assert hashlib.sha256(api_key.encode()).hexdigest() in logs["database"]

    secrets = {"API key": api_key, "API key secret": api_key.split("_", 2)[2],
               "wrong API key": wrong_key, "provider key": EMULATOR_KEY}  # fmt: skip
    leaks = [
        f"{what} in {where}"
        for where, body in logs.items()
        for what, secret in secrets.items()
        if secret in body
    ]
    assert not leaks, leaks
