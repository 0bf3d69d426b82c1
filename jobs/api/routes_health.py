"""Liveness of the three things every request depends on: database, broker, storage.

A storage failure says which bucket or folder and why (`StorageUnavailable`'s message, which
names no credentials); other failures give only their type, since /healthz is open to all.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from jobs.api.deps import Res
from jobs.schemas import HealthOut
from storage.objects import StorageUnavailable

router = APIRouter(tags=["health"])


def _failure(exc: Exception) -> str:
    if isinstance(exc, StorageUnavailable):
        return f"error: {exc}"
    return f"error: {type(exc).__name__}"


@router.get(
    "/healthz",
    response_model=HealthOut,
    responses={503: {"model": HealthOut, "description": "A dependency failed; see `checks`."}},
)
def healthz(res: Res) -> JSONResponse:
    checks: dict[str, str] = {}
    for name, probe in (
        ("database", res.ping_database),
        ("broker", res.publisher.ping),
        ("storage", res.store.check),
    ):
        try:
            probe()
            checks[name] = "ok"
        except Exception as exc:  # report, never raise: this endpoint must answer
            checks[name] = _failure(exc)
    healthy = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ok" if healthy else "degraded", "checks": checks},
        status_code=200 if healthy else 503,
    )
