"""The cost side of a submit: budget caps, content hashes, and the dry run's estimate.

A dry run (`POST /v1/jobs?dry_run=true`, `speechbatch tts --dry-run`) goes through the same
validation as a submit (`jobs.service.dry_run_job`) and then only estimates: nothing is
inserted, published or called. TTS usage is exact (the characters are in the body). STT
audio seconds are known only where they can be read cheaply: an `upload://` source's
header in our own store (WAV and FLAC state their length; `jobs.audio_header`), at most
`MAX_HEADER_READS` distinct uploads per estimate. URL sources are never fetched (a dry run
calls no one), and MP3/Ogg state no length: those count as unknown, and the answer says
how many, with a note, instead of guessing. An archive source is listed, bounded
(`jobs.archive_count`), and its audio seconds are extrapolated from a sample, labelled so.
"""

from __future__ import annotations

from collections.abc import Sequence

from jobs.archive_count import ArchiveCount
from jobs.audio_header import stored_seconds
from jobs.content_hash import tts_content_hash
from jobs.error_codes import ErrorCode
from jobs.errors import invalid
from jobs.models import Job
from jobs.pricing import CURRENCY, PRICES_AS_OF, BudgetRefused, PriceTable, budget_caps
from jobs.schemas import ArchiveCountOut, BudgetIn, Cost, DryRunOut, DryRunUsage
from jobs.validation import UPLOAD_SOURCE, ItemRow, ValidJob
from storage.keys import upload_key
from storage.objects import ObjectStore

MAX_HEADER_READS = 200  # ~1 s of small GETs: a dry run answers within a request


def routes_of(valid: ValidJob) -> list[tuple[str, str]]:
    """(provider, model) of every route the job's items may take, its own first."""
    return [(valid.provider, valid.model), *((r.provider, r.model) for r in valid.fallback)]


def apply_budget(job: Job, valid: ValidJob, budget: BudgetIn | None, prices: PriceTable) -> None:
    """Record the budget on the job row with the caps workers enforce (invalid_budget when
    it cannot be enforced)."""
    if budget is None:
        return
    try:
        caps = budget_caps(
            valid.kind,
            routes_of(valid),
            characters=budget.characters,
            audio_seconds=budget.audio_seconds,
            cost=budget.cost,
            prices=prices,
        )
    except BudgetRefused as refused:
        raise invalid(ErrorCode.INVALID_BUDGET, str(refused)) from None
    job.budget = budget.model_dump()
    job.cap_characters, job.cap_audio_seconds = caps


def item_hash(valid: ValidJob, tenant_id: str, row: ItemRow) -> str | None:
    """The content hash of a TTS item on the job's own route (None for STT)."""
    if valid.kind != "tts" or row.text is None:
        return None
    return tts_content_hash(
        tenant_id=tenant_id,
        provider=valid.provider,
        model=valid.model,
        voice=row.voice or valid.voice,
        options=valid.options,
        text=row.text,
    )


def _upload_seconds(store: ObjectStore, tenant_id: str, source: str) -> float | None:
    match = UPLOAD_SOURCE.match(source)
    if match is None:
        return None
    return stored_seconds(store, upload_key(tenant_id, match["upload_id"], match["name"]))


def _stt_seconds(
    store: ObjectStore, tenant_id: str, sources: Sequence[str]
) -> tuple[float, int, list[str]]:
    """(known seconds, sources of unknown length, notes) over `sources`."""
    known, unknown, notes = 0.0, 0, []
    cache: dict[str, float | None] = {}
    for source in sources:
        if source not in cache:
            if source.startswith("upload://") and len(cache) < MAX_HEADER_READS:
                cache[source] = _upload_seconds(store, tenant_id, source)
            else:
                cache.setdefault(source, None)
        seconds = cache[source]
        if seconds is None:
            unknown += 1
        else:
            known += seconds
    if unknown:
        notes.append(
            f"{unknown} of {len(sources)} sources have no duration known before transcribing "
            "(URL sources are not fetched by a dry run; MP3/Ogg headers state no length; "
            f"at most {MAX_HEADER_READS} uploads are read); audio_seconds and cost cover "
            "the others."
        )
    return known, unknown, notes


