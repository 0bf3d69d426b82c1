"""make_engine gives a tuned SQLite and a working PostgreSQL engine."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from storage.db import make_engine, make_session_factory, open_database, ping

pytestmark = pytest.mark.integration


def test_sqlite_engine_is_tuned_and_creates_its_folder(tmp_path: Path) -> None:
    """SQLite gets WAL, a busy timeout, foreign keys and NORMAL sync, in a folder made for it."""
    engine = make_engine(f"sqlite:///{tmp_path / 'nested' / 'dir' / 'speechbatch.db'}")
    try:
        ping(engine)
        with engine.connect() as connection:
            pragmas = {
                name: connection.execute(text(f"PRAGMA {name}")).scalar()
                for name in ("journal_mode", "busy_timeout", "foreign_keys", "synchronous")
            }
        assert pragmas == {
            "journal_mode": "wal",
            "busy_timeout": 5000,
            "foreign_keys": 1,
            "synchronous": 1,  # NORMAL
        }
        assert (tmp_path / "nested" / "dir" / "speechbatch.db").exists()
    finally:
        engine.dispose()


def test_engine_connects_to_each_backend(database_url: str) -> None:
    """ping succeeds and sessions keep loaded values after commit on both backends."""
    engine = make_engine(database_url)
    try:
        ping(engine)
        sessions = make_session_factory(engine)
        with sessions() as session:
            assert session.execute(text("SELECT 1 + 1")).scalar() == 2
            session.commit()
        assert sessions.kw["expire_on_commit"] is False
    finally:
        engine.dispose()


def test_postgres_engine_pool_settings(pg_url: str) -> None:
    """PostgreSQL engines use psycopg 3 with pre-ping and a 10 + 20 connection pool."""
    engine = make_engine(pg_url.replace("postgresql+psycopg://", "postgresql://"))
    try:
        assert engine.dialect.driver == "psycopg"
        assert engine.pool._pre_ping is True
        assert engine.pool.size() == 10  # type: ignore[attr-defined]
        assert engine.pool._max_overflow == 20  # type: ignore[attr-defined]
        ping(engine)
    finally:
        engine.dispose()


def test_unsupported_database_url_is_refused() -> None:
    """A URL for another database names the two supported forms."""
    with pytest.raises(ValueError, match="postgresql\\+psycopg"):
        make_engine("mysql+pymysql://root@127.0.0.1/test")


def test_warm_opens_one_pooled_connection_per_thread_up_to_the_pool(
    pg_url: str, database_url: str
) -> None:
    """`Database.warm` leaves N autocommit connections open in the pool (never more than its
    size), and is a no-op for SQLite, which has no autocommit engine."""
    db = open_database(pg_url, pool_size=6)
    try:
        assert db.autocommit is not None
        assert db.autocommit.pool.checkedin() == 0  # type: ignore[attr-defined]
        db.warm(4)
        assert db.autocommit.pool.checkedin() == 4  # type: ignore[attr-defined]
        db.warm(50)
        assert db.autocommit.pool.checkedin() == 6  # type: ignore[attr-defined]
    finally:
        db.dispose()
    if database_url.startswith("sqlite"):
        lite = open_database(database_url, pool_size=6)
        lite.warm(4)
        assert lite.autocommit is None
        lite.dispose()
