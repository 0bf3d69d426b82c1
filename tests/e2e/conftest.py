"""Fixtures that start the whole stack as processes for end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.stack import Stack, running_postgres_stack, running_stack


@pytest.fixture(scope="module", params=["postgresql", "sqlite"])
def stack(
    request: pytest.FixtureRequest,
    redis_url: str,
    s3_endpoint_url: str,
    s3_client: Any,
    postgres_admin_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    """Emulator, API, one worker and beat over Redis, SeaweedFS and PostgreSQL or SQLite, one
    stack per module and database: starting four processes costs more than most tests, and
    jobs never see each other (each has its own id and keys). A test that turns an emulator
    dial turns it back."""
    workdir = tmp_path_factory.mktemp(f"stack-{request.param}")
    if request.param == "sqlite":
        sqlite_url = f"sqlite:///{workdir / 'speechbatch.db'}"
        with running_stack(sqlite_url, redis_url, s3_endpoint_url, s3_client, workdir) as running:
            yield running
        return
    with running_postgres_stack(
        postgres_admin_url, redis_url, s3_endpoint_url, s3_client, workdir
    ) as running:
        yield running
