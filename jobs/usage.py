"""A job's usage per provider and its estimated cost, as the job view shows them.

The job row counts usage as items succeed (`usage_characters`, `usage_audio_seconds`, moved
by the ledger in the same statement as the item), so a poll reads no items for the totals.
Per provider it needs to know which items a fallback served: those are the items with
`route > 0`, which the partial index `ix_items_job_rerouted` holds, so the breakdown costs
no query at all for a job without fallbacks, and for one with fallbacks a grouped read of
only its rerouted items (`jobs.repository.rerouted_usage`); the job's own provider gets the
rest. Items that reused an earlier output used nothing and are left out of both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from jobs.models import Job
from jobs.pricing import CURRENCY, DEFAULT_TABLE, PRICES_AS_OF, PriceTable
from jobs.records import fallback_routes
from jobs.schemas import BudgetOut, Cost, ProviderUsage, Usage


@dataclass(frozen=True)
class RouteUsage:
    """What a job's succeeded items on one fallback route used (route n: `fallback[n-1]`)."""

    route: int
    characters: int
    audio_seconds: float


def _rounded(value: float | None, places: int = 6) -> float | None:
    return None if value is None else round(value, places)


def usage_and_cost(
    job: Job, rerouted: Sequence[RouteUsage] | None = (), prices: PriceTable = DEFAULT_TABLE
) -> tuple[Usage, Cost]:
    """The job's usage (totals and per provider) and its estimated cost at `prices`.

    `rerouted` is the job's usage on fallback routes (nothing for a job without fallbacks);
    the job's own route is credited with the totals minus those. None means not read: a job
    with fallbacks then gets no split and no cost (a guess would credit the wrong vendor).
    """
    if rerouted is None and job.fallback:
        usage = Usage(
            characters=job.usage_characters, audio_seconds=round(job.usage_audio_seconds, 3)
        )
        return usage, Cost(estimated=None, currency=CURRENCY, prices_as_of=PRICES_AS_OF)
    rerouted = rerouted or ()
    routes = [
        (job.provider, job.model),
        *((r.provider, r.model) for r in fallback_routes(job.fallback)),
    ]
    chars = {0: job.usage_characters}
    audio = {0: job.usage_audio_seconds}
    for part in rerouted:
        if 0 < part.route < len(routes):
            chars[part.route] = chars.get(part.route, 0) + part.characters
            audio[part.route] = audio.get(part.route, 0.0) + part.audio_seconds
            chars[0] -= part.characters
            audio[0] -= part.audio_seconds
    chars[0], audio[0] = max(chars[0], 0), max(audio[0], 0.0)
    by_provider: dict[str, dict[str, float | None]] = {}
    total: float | None = 0.0
    for route, (provider, model) in enumerate(routes):
        if route not in chars:
            continue
        cost = prices.cost(job.kind, provider, model, chars[route], audio[route])
        entry = by_provider.setdefault(
            provider, {"characters": 0, "audio_seconds": 0.0, "cost": 0.0}
        )
        entry["characters"] = (entry["characters"] or 0) + chars[route]
        entry["audio_seconds"] = (entry["audio_seconds"] or 0.0) + audio[route]
        entry["cost"] = None if cost is None or entry["cost"] is None else entry["cost"] + cost
        total = None if cost is None or total is None else total + cost
    usage = Usage(
        characters=job.usage_characters,
        audio_seconds=round(job.usage_audio_seconds, 3),
        by_provider={
            name: ProviderUsage(
                characters=int(e["characters"] or 0),
                audio_seconds=round(e["audio_seconds"] or 0.0, 3),
                cost=_rounded(e["cost"]),
            )
            for name, e in by_provider.items()
        },
    )
    return usage, Cost(estimated=_rounded(total), currency=CURRENCY, prices_as_of=PRICES_AS_OF)


def budget_view(job: Job) -> BudgetOut | None:
    """The job's budget as asked, with the caps enforced and when it stopped the job."""
    if job.budget is None:
        return None
    return BudgetOut(
        **job.budget,
        cap_characters=job.cap_characters,
        cap_audio_seconds=job.cap_audio_seconds,
        stopped_at=job.budget_stopped_at,
    )


def by_job(rows: Sequence[tuple[str, int, int, float]]) -> Mapping[str, list[RouteUsage]]:
    """Rows of (job id, route, characters, audio seconds) grouped by job."""
    grouped: dict[str, list[RouteUsage]] = {}
    for job_id, route, characters, audio_seconds in rows:
        grouped.setdefault(job_id, []).append(
            RouteUsage(int(route), int(characters or 0), float(audio_seconds or 0.0))
        )
    return grouped
