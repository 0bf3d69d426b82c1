"""Alembic environment: the URL comes from the caller (jobs/migrate.py) or the settings."""

from __future__ import annotations

from alembic import context

from jobs import models_schedules, models_webhooks  # noqa: F401  (their tables join Base)
from jobs.models import Base
from jobs.settings import get_settings
from storage.db import make_engine

config = context.config
url = config.get_main_option("sqlalchemy.url") or get_settings().database_url


def run() -> None:
    engine = make_engine(url)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            # SQLite cannot ALTER most things in place; batch mode rebuilds tables.
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run()
