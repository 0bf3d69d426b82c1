"""What speech costs: a price table per provider (and model), job cost, and budget caps.

Prices are USD list-price ESTIMATES, not invoices: TTS per million characters, STT per
audio minute, as the vendors published them for pay-as-you-go in 2025 (`PRICES_AS_OF`).
Where a vendor bills another unit (OpenAI's gpt-4o-mini-tts bills tokens, SLNG bills its
own credits) the figure is our conversion and marked UNCONFIRMED. A deployment with
negotiated rates replaces any of them with one setting, `SPEECHBATCH_PRICES`, a JSON object
keyed by `provider` or `provider/model`:

    {"openai": {"tts_per_million_chars": 12}, "deepgram/nova-3": {"stt_per_minute": 0.0036}}

It is parsed (and refused with a sentence naming the bad entry) at start-up. Usage is what
the job row counts (`jobs.usage`); cost is derived from it when a job is shown, so a price
change re-prices old jobs too: the cost is an estimate at today's prices, said as such.
A `budget.cost` is turned into a character or audio cap at submit, at the dearest price
among the routes the job may use, so a job that fails over never spends more than asked.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

from jobs.catalog import PROVIDERS

CURRENCY = "USD"
PRICES_AS_OF = "2025-10"
MAX_PRICE = 1_000_000.0  # a bound on any one figure: a typo, not a rate, beyond it
MAX_PRICES_JSON = 64 * 1024
MAX_CAP_CHARACTERS = 10**15  # well inside a BIGINT whatever the price
FIELDS = ("tts_per_million_chars", "stt_per_minute")


@dataclass(frozen=True)
class Price:
    """USD per million characters spoken, and per minute of audio transcribed (None: unknown)."""

    tts_per_million_chars: float | None = None
    stt_per_minute: float | None = None

    def per_unit(self, kind: str) -> float | None:
        """USD per character (TTS) or per audio second (STT)."""
        if kind == "tts":
            rate = self.tts_per_million_chars
            return None if rate is None else rate / 1_000_000
        rate = self.stt_per_minute
        return None if rate is None else rate / 60

    def cost(self, kind: str, characters: int, audio_seconds: float) -> float | None:
        """What `characters` (TTS) or `audio_seconds` (STT) cost at this price."""
        unit = self.per_unit(kind)
        if unit is None:
            return None
        return unit * (characters if kind == "tts" else audio_seconds)


# Provider-wide figures, then per-model figures where the vendor prices models apart.
DEFAULT_PRICES: dict[str, Price] = {
    # UNCONFIRMED: SLNG bills credits per upstream model; these are its default upstreams'
    # own list prices (Deepgram Aura-2, Nova-3).
    "slng": Price(30.0, 0.0043),
    # UNCONFIRMED: Smallest AI's Waves plans bill minutes of audio; ~20 USD per 1M characters
    # is its pay-as-you-go minute price at ~15 characters a second.
    "smallest": Price(20.0, 0.0025),
    "smallest/lightning_v3.1_pro": Price(40.0, None),
    "deepgram": Price(30.0, 0.0043),  # Aura-2 0.030/1k characters; Nova-3 pre-recorded
    "deepgram/aura": Price(15.0, None),
    "deepgram/base": Price(None, 0.0125),
    **{
        f"deepgram/{m}": Price(None, 0.0048)
        for m in PROVIDERS["deepgram"].stt_models
        if m.startswith("whisper")
    },
    "openai": Price(15.0, 0.006),  # tts-1; whisper-1
    "openai/tts-1-hd": Price(30.0, None),
    # UNCONFIRMED: billed per token; ~0.015 USD a minute of speech, about 15 per 1M characters.
    "openai/gpt-4o-mini-tts": Price(15.0, None),
    "openai/gpt-4o-mini-transcribe": Price(None, 0.003),
    # Multilingual / v3 at 0.10 per 1k characters, Flash / Turbo at 0.05; Scribe 0.40 an hour.
    "elevenlabs": Price(100.0, 0.40 / 60),
    **{
        f"elevenlabs/{m}": Price(50.0, None)
        for m in PROVIDERS["elevenlabs"].tts_models
        if "flash" in m or "turbo" in m
    },
    "local": Price(0.0, 0.0),  # espeak-ng and pocketsphinx run on your own CPU
}


class PriceTable:
    """Prices by provider, with per-model entries taking precedence field by field."""

    def __init__(self, entries: Mapping[str, Price]) -> None:
        self.entries = dict(entries)

    def price(self, provider: str, model: str) -> Price:
        """The price of `provider`'s `model`: the model's own figures, else the provider's."""
        base = self.entries.get(provider, Price())
        own = self.entries.get(f"{provider}/{model}")
        if own is None:
            return base
        return Price(
            own.tts_per_million_chars
            if own.tts_per_million_chars is not None
            else base.tts_per_million_chars,
            own.stt_per_minute if own.stt_per_minute is not None else base.stt_per_minute,
        )

    def cost(
        self, kind: str, provider: str, model: str, characters: int, audio_seconds: float
    ) -> float | None:
        return self.price(provider, model).cost(kind, characters, audio_seconds)

    def dearest_unit(self, kind: str, routes: Iterable[tuple[str, str]]) -> float | None:
        """The highest per-character (TTS) or per-second (STT) price among `routes`, or None
        when one of them has no price (a cost cap then cannot be enforced)."""
        units = [self.price(provider, model).per_unit(kind) for provider, model in routes]
        if any(unit is None for unit in units):
            return None
        return max((u for u in units if u is not None), default=0.0)


