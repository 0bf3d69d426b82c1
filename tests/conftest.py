"""Shared fixtures: real Redis, PostgreSQL, SQLite and S3 (SeaweedFS), started only when asked.

Service fixtures are session-scoped and lazy: a run that requests none of them starts nothing.
Per-test fixtures hand out empty resources (a fresh PostgreSQL database, a fresh bucket, a
fresh folder) and remove them afterwards, whether the test passed or not.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from storage import s3
from storage.localfs import LocalObjectStore
from storage.memory import MemoryObjectStore
from storage.objects import ObjectStore
from storage.s3 import S3ObjectStore
from tests.services import (
    TEST_REDIS_DB,
    Service,
    create_database,
    drop_database,
    ensure_postgres,
    ensure_redis,
    ensure_seaweedfs,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import ObjectIdentifierTypeDef


def _redis_db() -> int:
    """Database 15, or under pytest-xdist one per test process (15, 13, 12, …; 14 is the
    benchmarks'): each process flushes its own."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    index = int(worker.removeprefix("gw")) if worker.startswith("gw") else 0
    return TEST_REDIS_DB if index == 0 else TEST_REDIS_DB - 1 - index


@pytest.fixture(scope="session")
def redis_service() -> Iterator[Service]:
    """Redis: the machine's on 6379 (a database of this test process, flushed) or a private
    redis-server."""
    service = ensure_redis(_redis_db())
    yield service
    service.stop()


@pytest.fixture(scope="session")
def redis_url(redis_service: Service) -> str:
    """`redis://127.0.0.1:<port>/<db>` of the test Redis."""
    return redis_service.url


@pytest.fixture(scope="session")
def postgres_service() -> Iterator[Service]:
    """PostgreSQL: the machine's on 5432 or a private temporary cluster."""
    service = ensure_postgres()
    yield service
    service.stop()


@pytest.fixture(scope="session")
def postgres_admin_url(postgres_service: Service) -> str:
    """A URL allowed to create and drop databases (the `test` database of the server)."""
    return postgres_service.url


@pytest.fixture
def pg_url(postgres_admin_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database `sb_<hex>`, dropped after the test."""
    url = create_database(postgres_admin_url)
    yield url
    drop_database(url)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """An SQLite file URL in the test's temp dir (the file does not exist yet)."""
    return f"sqlite:///{tmp_path / 'speechbatch.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    """An empty database of each kind; PostgreSQL starts only for the `postgresql` case."""
    fixture = "sqlite_url" if request.param == "sqlite" else "pg_url"
    url: str = request.getfixturevalue(fixture)
    return url


@pytest.fixture(scope="session")
def seaweedfs_service() -> Iterator[Service]:
    """A private SeaweedFS (`weed server -s3`) for this session."""
    service = ensure_seaweedfs()
    yield service
    service.stop()


@pytest.fixture(scope="session")
def s3_endpoint_url(seaweedfs_service: Service) -> str:
    """`http://127.0.0.1:<port>` of the test S3 endpoint."""
    return seaweedfs_service.url


@pytest.fixture(scope="session")
def s3_client(s3_endpoint_url: str) -> Iterator[S3Client]:
    """One boto3 S3 client for the session, configured as production builds it."""
    client = s3.s3_client(s3_endpoint_url)
    yield client
    client.close()


def _remove_bucket(client: S3Client, bucket: str) -> None:
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys: list[ObjectIdentifierTypeDef] = [
            {"Key": item["Key"]} for item in page.get("Contents", [])
        ]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
    client.delete_bucket(Bucket=bucket)


@pytest.fixture
def s3_store(s3_client: S3Client) -> Iterator[S3ObjectStore]:
    """An S3ObjectStore on a fresh bucket `t-<hex>`, emptied and deleted after the test."""
    store = S3ObjectStore(s3_client, f"t-{uuid.uuid4().hex[:16]}")
    store.ensure_exists()
    yield store
    _remove_bucket(s3_client, store.bucket)


@pytest.fixture
def local_store(tmp_path: Path) -> LocalObjectStore:
    """A LocalObjectStore rooted in the test's temp dir."""
    return LocalObjectStore(tmp_path / "objects")


@pytest.fixture
def memory_store() -> MemoryObjectStore:
    """The in-memory store that unit tests use in place of a real one."""
    return MemoryObjectStore()


@pytest.fixture(params=["s3", "local", "memory"])
def object_store(request: pytest.FixtureRequest) -> ObjectStore:
    """Each ObjectStore in turn (the in-memory one must keep the same contract), empty;
    SeaweedFS starts only for the `s3` case."""
    store: ObjectStore = request.getfixturevalue(f"{request.param}_store")
    return store
