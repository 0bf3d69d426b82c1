"""The REST API (FastAPI): `create_app` builds it from settings."""

from jobs.api.app import create_app

__all__ = ["create_app"]
