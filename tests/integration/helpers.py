"""Small builders shared by integration tests (a migrated database, a tenant, a job)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from jobs.migrate import upgrade_to_head
from jobs.schemas import JobCreate
from jobs.service import Submitted, ensure_tenant, submit_job
from storage.db import make_engine, make_session_factory


class Recorder:
    """A publisher that remembers what it was asked to publish."""

    def __init__(self) -> None:
        self.published: list[tuple[int, float]] = []

    def __call__(self, ids: Sequence[int], countdown: float = 0.0) -> None:
        self.published.extend((i, countdown) for i in ids)

    @property
    def ids(self) -> list[int]:
        return [i for i, _ in self.published]


def migrated_sessions(database_url: str) -> sessionmaker[Session]:
    upgrade_to_head(database_url)
    return make_session_factory(make_engine(database_url))


def tts_job(
    sessions: sessionmaker[Session],
    texts: list[str],
    *,
    publish: Recorder | None = None,
    tenant: str = "acme",
    **fields: Any,
) -> Submitted:
    tenant_id = ensure_tenant(sessions, tenant).id
    body = JobCreate.model_validate(
        {"kind": "tts", "provider": "local", "items": [{"text": t} for t in texts], **fields}
    )
    return submit_job(
        sessions,
        tenant_id,
        body,
        idempotency_key=None,
        publish=publish or Recorder(),
        max_items=100_000,
    )
