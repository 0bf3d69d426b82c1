"""The database engines and sessions: the only place that builds a connection to either backend.

Two backends (design §3): PostgreSQL through psycopg 3 in production and on CI, and an SQLite
file in embedded mode. SQLite is tuned on every new connection so that an API thread, a few
pipeline threads and the CLI can share one file: WAL lets readers run beside the writer, and a
busy timeout makes a second writer wait instead of failing with "database is locked".
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker

SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA busy_timeout=5000",
    "PRAGMA foreign_keys=ON",
    "PRAGMA synchronous=NORMAL",
)


def _set_sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        for pragma in SQLITE_PRAGMAS:
            cursor.execute(pragma)
    finally:
        cursor.close()


def _sqlite_engine(url: URL) -> Engine:
    database = url.database or ""
    # ":memory:" and URI filenames ("file:...?mode=memory") have no directory to create.
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False})
    event.listen(engine, "connect", _set_sqlite_pragmas)
    return engine


def make_engine(url: str) -> Engine:
    """An Engine for `url` (`sqlite:///path` or `postgresql+psycopg://...`), tuned per backend.

    A driverless `postgresql://` or `postgres://` URL is taken to mean psycopg 3, the only
    PostgreSQL driver speechbatch installs.
    """
    parsed = _parse(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed)
    return create_engine(parsed, pool_pre_ping=True, pool_size=10, max_overflow=20)


def make_autocommit_engine(url: str, *, pool_size: int) -> Engine | None:
    """A PostgreSQL engine whose every statement commits on its own, for the workers'
    one-statement transitions (`jobs.ledger`); None for SQLite, which has none.

    No pre-ping: every statement on it is retried across a lost connection (the ledger
    does), so the extra round trip per checkout would buy nothing.
    """
    parsed = _parse(url)
    if parsed.get_backend_name() == "sqlite":
        return None
    return create_engine(parsed, isolation_level="AUTOCOMMIT", pool_size=pool_size, max_overflow=4)


class UnsupportedDatabaseUrl(ValueError):
    """The URL names a database speechbatch does not run on."""


def _parse(url: str) -> URL:
    if url.startswith("postgres://"):
        url = "postgresql://" + url.removeprefix("postgres://")
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed
    if backend == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        return parsed
    raise UnsupportedDatabaseUrl(
        f"Unsupported database URL scheme {parsed.drivername!r}: use "
        "'postgresql+psycopg://user@host:5432/db' or 'sqlite:///path/to/file.db'."
    )


@dataclass(frozen=True)
class Database:
    """One process's connections to the system of record.

    `sessions` run transactions; `autocommit` (PostgreSQL only, else None) runs statements
    that commit on their own, for the item ledger's one-statement transitions.
    """

    engine: Engine
    sessions: sessionmaker[Session]
    autocommit: Engine | None = None

    def warm(self, connections: int) -> None:
        """Open `connections` of the autocommit engine's pooled connections now (at most its
        pool size), so a worker's first items do not each wait for a connection of their own."""
        if self.autocommit is None:
            return
        with ExitStack() as opened:
            for _ in range(min(connections, self.autocommit.pool.size())):  # type: ignore[attr-defined]
                opened.enter_context(self.autocommit.connect())

    def dispose(self) -> None:
        self.engine.dispose()
        if self.autocommit is not None:
            self.autocommit.dispose()


def open_database(url: str, *, pool_size: int = 0) -> Database:
    """Engines and sessions for `url`; `pool_size` > 0 adds the autocommit engine (workers)."""
    engine = make_engine(url)
    autocommit = make_autocommit_engine(url, pool_size=pool_size) if pool_size else None
    return Database(engine, make_session_factory(engine), autocommit)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions bound to `engine`; objects stay readable after commit (expire_on_commit=False)."""
    return sessionmaker(bind=engine, expire_on_commit=False)


def ping(engine: Engine) -> None:
    """Run `SELECT 1`; raises the driver's error when the database cannot be reached."""
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))
