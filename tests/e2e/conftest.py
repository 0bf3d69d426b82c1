"""Fixtures that start the whole stack as processes for end-to-end tests."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.e2e.stack import EMULATOR_KEY, Stack, answers
from tests.services import free_port


@pytest.fixture(params=["postgresql", "sqlite"])
def stack(
    request: pytest.FixtureRequest,
    redis_url: str,
    s3_endpoint_url: str,
    s3_client,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> Iterator[Stack]:
    """Emulator, API, one worker and beat over Redis, SeaweedFS and PostgreSQL or SQLite."""
    database_url = request.getfixturevalue(
        "pg_url" if request.param == "postgresql" else "sqlite_url"
    )
    bucket = f"e2e-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=bucket)
    redis.Redis.from_url(redis_url).flushdb()
    api_port, emulator_port = free_port(), free_port()
    env = {
        **os.environ,
        "SPEECHBATCH_DATABASE_URL": database_url,
        "SPEECHBATCH_BROKER_URL": redis_url,
        "SPEECHBATCH_STORAGE_URL": f"s3://{bucket}/out",
        "SPEECHBATCH_S3_ENDPOINT_URL": s3_endpoint_url,
        "SPEECHBATCH_SLNG_BASE_URL": f"http://127.0.0.1:{emulator_port}/slng",
        "SLNG_API_KEY": EMULATOR_KEY,
        "EMULATOR_API_KEYS": EMULATOR_KEY,
        "SPEECHBATCH_PROVIDER_TIMEOUT_SECONDS": "3",
        "SPEECHBATCH_LEASE_SECONDS": "30",
    }
    env.pop("SPEECHBATCH_API_URL", None)
    stack = Stack(
        env=env,
        workdir=tmp_path,
        api_url=f"http://127.0.0.1:{api_port}",
        emulator_url=f"http://127.0.0.1:{emulator_port}",
    )
    try:
        stack.spawn(
            "emulator",
            "emulator",
            "--port",
            str(emulator_port),
            "--seed",
            "7",
            ready=answers(f"{stack.emulator_url}/_emulator/health"),
        )
        migrated = stack.run_cli("migrate")
        assert migrated.returncode == 0, migrated.stderr
        created = stack.run_cli("keys", "create", "--tenant", "e2e")
        assert created.returncode == 0, created.stderr
        stack.api_key = created.stdout.strip()
        stack.spawn(
            "api", "api", "--port", str(api_port), ready=answers(f"{stack.api_url}/healthz")
        )
        stack.spawn("worker", "worker", "--concurrency", "8")
        stack.spawn("beat", "beat", "--interval", "1")
        yield stack
    finally:
        stack.stop()
