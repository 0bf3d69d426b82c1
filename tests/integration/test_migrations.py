"""The Alembic migration builds exactly the models' schema on empty databases."""

import pytest
from alembic import command

from jobs.migrate import alembic_config, upgrade_to_head

pytestmark = pytest.mark.integration


def test_upgrade_empty_database_then_autogenerate_finds_no_difference(database_url: str) -> None:
    """`alembic upgrade head` then `alembic check` passes on PostgreSQL and SQLite."""
    upgrade_to_head(database_url)
    command.check(alembic_config(database_url))  # raises when models and schema differ


def test_upgrade_is_idempotent(database_url: str) -> None:
    """Running the migration twice (every `speechbatch migrate` on deploy) is harmless."""
    upgrade_to_head(database_url)
    upgrade_to_head(database_url)
    command.check(alembic_config(database_url))
