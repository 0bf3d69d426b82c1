"""The poll endpoint's cost: GET /v1/jobs/{id} is the request clients repeat most, so its
database round trips and thread hops are pinned here (bench/bulk_submit.py times them)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio.to_thread
import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import Connection, Engine, event

from jobs.api import create_app
from jobs.api.deps import Resources
from jobs.migrate import upgrade_to_head
from jobs.settings import Settings
from jobs.tenants import create_api_key
from storage.db import make_engine, make_session_factory
from storage.publisher import QUEUE

pytestmark = pytest.mark.integration


@pytest.fixture
def poll(database_url: str, redis_url: str, tmp_path: Path) -> Iterator[tuple[TestClient, str]]:
    """An in-process API, one job of two items, and the headers of its owner's key."""
    upgrade_to_head(database_url)
    key = create_api_key(make_session_factory(make_engine(database_url)), "acme")
    settings = Settings(
        database_url=database_url,
        broker_url=redis_url,
        storage_url=f"file://{tmp_path / 'objects'}",
    )
    broker = redis.Redis.from_url(redis_url)
    with TestClient(create_app(settings)) as client:
        client.headers["Authorization"] = f"Bearer {key}"
        body = {"kind": "tts", "provider": "slng", "items": [{"text": "a"}, {"text": "b"}]}
        created = client.post("/v1/jobs", json=body)
        assert created.status_code == 202, created.text
        yield client, created.headers["Location"]
    broker.delete(QUEUE)
    broker.close()


def resources_of(client: TestClient) -> Resources:
    res: Resources = client.app.state.resources  # type: ignore[attr-defined]
    res.keys.ttl_s = 3600.0  # keep the key cached whatever the pace of the test
    return res


def engine_of(res: Resources) -> Engine:
    bind = res.sessions.kw["bind"]
    assert isinstance(bind, Engine)
    return bind


def open_transaction(dbapi_connection: Any) -> bool:
    """Whether the driver connection holds a transaction (psycopg 3 or sqlite3)."""
    info = getattr(dbapi_connection, "info", None)
    if info is not None and hasattr(info, "transaction_status"):
        return bool(info.transaction_status.name != "IDLE")
    return bool(dbapi_connection.in_transaction)


def test_a_warm_poll_runs_one_select_outside_any_transaction(
    poll: tuple[TestClient, str],
) -> None:
    """A poll with a cached key sends one SELECT and opens no transaction (no BEGIN/ROLLBACK)."""
    client, location = poll
    engine = engine_of(resources_of(client))
    assert client.get(location).status_code == 200  # caches the key, warms the pool
    executed: list[tuple[str, bool]] = []

    def after_execute(conn: Connection, _cursor: Any, statement: str, *_: Any) -> None:
        executed.append((statement, open_transaction(conn.connection.dbapi_connection)))

    event.listen(engine, "after_cursor_execute", after_execute)
    try:
        response = client.get(location)
    finally:
        event.remove(engine, "after_cursor_execute", after_execute)
    assert response.status_code == 200
    assert response.json()["counts"]["total"] == 2
    assert len(executed) == 1, executed
    statement, in_transaction = executed[0]
    assert statement.lstrip().upper().startswith("SELECT")
    assert not in_transaction


def test_a_warm_poll_hops_to_a_worker_thread_once(
    poll: tuple[TestClient, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the key cached, only the endpoint's own database read leaves the event loop."""
    client, location = poll
    resources_of(client)
    assert client.get(location).status_code == 200
    hops: list[str] = []
    run_sync = anyio.to_thread.run_sync

    async def counting(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        hops.append(getattr(func, "__name__", repr(func)))
        return await run_sync(func, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counting)
    assert client.get(location).status_code == 200
    assert len(hops) == 1, hops


def test_a_poll_sees_a_change_committed_just_before_it(poll: tuple[TestClient, str]) -> None:
    """Autocommit reads are not stale: a cancel is visible to the very next poll."""
    client, location = poll
    assert client.get(location).json()["status"] == "queued"
    assert client.post(f"{location}/cancel").status_code == 200
    polled = client.get(location)
    assert polled.json()["status"] == "canceled"
    assert polled.json()["counts"]["canceled"] == 2
    assert "Retry-After" not in polled.headers


def test_an_unknown_key_is_still_refused_after_a_known_one_is_cached(
    poll: tuple[TestClient, str],
) -> None:
    """The cached fast path answers only for the exact key it verified."""
    client, location = poll
    assert client.get(location).status_code == 200
    wrong = client.get(location, headers={"Authorization": "Bearer sb_000000000000_nope"})
    assert wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "unauthorized"
