"""`GET /metrics`: the Prometheus text exposition of `jobs.metrics.SystemCollector`.

Open to all, as /healthz is: Prometheus scrapes without a tenant key, and the figures are
totals over every tenant with no ids, keys, URLs or tenant names in them. A deployment that
must hide them keeps /metrics off its public ingress (a proxy rule), as it would /healthz.
Left out of the OpenAPI schema: it is an operator's endpoint, not part of the tenants' API.

The registry is one per app (not prometheus_client's global one), so an API process reports
only the database's view, and two apps in one test process do not collide.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.concurrency import run_in_threadpool

from jobs.api.deps import Resources
from jobs.metrics import SystemCollector

router = APIRouter(tags=["metrics"])


def metrics_registry(res: Resources) -> CollectorRegistry:
    """A registry holding only the system collector over the app's read sessions."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SystemCollector(res.reads, res.publisher, res.settings.price_table()))
    return registry


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    registry: CollectorRegistry = request.app.state.metrics
    body = await run_in_threadpool(generate_latest, registry)  # the queries block
    return Response(body, media_type=CONTENT_TYPE_LATEST)
