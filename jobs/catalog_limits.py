"""Per-credential call limits: the catalog's figures, with `SPEECHBATCH_PROVIDER_LIMITS` on top.

`max_concurrency`/`max_rps` in the catalog (`jobs.catalog`) are the vendor's per-credential
limits that `workers.throttle` enforces across all workers; `SPEECHBATCH_PROVIDER_LIMITS`
overrides them (`provider_limits`), checked at start-up by `parse_limit_overrides`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from jobs.catalog import PROVIDERS, limits_name


@dataclass(frozen=True)
class ProviderLimits:
    """Per-credential call limits: in-flight requests and requests/s (None: no rate limit)."""

    max_concurrency: int
    max_rps: float | None = None


_OVERRIDE = re.compile(r"^([a-z0-9_-]+)=(\d+)(?:/(\d+(?:\.\d+)?))?$")


def parse_limit_overrides(text: str) -> dict[str, ProviderLimits]:
    """`"slng=16/50,deepgram=15"` → limits per provider; ValueError naming a bad entry.

    Each entry replaces that provider's limits whole: without `/rps` it has no rate limit.
    """
    parsed: dict[str, ProviderLimits] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        match = _OVERRIDE.match(part.replace(" ", ""))
        if match is None or int(match.group(2)) < 1 or float(match.group(3) or 1) <= 0:
            raise ValueError(
                f"bad provider limit {part!r}: use name=concurrency[/rps] with concurrency >= 1"
                " and rps > 0, e.g. slng=16/50"
            )
        rps = float(match.group(3)) if match.group(3) is not None else None
        parsed[match.group(1)] = ProviderLimits(int(match.group(2)), rps)
    return parsed


def provider_limits(overrides: str = "") -> dict[str, ProviderLimits]:
    """The catalog's limits per provider (and per `provider-kind` where a kind has its own)
    with `SPEECHBATCH_PROVIDER_LIMITS` applied on top.

    Overrides may name providers the catalog does not list yet; they are added as given.
    """
    limits = {
        name: ProviderLimits(spec.max_concurrency, spec.max_rps) for name, spec in PROVIDERS.items()
    }
    for name, spec in PROVIDERS.items():
        for kind, (concurrency, rps) in spec.kind_limits.items():
            limits[limits_name(name, kind)] = ProviderLimits(concurrency, rps)
    return limits | parse_limit_overrides(overrides)
