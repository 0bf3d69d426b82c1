"""API views of jobs and items, shared by the endpoints and the CLI's local mode, so every
surface says the same thing about a job or an item (the manifest has its own record type,
`jobs.manifest.ManifestRecord`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from jobs.archive_outputs import destination_of, public_options
from jobs.manifest import output_files
from jobs.models import Item, Job
from jobs.pricing import DEFAULT_TABLE, PriceTable
from jobs.schemas import (
    Counts,
    ErrorOut,
    FallbackOut,
    ItemOut,
    ItemOutput,
    JobOut,
    OutputFile,
    OutputSpec,
)
from jobs.status import ItemStatus
from jobs.usage import RouteUsage, budget_view, usage_and_cost

# url_for(key, item) -> a URL clients can fetch the object from (or None).
UrlFor = Callable[[str, Item], str | None]


def item_view(job: Job, item: Item, url_for: UrlFor | None) -> ItemOut:
    output = None
    if item.output_key:
        output = ItemOutput(
            key=item.output_key,
            url=url_for(item.output_key, item) if url_for else None,
            bytes=item.output_bytes,
            duration_s=item.duration_s,
            content_type=item.output_content_type,
            pieces=item.pieces,
            files=[
                OutputFile(format=fmt, key=key, url=url_for(key, item) if url_for else None)
                for fmt, key in output_files(job, item)
            ],
        )
    error = None
    if item.error_code and item.status != ItemStatus.SUCCEEDED:
        error = ErrorOut(code=item.error_code, message=item.error_message or "")
    routes = job.fallback or []
    on_fallback = 0 < item.route <= len(routes)
    return ItemOut(
        id=item.external_id,
        seq=item.seq,
        status=item.status,
        # Who speaks or transcribes it: the job's provider, or the fallback it moved to.
        provider=routes[item.route - 1]["provider"] if on_fallback else job.provider,
        attempts=item.attempts,
        text=item.text,
        source=item.source,
        next_attempt_at=item.next_attempt_at if item.status == ItemStatus.QUEUED else None,
        error=error,
        output=output,
        skipped_from=item.skipped_from,
        reused=item.reused_from is not None,
    )


def job_view(
    job: Job,
    *,
    rerouted: Sequence[RouteUsage] | None = None,
    prices: PriceTable = DEFAULT_TABLE,
) -> JobOut:
    """The job as the API shows it. `rerouted` is its usage on fallback routes
    (`jobs.repository.rerouted_usage`); `prices` the deployment's table (settings'
    `price_table()`), for `usage.by_provider` and `cost`. Without `rerouted`, a job with
    fallbacks shows no per-provider split and no cost rather than a wrong one."""
    usage, cost = usage_and_cost(job, rerouted, prices)
    return JobOut(
        id=job.id,
        kind=job.kind,
        provider=job.provider,
        model=job.model,
        voice=job.voice,
        options=public_options(job.options),
        output=OutputSpec(
            prefix=job.output_prefix,
            stitched=job.stitched,
            layout="mirror" if job.output_layout == "mirror" else "job",
            url=destination_of(job.options),
        ),
        fallback=[FallbackOut(**route) for route in job.fallback or []],
        webhook_url=job.webhook_url,
        status=job.status,
        counts=Counts(
            total=job.total,
            queued=job.queued,
            running=job.running,
            succeeded=job.succeeded,
            failed=job.failed,
            canceled=job.canceled,
            skipped=job.skipped,
        ),
        usage=usage,
        cost=cost,
        budget=budget_view(job),
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
    )
