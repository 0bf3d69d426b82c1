"""What `GET /metrics` reports about the system of record, read at scrape time.

`SystemCollector` is a prometheus_client custom collector: each scrape runs a handful of
aggregate queries, never one over the items table. Item counts come from the jobs' per-status
counter columns (moved by the ledger with every item), so "items by status" costs one
grouped read of the jobs table whatever the number of items; jobs, schedules and webhook
deliveries are one `GROUP BY` each on small tables; usage and cost are summed from the jobs'
usage columns and priced with the deployment's price table (`jobs.pricing`). Queue depth is
the broker's list lengths (`Publisher.depth`).

Labels come from closed vocabularies (status, kind) or from the catalog's provider names
(validated at submit), so the series count stays bounded whatever the tenants do. Usage a
fallback route served is credited to that route's provider, as `jobs.usage` does for one job:
one grouped read of the succeeded items with `route > 0` (the partial index
`ix_items_job_rerouted` holds only those, so it costs nothing while nothing failed over), and
the job rows they belong to for their fallback lists; the job's own provider keeps the rest.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from jobs import repository as repo
from jobs.models import Job
from jobs.models_schedules import Schedule
from jobs.models_webhooks import WebhookDelivery
from jobs.pricing import CURRENCY, PriceTable
from jobs.records import fallback_routes
from jobs.status import ItemStatus
from storage.publisher import Publisher

log = logging.getLogger(__name__)

# Item statuses that have a counter column on the job row (`jobs.models.Job`).
COUNTED = (
    ItemStatus.QUEUED,
    ItemStatus.RUNNING,
    ItemStatus.SUCCEEDED,
    ItemStatus.FAILED,
    ItemStatus.CANCELED,
    ItemStatus.SKIPPED,
)


class SystemCollector(Collector):
    """Gauges of items, jobs, schedules, deliveries, usage, cost and queue depth."""

    def __init__(
        self, sessions: sessionmaker[Session], publisher: Publisher, prices: PriceTable
    ) -> None:
        self.sessions, self.publisher, self.prices = sessions, publisher, prices

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self.sessions() as session:
            yield from self._items(session)
            yield self._jobs(session)
            yield self._schedules(session)
            yield self._deliveries(session)
            yield from self._usage(session)
        yield self._queue_depth()

    def _items(self, session: Session) -> Iterator[GaugeMetricFamily]:
        columns = [func.coalesce(func.sum(getattr(Job, s.value)), 0) for s in COUNTED]
        rows = session.execute(select(Job.kind, *columns).group_by(Job.kind)).all()
        items = GaugeMetricFamily(
            "speechbatch_items", "Items by status and kind (from the jobs' counters).",
            labels=["status", "kind"],
        )  # fmt: skip
        for kind, *counts in rows:
            for status, count in zip(COUNTED, counts, strict=True):
                items.add_metric([status.value, str(kind)], float(count))
        yield items

    def _jobs(self, session: Session) -> GaugeMetricFamily:
        rows = session.execute(
            select(Job.status, Job.kind, func.count()).group_by(Job.status, Job.kind)
        ).all()
        jobs = GaugeMetricFamily(
            "speechbatch_jobs", "Jobs by status and kind.", labels=["status", "kind"]
        )
        for status, kind, count in rows:
            jobs.add_metric([str(status), str(kind)], float(count))
        return jobs

    def _schedules(self, session: Session) -> GaugeMetricFamily:
        rows = session.execute(
            select(Schedule.enabled, func.count()).group_by(Schedule.enabled)
        ).all()
        counts = {bool(enabled): int(n) for enabled, n in rows}
        gauge = GaugeMetricFamily(
            "speechbatch_schedules", "Schedules, enabled or not.", labels=["enabled"]
        )
        for enabled in (True, False):
            gauge.add_metric([str(enabled).lower()], float(counts.get(enabled, 0)))
        return gauge

    def _deliveries(self, session: Session) -> GaugeMetricFamily:
        rows = session.execute(
            select(WebhookDelivery.status, func.count()).group_by(WebhookDelivery.status)
        ).all()
        gauge = GaugeMetricFamily(
            "speechbatch_webhook_deliveries", "Webhook deliveries by status.", labels=["status"]
        )
        for status, count in rows:
            gauge.add_metric([str(status)], float(count))
        return gauge

    def _usage(self, session: Session) -> Iterator[GaugeMetricFamily]:
        rows = self._own_usage(session)
        rows.extend(_rerouted_usage(session))
        routes: dict[tuple[str, str, str], tuple[int, float]] = {}
        for kind, provider, model, characters, seconds in rows:
            had = routes.get((kind, provider, model), (0, 0.0))
            routes[(kind, provider, model)] = (had[0] + characters, had[1] + seconds)
        chars: dict[str, float] = {}
        audio: dict[str, float] = {}
        cost: dict[str, float] = {}
        for (kind, provider, model), (signed_chars, signed_s) in routes.items():
            characters, seconds = max(signed_chars, 0), max(signed_s, 0.0)
            chars[provider] = chars.get(provider, 0.0) + characters
            audio[provider] = audio.get(provider, 0.0) + seconds
            price = self.prices.cost(kind, provider, model, characters, seconds)
            cost[provider] = cost.get(provider, 0.0) + (price or 0.0)
        for name, doc, values in (
            ("speechbatch_usage_characters", "Characters spoken, by provider.", chars),
            ("speechbatch_usage_audio_seconds", "Audio seconds transcribed, by provider.", audio),
            (
                f"speechbatch_estimated_cost_{CURRENCY.lower()}",
                "Estimated cost at today's list prices (jobs.pricing), by provider.",
                cost,
            ),
        ):
            gauge = GaugeMetricFamily(name, doc, labels=["provider"])
            for provider, value in sorted(values.items()):
                gauge.add_metric([provider], value)
            yield gauge

    def _own_usage(self, session: Session) -> list[tuple[str, str, str, int, float]]:
        """Usage totals per (kind, provider, model) of the jobs' own routes."""
        rows = session.execute(
            select(
                Job.kind,
                Job.provider,
                Job.model,
                func.coalesce(func.sum(Job.usage_characters), 0),
                func.coalesce(func.sum(Job.usage_audio_seconds), 0.0),
            ).group_by(Job.kind, Job.provider, Job.model)
        ).all()
        return [(str(k), p, m, int(c), float(a)) for k, p, m, c, a in rows]

    def _queue_depth(self) -> GaugeMetricFamily:
        gauge = GaugeMetricFamily(
            "speechbatch_queue_depth", "Messages waiting in the broker's item queue."
        )
        try:
            gauge.add_metric([], float(self.publisher.depth()))
        except Exception as exc:  # a broker outage must not fail the scrape of the rest
            log.warning("queue depth unavailable: %s", type(exc).__name__)
            gauge.add_metric([], float("nan"))
        return gauge


def _rerouted_usage(session: Session) -> list[tuple[str, str, str, int, float]]:
    """(kind, provider, model, characters, audio seconds) moved from jobs' own routes to their
    fallbacks: each rerouted share once with the fallback and once, negated, with the job's
    own route. Reads only succeeded rerouted items that called a provider."""
    parts = repo.rerouted_usage(session, None)
    if not parts:
        return []
    job_ids = sorted({job_id for job_id, *_ in parts})
    jobs = {
        job_id: (str(kind), provider, model, fallback_routes(fallback))
        for job_id, kind, provider, model, fallback in session.execute(
            select(Job.id, Job.kind, Job.provider, Job.model, Job.fallback).where(
                Job.id.in_(job_ids)
            )
        )
    }
    moved: list[tuple[str, str, str, int, float]] = []
    for job_id, route, used_chars, used_s in parts:
        found = jobs.get(job_id)
        if found is None or not 0 < int(route) <= len(found[3]):
            continue
        kind, provider, model, routes = found
        to = routes[int(route) - 1]
        characters, seconds = used_chars, used_s
        moved.append((kind, to.provider, to.model, characters, seconds))
        moved.append((kind, provider, model, -characters, -seconds))
    return moved
