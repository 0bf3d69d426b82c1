"""Fixtures shared by the integration modules: the API app on each database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_api import Api, running_api


@pytest.fixture
def api(database_url: str, redis_url: str, tmp_path: Path) -> Iterator[Api]:
    """The API app (in-process client) on PostgreSQL and SQLite, storing in a temp folder."""
    with running_api(database_url, redis_url, storage_url=f"file://{tmp_path / 'objects'}") as a:
        yield a


@pytest.fixture
def sqlite_api(sqlite_url: str, redis_url: str, tmp_path: Path) -> Iterator[Api]:
    """The same API on SQLite only, for behaviour that does not depend on the database."""
    with running_api(sqlite_url, redis_url, storage_url=f"file://{tmp_path / 'objects'}") as a:
        yield a
