"""Job use cases behind the API and the CLI: submit, dry run, get, cancel, retry.

A job and its items are inserted in one transaction; every later change of an item goes
through the item ledger (`jobs.ledger`), which also publishes ids only after the commit that
made them visible (so a worker never receives an id it cannot find). Tenants and API keys
are `jobs.tenants`, uploads `jobs.uploads`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from dataclasses import dataclass, replace

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from jobs import estimates
from jobs import repository as repo
from jobs.archive_count import CountLimits, count_plan
from jobs.archive_ledger import first_task_lease
from jobs.archive_outputs import (
    OUTPUT_URL_OPTION,
    check_layout,
    plan_destination,
    probe_destination,
)
from jobs.archives import NO_ARCHIVES, ArchivePlan, ArchivePolicy, plan_archive
from jobs.clock import utc_now
from jobs.error_codes import ErrorCode
from jobs.errors import conflict, not_found
from jobs.ledger import ItemLedger
from jobs.manifest import write_manifest_if_finished
from jobs.models import Job, Tenant
from jobs.netpolicy import Allowlist
from jobs.pricing import DEFAULT_TABLE, PriceTable
from jobs.schemas import DryRunOut, JobCreate
from jobs.status import JOB_TERMINAL, ItemStatus, JobStatus
from jobs.validation import ValidJob, validate_job
from jobs.webhooks import check_webhook_url
from storage.objects import ObjectStore
from storage.stores import BucketStores

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Submitted:
    job: Job
    created: bool


def new_job_id() -> str:
    return f"job_{uuid.uuid4().hex}"


def request_digest(body: JobCreate) -> str:
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def submit_job(
    ledger: ItemLedger,
    tenant_id: str,
    body: JobCreate,
    *,
    idempotency_key: str | None,
    max_items: int,
    allow: Allowlist = (),
    prices: PriceTable = DEFAULT_TABLE,
    archives: ArchivePolicy = NO_ARCHIVES,
    buckets: BucketStores | None = None,
) -> Submitted:
    """Validate, store the job and its items, then publish the item ids.

    `allow` lists the private networks source URLs may name (SPEECHBATCH_ALLOW_PRIVATE_NETWORKS);
    `prices` turns a `budget.cost` into the caps workers enforce (SPEECHBATCH_PRICES);
    `buckets`, when given, probes an `output.url` bucket (jobs.archive_outputs).
    """
    sessions = ledger.db.sessions
    digest = request_digest(body)
    if idempotency_key is not None:
        existing = _replay(sessions, tenant_id, idempotency_key, digest)
        if existing is not None:
            return Submitted(existing, created=False)
    check_layout(body)
    plan = _archive_plan(sessions, tenant_id, body, archives, buckets) if body.source else None
    valid = validate_job(body, max_items=max_items, allow=allow)
    job = _job_row(valid, tenant_id, idempotency_key, digest)
    job.output_layout = body.output.layout
    if plan is not None:  # listed into items by a worker (workers.expand), batch by batch
        job.expanding, job.status = True, JobStatus.EXPANDING
        if plan.destination is not None:  # output.url (jobs.archive_outputs)
            job.output_layout = "mirror"
            job.options = {**job.options, OUTPUT_URL_OPTION: plan.destination.url}
    estimates.apply_budget(job, valid, body.budget, prices)
    if body.webhook_url is not None:
        job.webhook_url = check_webhook_url(body.webhook_url, allow)
    now = utc_now()
    rows = [
        {
            "seq": r.seq,
            "external_id": r.external_id,
            "text": r.text,
            "source": r.source,
            "voice": r.voice,
            "status": ItemStatus.QUEUED,
            "attempts": 0,
            "characters": len(r.text or ""),
            "content_hash": estimates.item_hash(valid, tenant_id, r),
            "published_at": now,
            "updated_at": now,
        }
        for r in valid.items
    ]
    job.created_at = now
    with sessions() as session:
        try:
            repo.insert_job(session, job, rows)
            if plan is not None:
                expansion = plan.row(job.id, max_items=archives.max_items, now=now)
                expansion.lease_until = first_task_lease(now)
                session.add(expansion)
            session.commit()
        except IntegrityError:
            # Another request with the same Idempotency-Key won the race: answer with its job.
            session.rollback()
            if idempotency_key is None:
                raise
            existing = _replay(sessions, tenant_id, idempotency_key, digest)
            if existing is None:
                raise
            return Submitted(existing, created=False)
        ids = repo.item_ids(session, job.id, status=ItemStatus.QUEUED)
    ledger.publish(ids)
    if plan is not None:
        _start_expansion(ledger, job.id)
    return Submitted(job, created=True)


def _archive_plan(
    sessions: sessionmaker[Session],
    tenant_id: str,
    body: JobCreate,
    policy: ArchivePolicy,
    buckets: BucketStores | None,
) -> ArchivePlan:
    name = None
    if policy.names_tenants:  # entries for one tenant name it; ids are not in the settings
        with sessions() as session:
            tenant = session.get(Tenant, tenant_id)
            name = tenant.name if tenant is not None else None
    plan = plan_archive(body, policy, name)
    destination = plan_destination(body, policy, name)
    if buckets is not None:  # the API's stores: a missing destination bucket is said now
        probe_destination(buckets, destination)
    return replace(plan, destination=destination)


def _start_expansion(ledger: ItemLedger, job_id: str) -> None:
    """Ask a worker to list the archive now; if the broker is down, beat takes it up."""
    try:
        ledger.publisher.start_expansion(job_id)
    except Exception:  # the job is committed; beat resumes expansions nobody holds
        log.warning("could not publish the expansion of %s; beat will start it", job_id)


def dry_run_job(
    sessions: sessionmaker[Session],
    store: ObjectStore,
    tenant_id: str,
    body: JobCreate,
    *,
    max_items: int,
    allow: Allowlist = (),
    prices: PriceTable = DEFAULT_TABLE,
    archives: ArchivePolicy = NO_ARCHIVES,
    buckets: BucketStores | None = None,
    count_limits: CountLimits | None = None,
) -> DryRunOut:
    """What `submit_job` would accept, with its usage and cost estimate: the same checks
    (layout, archive source, catalog, items, budget, webhook URL), and nothing inserted,
    published or called. An archive is listed to count its items, within `count_limits`
    (`jobs.archive_count`), on `buckets` (default: stores sharing `store`'s client)."""
    check_layout(body)
    plan = _archive_plan(sessions, tenant_id, body, archives, buckets) if body.source else None
    valid = validate_job(body, max_items=max_items, allow=allow)
    estimates.apply_budget(Job(), valid, body.budget, prices)
    if body.webhook_url is not None:
        check_webhook_url(body.webhook_url, allow)
    if plan is None:
        return estimates.estimate(
            valid, body.budget, tenant_id=tenant_id, store=store, prices=prices
        )
    limits = count_limits or CountLimits(max_items=archives.max_items)
    own = buckets is None
    stores = BucketStores(store) if buckets is None else buckets
    try:
        job = {"provider": valid.provider, "model": valid.model, "options": valid.options}
        count = count_plan(sessions, stores, tenant_id, job, plan, limits)
    finally:
        if own:
            stores.close()
    return estimates.estimate_archive(valid, body.budget, count, prices=prices)


def _replay(sessions: sessionmaker[Session], tenant_id: str, key: str, digest: str) -> Job | None:
    with sessions() as session:
        job = repo.find_job_by_idempotency_key(session, tenant_id, key)
    if job is not None and job.request_digest != digest:
        raise conflict(
            ErrorCode.IDEMPOTENCY_KEY_REUSED,
            "This Idempotency-Key was already used with a different request body; "
            "use a new key for a new job.",
        )
    return job


def _job_row(valid: ValidJob, tenant_id: str, idempotency_key: str | None, digest: str) -> Job:
    return Job(
        id=new_job_id(),
        tenant_id=tenant_id,
        kind=valid.kind,
        provider=valid.provider,
        model=valid.model,
        voice=valid.voice,
        options=valid.options,
        fallback=[route.to_json() for route in valid.fallback] or None,
        output_prefix=valid.output_prefix,
        stitched=valid.stitched,
        status=JobStatus.QUEUED,
        idempotency_key=idempotency_key,
        request_digest=digest,
        running=0,
        succeeded=0,
        failed=0,
        canceled=0,
        usage_characters=0,
        usage_audio_seconds=0.0,
    )


def _owned_job(session: Session, tenant_id: str, job_id: str) -> Job:
    """The tenant's job; another tenant's job is indistinguishable from none (404)."""
    job = repo.get_job(session, tenant_id, job_id)
    if job is None:
        raise not_found("job")
    return job


def get_job(sessions: sessionmaker[Session], tenant_id: str, job_id: str) -> Job:
    with sessions() as session:
        return _owned_job(session, tenant_id, job_id)


def cancel_job(ledger: ItemLedger, store: ObjectStore, tenant_id: str, job_id: str) -> Job:
    """Cancel every item not finished: queued ones at once, running ones in the same
    statement (their workers stop at the next heartbeat and remove what they wrote)."""
    job = get_job(ledger.db.sessions, tenant_id, job_id)
    if job.status not in JOB_TERMINAL:
        ledger.cancel_job(job_id)
    write_manifest_if_finished(ledger.db.sessions, store, job_id)
    return get_job(ledger.db.sessions, tenant_id, job_id)


def retry_job(ledger: ItemLedger, tenant_id: str, job_id: str) -> Job:
    """Re-queue only the failed items of a job."""
    job = get_job(ledger.db.sessions, tenant_id, job_id)
    if job.canceled_at is not None:
        raise conflict(ErrorCode.JOB_CANCELED, "This job was canceled; submit a new job instead.")
    ledger.retry_failed(job_id)
    return get_job(ledger.db.sessions, tenant_id, job_id)
