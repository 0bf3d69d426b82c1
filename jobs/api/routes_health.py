"""Liveness of the three things every request depends on: database, broker, storage."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from jobs.api.deps import Res

router = APIRouter(tags=["health"])


@router.get("/healthz")
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
            checks[name] = f"error: {type(exc).__name__}"
    healthy = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ok" if healthy else "degraded", "checks": checks},
        status_code=200 if healthy else 503,
    )
