"""Small builders shared by integration tests (a migrated database, a ledger, a job)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from jobs.ledger import ItemLedger
from jobs.migrate import upgrade_to_head
from jobs.schemas import JobCreate
from jobs.service import Submitted, submit_job
from jobs.tenants import ensure_tenant
from storage.db import make_engine, make_session_factory, open_database
from storage.publisher import InMemoryPublisher, Publisher


def migrated_sessions(database_url: str) -> sessionmaker[Session]:
    upgrade_to_head(database_url)
    return make_session_factory(make_engine(database_url))


def migrated_ledger(database_url: str, publisher: Publisher | None = None) -> ItemLedger:
    """A ledger as a worker builds it (on PostgreSQL with the autocommit engine, so claims and
    successes take the one-statement path; on SQLite the transactional one), recording what
    it publishes in an InMemoryPublisher unless told otherwise. No outage retries: a test
    that wants them sets `outage_s`."""
    upgrade_to_head(database_url)
    db = open_database(database_url, pool_size=2)
    return ItemLedger(db, publisher or InMemoryPublisher(), outage_s=0.0, sleep=lambda _s: None)


def published(ledger: ItemLedger) -> InMemoryPublisher:
    publisher = ledger.publisher
    assert isinstance(publisher, InMemoryPublisher)
    return publisher


def tts_job(
    ledger: ItemLedger, texts: list[str], *, tenant: str = "acme", **fields: Any
) -> Submitted:
    tenant_id = ensure_tenant(ledger.db.sessions, tenant).id
    body = JobCreate.model_validate(
        {"kind": "tts", "provider": "local", "items": [{"text": t} for t in texts], **fields}
    )
    return submit_job(ledger, tenant_id, body, idempotency_key=None, max_items=100_000)
