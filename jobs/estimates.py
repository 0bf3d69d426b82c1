"""The cost side of a submit: budget caps, content hashes, and the dry run's estimate.

A dry run (`POST /v1/jobs?dry_run=true`, `speechbatch tts --dry-run`) goes through the same
validation as a submit (`jobs.service.dry_run_job`) and then only estimates: nothing is
inserted, published or called. TTS usage is exact (the characters are in the body). STT
audio seconds are known only where they can be read cheaply: an `upload://` source's
header in our own store (WAV and FLAC state their length; `jobs.audio_header`), at most
`MAX_HEADER_READS` distinct uploads per estimate. URL sources are never fetched (a dry run
calls no one), and MP3/Ogg state no length: those count as unknown, and the answer says
how many, with a note, instead of guessing.
"""

from __future__ import annotations

from collections.abc import Sequence

from jobs.audio_header import HEADER_BYTES, header_seconds
from jobs.content_hash import tts_content_hash
from jobs.error_codes import ErrorCode
from jobs.errors import invalid
from jobs.models import Job
from jobs.pricing import CURRENCY, PRICES_AS_OF, BudgetRefused, PriceTable, budget_caps
from jobs.schemas import BudgetIn, Cost, DryRunOut, DryRunUsage
from jobs.validation import UPLOAD_SOURCE, ItemRow, ValidJob
from storage.keys import upload_key
from storage.objects import ObjectNotFound, ObjectStore, StorageUnavailable

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
    key = upload_key(tenant_id, match["upload_id"], match["name"])
    try:
        chunks = store.iter_chunks(key, HEADER_BYTES)
    except (ObjectNotFound, StorageUnavailable):
        return None
    try:
        head = next(chunks, b"")
    except StorageUnavailable:
        return None
    finally:
        close = getattr(chunks, "close", None)  # a generator frees its connection
        if close is not None:
            close()
    return header_seconds(head)


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
        items=len(valid.items),
        usage=usage,
        cost=Cost(
            estimated=None if cost is None else round(cost, 6),
            currency=CURRENCY,
            prices_as_of=PRICES_AS_OF,
        ),
        within_budget=within,
        notes=notes,
    )
