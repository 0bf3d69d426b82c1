"""Rules a job body must pass before anything is stored or queued, each with its own code.

Per-item problems that only the provider can judge (text over its limit, audio it cannot
read) are not rejected here: they fail that one item with a reason, and the job goes on.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from jobs.catalog import PROVIDERS, ProviderSpec, get_provider_spec
from jobs.error_codes import ErrorCode
from jobs.errors import ApiError, invalid
from jobs.netpolicy import Allowlist, UnsafeUrl, check_url
from jobs.records import Route
from jobs.schemas import JobCreate
from storage.keys import UnsafeKey, validate_prefix

UPLOAD_SOURCE = re.compile(
    r"^upload://(?P<upload_id>[0-9a-f]{32})/(?P<name>[A-Za-z0-9._-]{1,120})$"
)
# Only these go to the URL policy; any other scheme stays `invalid_source` as before.
HTTP_SOURCE = re.compile(r"^https?:", re.IGNORECASE)


@dataclass(frozen=True)
class ItemRow:
    seq: int
    external_id: str
    text: str | None
    source: str | None
    voice: str | None = None


@dataclass(frozen=True)
class ValidJob:
    kind: str
    provider: str
    model: str
    voice: str | None
    options: dict[str, Any]
    output_prefix: str
    items: list[ItemRow]
    fallback: list[Route] = field(default_factory=list)
    stitched: bool = False


def _check_item_id(value: str, index: int) -> str:
    bad_char = any(unicodedata.category(ch).startswith("C") for ch in value)
    if not value.strip() or bad_char or "/" in value or "\\" in value or ".." in value:
        raise invalid(
            ErrorCode.INVALID_ITEM_ID,
            f"items[{index}].id {value!r} is not allowed: ids must be non-empty and contain no "
            "'/', '\\', '..' or control characters.",
        )
    return value


def _check_text(text: str | None, index: int) -> str:
    if text is None or not text.strip():
        raise invalid(
            ErrorCode.EMPTY_TEXT, f"items[{index}].text is empty; every TTS item needs text."
        )
    # Cs: an unpaired surrogate, which no database can store as UTF-8 (it was a 500).
    if any(unicodedata.category(ch) in ("Cc", "Cs") and ch not in "\n\t\r" for ch in text):
        raise invalid(
            ErrorCode.INVALID_TEXT,
            f"items[{index}].text contains control characters or an unpaired surrogate; "
            "remove them.",
        )
    # Only punctuation, symbols or spaces: a provider would bill a breath of silence for it.
    if not any(unicodedata.category(ch)[0] in "LN" for ch in text):
        raise invalid(
            ErrorCode.EMPTY_TEXT,
            f"items[{index}].text has no letters or digits to speak ({text.strip()[:20]!r}).",
        )
    return text


def _check_source(source: str | None, index: int, allow: Allowlist) -> str:
    if not source:
        raise invalid(
            ErrorCode.MISSING_SOURCE, f"items[{index}].source is empty; STT items need one."
        )
    if HTTP_SOURCE.match(source):
        # Literal addresses are judged here; host names are resolved and judged by the worker.
        try:
            check_url(source, allow)
        except UnsafeUrl as exc:
            code = ErrorCode.FORBIDDEN_SOURCE if exc.code == "forbidden_address" else exc.code
            raise invalid(code, f"items[{index}].source is refused: {exc.message}") from None
        return source
    if not UPLOAD_SOURCE.match(source):
        raise invalid(
            ErrorCode.INVALID_SOURCE,
            f"items[{index}].source {source!r} is not a source this server can read: upload the "
            "file with POST /v1/uploads and use the `source` it returns, or give an http(s) URL.",
        )
    return source


def _check_route(
    kind: str, provider: str, model: str | None, transport: str, where: str = ""
) -> tuple[ProviderSpec, str]:
    """The spec and model of a provider a job names (its own, or a fallback `where`)."""
    spec = get_provider_spec(provider)
    if spec is None:
        raise invalid(
            ErrorCode.UNKNOWN_PROVIDER,
            f"{where}Provider {provider!r} is not supported "
            f"(known: {', '.join(sorted(PROVIDERS))}).",
        )
    replacement = spec.retired_models.get(model or "")
    if replacement is not None:
        raise invalid(
            ErrorCode.MODEL_DEPRECATED,
            f"{where}Model {model!r} of {spec.name} is retired; use {replacement!r} instead.",
        )
    chosen = model or spec.default_model(kind)
    if chosen is None or chosen not in spec.models(kind):
        known = ", ".join(spec.models(kind)) or "none"
        raise invalid(
            ErrorCode.UNKNOWN_MODEL,
            f"{where}Model {model!r} is not a {kind.upper()} model of {spec.name} "
            f"(known: {known}).",
        )
    refused = spec.transport_refusal(kind, transport)
    if refused is not None:
        raise invalid(ErrorCode.INVALID_OPTION, where + refused)
    return spec, chosen


def validate_job(body: JobCreate, *, max_items: int, allow: Allowlist = ()) -> ValidJob:
    """Check a job body against the catalog and limits; raise ApiError with a precise code.

    `allow` holds the networks source URLs may reach although private (settings'
    `allow_private_networks` through `parse_allowlist`).
    """
    spec, model = _check_route(body.kind, body.provider, body.model, body.options.transport)
    fallback = []
    for n, entry in enumerate(body.fallback):
        where = f"fallback[{n}]: "
        if entry.provider == spec.name and (entry.model or model) == model:
            raise invalid(ErrorCode.INVALID_OPTION, f"{where}it names the job's own provider.")
        other, other_model = _check_route(
            body.kind, entry.provider, entry.model, body.options.transport, where
        )
        voice_of = entry.voice or (other.default_voice if body.kind == "tts" else None)
        fallback.append(Route(other.name, other_model, voice_of))
    if not body.items and body.source is None:  # an archive's items come from its listing
        raise invalid(ErrorCode.NO_ITEMS, "The job has no items; send at least one.")
    if len(body.items) > max_items:
        raise ApiError(
            413, ErrorCode.TOO_MANY_ITEMS, f"A job may hold at most {max_items} items; split it."
        )
    if body.output.stitched and body.kind != "tts":
        raise invalid(ErrorCode.INVALID_OPTION, "output.stitched is for TTS jobs only.")
    try:
        prefix = validate_prefix(body.output.prefix) if body.output.prefix else ""
    except UnsafeKey as exc:
        raise invalid(
            ErrorCode.INVALID_OUTPUT_PREFIX, f"output.prefix is not allowed: {exc}"
        ) from None

    seen: set[str] = set()
    rows: list[ItemRow] = []
    for index, item in enumerate(body.items):
        seq = index + 1
        external_id = _check_item_id(item.id, index) if item.id is not None else str(seq)
        if external_id in seen:
            raise invalid(
                ErrorCode.DUPLICATE_ITEM_ID,
                f"items[{index}].id {external_id!r} appears more than once.",
            )
        seen.add(external_id)
        if body.kind == "tts":
            text = _check_text(item.text, index)
            rows.append(ItemRow(seq, external_id, text, None, item.voice))
        else:
            rows.append(ItemRow(seq, external_id, None, _check_source(item.source, index, allow)))

    voice = body.voice or (spec.default_voice if body.kind == "tts" else None)
    return ValidJob(
        kind=body.kind,
        provider=spec.name,
        model=model,
        voice=voice,
        options=body.options.model_dump(),
        output_prefix=prefix,
        items=rows,
        fallback=fallback,
        stitched=body.output.stitched,
    )
