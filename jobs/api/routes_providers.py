"""`GET /v1/providers`: each provider credential's shared throttle and circuit, right now.

What `speechbatch top` and the dashboard's provider page show: configured and effective limits
(after the adaptive throttle's cuts for 429s), calls in flight across every worker, the
circuit, and the broker's queue depth. Behind a tenant key like every `/v1` route, though the
figures are the deployment's, not the tenant's: the rows name credentials only by fingerprint.
A Redis outage is not an error of this route: it answers 200 with `error` set on every row.
"""

from __future__ import annotations

import logging
from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from jobs.api.deps import Res, Resources, TenantId
from jobs.api.docs import AUTH, errors
from jobs.clock import utc_now
from jobs.provider_states import ProviderState, read_provider_states

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["providers"])


class ProviderStateOut(BaseModel):
    provider: str = Field(description="The catalog's provider name, e.g. `slng`.")
    limits_name: str = Field(
        description="The throttle's name: the provider, or `provider-kind` when that kind "
        "has limits of its own (e.g. `smallest-stt`)."
    )
    kinds: list[str] = Field(description="Job kinds whose calls count against this throttle.")
    credential: str = Field(description="The API key's fingerprint (16 hex digits), never it.")
    configured: bool = Field(description="The deployment has a key for this provider.")
    max_concurrency: int = Field(description="Configured calls in flight (catalog or override).")
    max_rps: float | None = Field(description="Configured requests/s; null: no rate limit.")
    effective_concurrency: int = Field(description="The cap in force after 429 cuts.")
    effective_rps: float | None = Field(description="The rate in force after 429 cuts.")
    in_flight: int = Field(description="Calls holding a slot now, over every worker.")
    circuit: str = Field(
        description="`closed`, `open` (calls fail at once), `half-open` (the next call probes) "
        "or `unknown` (Redis did not answer)."
    )
    circuit_open_until: datetime | None = Field(description="When an open circuit may probe.")
    probing: bool = Field(description="A worker holds the half-open circuit's probe.")
    error: str | None = Field(description="Why the shared state could not be read, if so.")


class ProvidersOut(BaseModel):
    read_at: datetime
    queue_depth: int | None = Field(
        description="Messages waiting in the broker's item queue; null if it did not answer."
    )
    providers: list[ProviderStateOut]


def _view(state: ProviderState) -> ProviderStateOut:
    return ProviderStateOut(
        provider=state.provider,
        limits_name=state.limits_name or state.provider,
        kinds=list(state.kinds),
        credential=state.credential,
        configured=state.configured,
        max_concurrency=state.max_concurrency,
        max_rps=state.max_rps,
        effective_concurrency=state.effective_concurrency,
        effective_rps=state.effective_rps,
        in_flight=state.in_flight,
        circuit=state.circuit,
        circuit_open_until=state.circuit_open_until,
        probing=state.probing,
        error=state.error,
    )


def _read(res: Resources) -> ProvidersOut:
    states = read_provider_states(res.settings)
    try:
        depth: int | None = res.publisher.depth()
    except Exception as exc:  # a broker outage shows as null, like the rows' `error`
        log.warning("queue depth unavailable: %s", type(exc).__name__)
        depth = None
    return ProvidersOut(read_at=utc_now(), queue_depth=depth, providers=[_view(s) for s in states])


@router.get("/providers", response_model=ProvidersOut, responses=errors({401: AUTH}))
async def list_providers(res: Res, _: TenantId) -> ProvidersOut:
    """Every hosted provider's throttle and circuit as the workers share them in Redis."""
    return await run_in_threadpool(_read, res)