def _figure(where: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"SPEECHBATCH_PRICES[{where!r}].{name} must be a number, not {value!r}")
    if not math.isfinite(value) or not 0 <= value <= MAX_PRICE:
        raise ValueError(
            f"SPEECHBATCH_PRICES[{where!r}].{name} = {value!r} is outside 0..{MAX_PRICE:,.0f} USD"
        )
    return float(value)


def _entry(key: str, raw: Any) -> Price:
    provider, _, model = key.partition("/")
    spec = PROVIDERS.get(provider)
    if spec is None:
        known = ", ".join(sorted(PROVIDERS))
        raise ValueError(f"SPEECHBATCH_PRICES names unknown provider {provider!r} (known: {known})")
    if model and model not in (*spec.tts_models, *spec.stt_models):
        raise ValueError(f"SPEECHBATCH_PRICES names {model!r}, which is not a model of {provider}")
    if not isinstance(raw, dict) or not raw:
        raise ValueError(
            f"SPEECHBATCH_PRICES[{key!r}] must be an object with {' and/or '.join(FIELDS)}"
        )
    unknown = set(raw) - set(FIELDS)
    if unknown:
        raise ValueError(
            f"SPEECHBATCH_PRICES[{key!r}] has unknown field(s) {', '.join(sorted(unknown))}; "
            f"use {' and/or '.join(FIELDS)}"
        )
    return Price(**{name: _figure(key, name, value) for name, value in raw.items()})


@lru_cache(maxsize=8)
def price_table(overrides: str = "") -> PriceTable:
    """The built-in table with `SPEECHBATCH_PRICES` (JSON) applied; ValueError naming the bad
    part. An override replaces only the fields it names."""
    if len(overrides) > MAX_PRICES_JSON:
        raise ValueError(f"SPEECHBATCH_PRICES is over {MAX_PRICES_JSON} characters")
    entries = dict(DEFAULT_PRICES)
    if not overrides.strip():
        return PriceTable(entries)
    try:
        parsed = json.loads(overrides)
    except ValueError as error:
        raise ValueError(f"SPEECHBATCH_PRICES is not JSON: {error}") from None
    if not isinstance(parsed, dict):
        raise ValueError('SPEECHBATCH_PRICES must be a JSON object: {"provider[/model]": {...}}')
    for key, raw in parsed.items():
        given = _entry(key, raw)
        fields = {k: v for k, v in vars(given).items() if v is not None}
        entries[key] = replace(entries.get(key, Price()), **fields)
    return PriceTable(entries)


DEFAULT_TABLE = price_table("")


class BudgetRefused(ValueError):
    """A budget this job cannot enforce; the message says why and what to send instead."""


def budget_caps(
    kind: str,
    routes: Iterable[tuple[str, str]],
    *,
    characters: int | None,
    audio_seconds: float | None,
    cost: float | None,
    prices: PriceTable,
) -> tuple[int | None, float | None]:
    """The (character cap, audio-seconds cap) a worker enforces for a budget.

    A cost cap becomes a character cap (TTS) or an audio cap (STT) at the dearest price
    among `routes` (the job's provider and its fallbacks), the tighter of it and the cap
    given directly winning; a free route set (local) has no cost cap to enforce. A
    character cap is for TTS only: an STT job's characters are its transcripts, known only
    after each call.
    """
    if characters is not None and kind != "tts":
        raise BudgetRefused("budget.characters is for TTS jobs; cap STT by audio_seconds or cost.")
    cap_chars, cap_audio = characters, audio_seconds
    if cost is not None:
        routes = list(routes)
        unit = prices.dearest_unit(kind, routes)
        if unit is None:
            named = ", ".join(f"{p}/{m}" for p, m in routes)
            raise BudgetRefused(
                f"budget.cost needs a {kind.upper()} price for every route ({named}); set one "
                "with SPEECHBATCH_PRICES or cap by characters/audio_seconds instead."
            )
        if unit > 0 and kind == "tts":
            by_cost = int(min(cost / unit, MAX_CAP_CHARACTERS))  # a tiny price: no overflow
            cap_chars = by_cost if cap_chars is None else min(cap_chars, by_cost)
        elif unit > 0:
            by_cost_s = cost / unit
            cap_audio = by_cost_s if cap_audio is None else min(cap_audio, by_cost_s)
    return cap_chars, cap_audio
