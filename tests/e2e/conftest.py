"""Fixtures that start the whole stack as processes for end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.stack import Stack, running_stack


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
    with running_stack(database_url, redis_url, s3_endpoint_url, s3_client, tmp_path) as stack:
        yield stack
