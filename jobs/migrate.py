"""Running the Alembic migrations from code (the `migrate` command and local mode)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config


def migrations_dir() -> Path:
    """`migrations/` next to the packages (a source checkout or the Docker image's /app)."""
    for base in (Path(__file__).resolve().parent.parent, Path.cwd()):
        if (base / "migrations" / "env.py").is_file():
            return base / "migrations"
    raise FileNotFoundError("migrations/ not found; run from the project directory.")


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    # `%` is Alembic's interpolation character; URLs may contain it (encoded passwords).
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade_to_head(database_url: str) -> None:
    command.upgrade(alembic_config(database_url), "head")
