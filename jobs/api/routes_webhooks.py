"""Webhook endpoints: the tenant's signing secret, a job's delivery log, and redelivery.

Deliveries are recorded and sent by beat (`workers.webhook_sender`); these routes only read
the log and ask for a replay, which beat's next pass sends under the same `webhook-id`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from jobs import webhook_log
from jobs.api.deps import Res, TenantId
from jobs.api.docs import AUTH, NO_JOB, errors
from jobs.clock import utc_now
from jobs.webhook_secrets import TenantSecrets, read_secrets, rotate_secret

router = APIRouter(prefix="/v1", tags=["webhooks"])
NO_DELIVERY = (
    "`not_found`: no such job, or no such delivery of it, for this API key "
    "(another tenant's job looks the same)."
)


class WebhookSecretOut(BaseModel):
    secret: str = Field(description="`whsec_` + base64: pass it to `standardwebhooks.Webhook`.")
    previous_secret_valid_until: datetime | None = Field(
        description="After a rotation, requests are also signed with the previous secret "
        "until this time (a second `v1,` value in `webhook-signature`)."
    )


class WebhookAttemptOut(BaseModel):
    started_at: datetime
    latency_ms: float
    status_code: int | None = Field(description="The receiver's HTTP status; null if none came.")
    error: str | None = Field(description="Why no status came: refused, timeout, connection.")
    response_excerpt: str | None = Field(description="The answer's first 512 bytes.")


class WebhookDeliveryOut(BaseModel):
    id: str = Field(description="The `webhook-id` header: the same on every retry and replay.")
    event: str
    status: str = Field(description="`pending`, `delivered` or `failed`.")
    url: str
    attempt_count: int
    next_attempt_at: datetime | None
    created_at: datetime
    delivered_at: datetime | None
    payload: dict[str, Any] = Field(description="The body sent, frozen when the job finished.")
    attempts: list[WebhookAttemptOut] = Field(description="Oldest first; the last 100 kept.")


class WebhookDeliveryList(BaseModel):
    deliveries: list[WebhookDeliveryOut]


def _secret_view(found: TenantSecrets, response: Response) -> WebhookSecretOut:
    response.headers["Cache-Control"] = "no-store"
    return WebhookSecretOut(
        secret=found.secret, previous_secret_valid_until=found.previous_valid_until(utc_now())
    )


def _delivery_view(log: webhook_log.DeliveryLog) -> WebhookDeliveryOut:
    d = log.delivery
    return WebhookDeliveryOut(
        id=d.id,
        event=d.event,
        status=d.status,
        url=d.url,
        attempt_count=d.attempts,
        next_attempt_at=d.next_attempt_at,
        created_at=d.created_at,
        delivered_at=d.delivered_at,
        payload=d.payload,
        attempts=[
            WebhookAttemptOut(
                started_at=a.started_at,
                latency_ms=a.latency_ms,
                status_code=a.status_code,
                error=a.error,
                response_excerpt=a.response_excerpt,
            )
            for a in log.attempts
        ],
    )


@router.get("/webhook-secret", response_model=WebhookSecretOut, responses=errors({401: AUTH}))
def get_webhook_secret(response: Response, res: Res, tenant_id: TenantId) -> WebhookSecretOut:
    """The tenant's signing secret, made on first use."""
    return _secret_view(read_secrets(res.sessions, tenant_id), response)


@router.post(
    "/webhook-secret/rotate", response_model=WebhookSecretOut, responses=errors({401: AUTH})
)
def rotate_webhook_secret(response: Response, res: Res, tenant_id: TenantId) -> WebhookSecretOut:
    """A new signing secret; the previous one keeps signing beside it for 24 hours."""
    return _secret_view(rotate_secret(res.sessions, tenant_id, utc_now()), response)


@router.get(
    "/jobs/{job_id}/webhooks",
    response_model=WebhookDeliveryList,
    responses=errors({401: AUTH, 404: NO_JOB}),
)
def list_deliveries(job_id: str, res: Res, tenant_id: TenantId) -> WebhookDeliveryList:
    """Every delivery of the job (one per finish), newest first, with each attempt."""
    logs = webhook_log.job_deliveries(res.sessions, tenant_id, job_id)
    return WebhookDeliveryList(deliveries=[_delivery_view(log) for log in logs])


@router.post(
    "/jobs/{job_id}/webhooks/{delivery_id}/redeliver",
    status_code=202,
    response_model=WebhookDeliveryOut,
    responses=errors({401: AUTH, 404: NO_DELIVERY}),
)
def redeliver(job_id: str, delivery_id: str, res: Res, tenant_id: TenantId) -> WebhookDeliveryOut:
    """Send the delivery again now (beat's next pass), same `webhook-id`, new retry window."""
    log = webhook_log.redeliver(res.sessions, tenant_id, job_id, delivery_id, now=utc_now())
    return _delivery_view(log)