def estimate(
    valid: ValidJob,
    budget: BudgetIn | None,
    *,
    tenant_id: str,
    store: ObjectStore,
    prices: PriceTable,
) -> DryRunOut:
    """The dry run's answer for a validated job: items, usage, cost (on the job's own
    provider: fallbacks are used only when it fails), and whether it fits `budget`."""
    notes: list[str] = []
    if valid.kind == "tts":
        characters = sum(len(r.text or "") for r in valid.items)
        usage = DryRunUsage(characters=characters, audio_seconds=None, unknown_durations=0)
        cost = prices.cost("tts", valid.provider, valid.model, characters, 0.0)
        distinct = len({item_hash(valid, tenant_id, r) for r in valid.items})
        if distinct < len(valid.items):
            notes.append(
                f"{len(valid.items) - distinct} lines repeat an earlier line of this job and will "
                "reuse its audio (no charge); the estimate counts every line."
            )
    else:
        sources = [r.source or "" for r in valid.items]
        seconds, unknown, notes = _stt_seconds(store, tenant_id, sources)
        known = seconds if unknown < len(sources) else None
        usage = DryRunUsage(characters=0, audio_seconds=known, unknown_durations=unknown)
        cost = prices.cost("stt", valid.provider, valid.model, 0, seconds)
    return _answer(len(valid.items), usage, cost, budget, notes)


def _answer(
    items: int | None,
    usage: DryRunUsage,
    cost: float | None,
    budget: BudgetIn | None,
    notes: list[str],
) -> DryRunOut:
    within = None
    if budget is not None:
        within = all(
            (
                budget.characters is None or usage.characters <= budget.characters,
                budget.audio_seconds is None
                or (usage.audio_seconds or 0.0) <= budget.audio_seconds,
                budget.cost is None or cost is None or cost <= budget.cost,
            )
        )
    notes.append(
        f"Costs are estimates at list prices ({PRICES_AS_OF}, SPEECHBATCH_PRICES overrides), "
        "not invoices."
    )
    return DryRunOut(
        items=items,
        items_at_least=items,
        usage=usage,
        cost=Cost(
            estimated=None if cost is None else round(cost, 6),
            currency=CURRENCY,
            prices_as_of=PRICES_AS_OF,
        ),
        within_budget=within,
        notes=notes,
    )


def estimate_archive(
    valid: ValidJob, budget: BudgetIn | None, count: ArchiveCount, *, prices: PriceTable
) -> DryRunOut:
    """The dry run's answer for an archive source from its bounded listing: the items
    counted (a lower bound when the listing stopped early), the audio seconds extrapolated
    from a sample's headers, and the cost of the items that would be transcribed."""
    seconds = count.audio_seconds()
    to_run = count.items - count.skipped - count.unreadable
    cost = None if seconds is None else prices.cost("stt", valid.provider, valid.model, 0, seconds)
    usage = DryRunUsage(
        characters=0,
        audio_seconds=None if seconds is None else round(seconds, 3),
        unknown_durations=to_run if seconds is None else 0,
    )
    notes = [_count_note(count)]
    if count.skipped or count.unreadable:
        notes.append(
            f"{count.skipped} objects were transcribed before with these settings and would "
            f"be skipped, and {count.unreadable} have keys speechbatch does not read and would "
            "fail; neither costs anything."
        )
    if seconds is None and to_run:
        notes.append(
            f"None of the {count.sampled} sampled headers states a duration (MP3/Ogg do not), "
            "so audio_seconds and cost are unknown."
        )
    elif to_run:
        notes.append(
            f"audio_seconds is extrapolated, not measured: the headers of {count.sampled_known} "
            f"objects sampled from the {to_run} to transcribe give seconds per byte, times "
            f"their {count.bytes_to_transcribe} bytes."
        )
    answer = _answer(count.items if count.complete else None, usage, cost, budget, notes)
    answer.items_at_least = count.items
    answer.archive = ArchiveCountOut(
        complete=count.complete,
        stopped_by=count.stopped_by,
        listed=count.listed,
        items=count.items,
        skipped=count.skipped,
        unreadable=count.unreadable,
        bytes=count.bytes,
        bytes_to_transcribe=count.bytes_to_transcribe,
        sampled_headers=count.sampled,
        audio_seconds_basis="none" if seconds is None or not to_run else "extrapolated",
    )
    return answer


def _count_note(count: ArchiveCount) -> str:
    if count.stopped_by == "error":
        return (
            f"The archive could not be listed to the end ({count.error}); the job would retry "
            f"its listing. Counted so far: at least {count.items} items."
        )
    if not count.complete:
        budget = "time" if count.stopped_by == "time" else "object"
        return (
            f"The listing stopped at the dry run's {budget} budget after {count.listed} "
            f"objects: at least {count.items} items (items_at_least; `items` is null). "
            "Narrow the prefix or pattern for an exact count."
        )
    if count.stopped_by == "max_items":
        return (
            f"The job would stop listing at {count.items} items (SPEECHBATCH_ARCHIVE_MAX_ITEMS); "
            "objects after them would not become items."
        )
    return f"The archive was listed: {count.listed} objects, {count.items} of them items."
