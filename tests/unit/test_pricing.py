"""The price table, its override setting, budget caps, job cost and dry-run estimates."""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from pydantic import ValidationError

from jobs.audio_header import header_seconds
from jobs.catalog import PROVIDERS
from jobs.estimates import estimate
from jobs.models import Job
from jobs.pricing import (
    DEFAULT_TABLE,
    BudgetRefused,
    Price,
    budget_caps,
    price_table,
)
from jobs.schemas import BudgetIn, JobCreate
from jobs.settings import Settings
from jobs.usage import RouteUsage, usage_and_cost
from jobs.validation import validate_job
from storage.memory import MemoryObjectStore


def test_every_catalog_model_has_a_price() -> None:
    """Each provider's every TTS and STT model is priced, so a job's cost is never unknown."""
    for name, spec in PROVIDERS.items():
        for model in spec.tts_models:
            assert DEFAULT_TABLE.price(name, model).tts_per_million_chars is not None, model
        for model in spec.stt_models:
            assert DEFAULT_TABLE.price(name, model).stt_per_minute is not None, model


def test_a_model_price_wins_over_its_providers_field_by_field() -> None:
    """tts-1-hd has its own TTS price; its STT figure (none of its own) is the provider's."""
    hd = DEFAULT_TABLE.price("openai", "tts-1-hd")
    assert hd.tts_per_million_chars == 30.0
    assert hd.stt_per_minute == DEFAULT_TABLE.price("openai", "whisper-1").stt_per_minute
    assert DEFAULT_TABLE.price("openai", "tts-1").tts_per_million_chars == 15.0


def test_costs_are_per_million_characters_and_per_audio_minute() -> None:
    """1,000 characters at 30/1M cost 0.03; 90 s at 0.006/min cost 0.009."""
    price = Price(30.0, 0.006)
    assert price.cost("tts", 1000, 0.0) == pytest.approx(0.03)
    assert price.cost("stt", 0, 90.0) == pytest.approx(0.009)


def test_an_override_replaces_only_the_fields_it_names() -> None:
    """SPEECHBATCH_PRICES sets openai's TTS price and adds a model entry; STT stays listed."""
    table = price_table(
        '{"openai": {"tts_per_million_chars": 12}, "deepgram/nova-3": {"stt_per_minute": 0.001}}'
    )
    assert table.price("openai", "tts-1").tts_per_million_chars == 12.0
    assert table.price("openai", "whisper-1").stt_per_minute == 0.006
    assert table.price("deepgram", "nova-3").stt_per_minute == 0.001
    assert table.price("deepgram", "nova-2").stt_per_minute == 0.0043


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "JSON object"),
        ('{"acme": {"tts_per_million_chars": 1}}', "unknown provider 'acme'"),
        ('{"openai/tts-9": {"tts_per_million_chars": 1}}', "not a model of openai"),
        ('{"openai": {"per_char": 1}}', "unknown field(s) per_char"),
        ('{"openai": {"tts_per_million_chars": -1}}', "outside 0.."),
        ('{"openai": {"tts_per_million_chars": NaN}}', "outside 0.."),
        ('{"openai": {"tts_per_million_chars": 1e9}}', "outside 0.."),
        ('{"openai": {"tts_per_million_chars": true}}', "must be a number"),
        ('{"openai": {}}', "must be an object"),
    ],
)
def test_bad_prices_are_refused_at_start_up_naming_the_entry(raw: str, says: str) -> None:
    """A bad SPEECHBATCH_PRICES fails building the settings, with the reason in the message."""
    with pytest.raises(ValidationError) as refused:
        Settings(prices=raw)
    assert says in str(refused.value)


def test_settings_hand_out_the_overridden_table() -> None:
    """Settings(prices=...) gives a table with the override applied."""
    settings = Settings(prices='{"local": {"tts_per_million_chars": 5}}')
    assert settings.price_table().price("local", "espeak-ng").tts_per_million_chars == 5.0


def test_a_cost_cap_becomes_characters_at_the_dearest_route() -> None:
    """1 USD over openai tts-1 (15/1M) with a tts-1-hd fallback (30/1M) caps 33,333 chars."""
    caps = budget_caps(
        "tts",
        [("openai", "tts-1"), ("openai", "tts-1-hd")],
        characters=None,
        audio_seconds=None,
        cost=1.0,
        prices=DEFAULT_TABLE,
    )
    assert caps == (33_333, None)
    tighter = budget_caps(
        "tts", [("openai", "tts-1")], characters=100, audio_seconds=5.0, cost=1.0,
        prices=DEFAULT_TABLE,
    )  # fmt: skip
    assert tighter == (100, 5.0)


def test_stt_cost_caps_audio_and_character_caps_are_refused_for_stt() -> None:
    """An STT cost cap becomes audio seconds; a character cap on STT is refused."""
    cap_chars, cap_audio = budget_caps(
        "stt", [("openai", "whisper-1")], characters=None, audio_seconds=None, cost=0.06,
        prices=DEFAULT_TABLE,
    )  # fmt: skip
    assert cap_chars is None and cap_audio == pytest.approx(600.0)
    with pytest.raises(BudgetRefused, match="TTS jobs"):
        budget_caps(
            "stt", [("openai", "whisper-1")], characters=10, audio_seconds=None, cost=None,
            prices=DEFAULT_TABLE,
        )  # fmt: skip


def test_free_routes_have_no_cost_cap() -> None:
    """The local engine costs nothing, so a cost budget caps nothing on it."""
    caps = budget_caps(
        "tts", [("local", "espeak-ng")], characters=None, audio_seconds=None, cost=0.01,
        prices=DEFAULT_TABLE,
    )  # fmt: skip
    assert caps == (None, None)


def test_budget_bounds_are_checked_by_the_schema() -> None:
    """Zero, negative, infinite and absurd caps are refused before anything else."""
    for bad in ({"characters": 0}, {"cost": -1}, {"audio_seconds": math.inf}, {"cost": 1e12}):
        with pytest.raises(ValidationError):
            BudgetIn.model_validate(bad)


def _job(**fields: Any) -> Job:
    base: dict[str, Any] = {
        "kind": "tts",
        "provider": "openai",
        "model": "tts-1",
        "fallback": [{"provider": "elevenlabs", "model": "eleven_flash_v2_5", "voice": None}],
        "usage_characters": 3000,
        "usage_audio_seconds": 200.0,
    }
    return Job(**(base | fields))


def test_job_usage_is_split_by_provider_and_priced_per_route() -> None:
    """1,000 of 3,000 characters went to the fallback: 2,000 at 15/1M plus 1,000 at 50/1M."""
    usage, cost = usage_and_cost(_job(), [RouteUsage(1, 1000, 60.0)], DEFAULT_TABLE)
    assert usage.by_provider["openai"].characters == 2000
    assert usage.by_provider["elevenlabs"].characters == 1000
    assert usage.by_provider["elevenlabs"].audio_seconds == 60.0
    assert cost.estimated == pytest.approx(2000 * 15e-6 + 1000 * 50e-6)
    assert cost.currency == "USD"


def test_a_job_without_fallbacks_is_all_its_own_providers() -> None:
    """No rerouted usage: the totals are the job's own provider's, cost at its price."""
    usage, cost = usage_and_cost(_job(fallback=None), [], DEFAULT_TABLE)
    assert list(usage.by_provider) == ["openai"]
    assert cost.estimated == pytest.approx(3000 * 15e-6)


def _wav(seconds: float, rate: int = 16000, fmt: str = "WAV") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, np.zeros(int(seconds * rate), dtype="int16"), rate, format=fmt)
    return buffer.getvalue()


def test_headers_state_wav_and_flac_durations_and_nothing_else() -> None:
    """WAV and FLAC headers give their length; other bytes (and a cut header) give None."""
    assert header_seconds(_wav(2.5)[:4096]) == pytest.approx(2.5)
    assert header_seconds(_wav(1.25, fmt="FLAC")[:4096]) == pytest.approx(1.25)
    assert header_seconds(b"ID3\x04" + b"\0" * 100) is None
    assert header_seconds(_wav(1.0)[:20]) is None


def test_a_tts_estimate_counts_characters_and_notes_repeats() -> None:
    """Three lines of 5, 5 and 4 characters on tts-1: 14 characters, priced, one repeat."""
    body = JobCreate.model_validate(
        {
            "kind": "tts",
            "provider": "openai",
            "items": [{"text": "hello"}, {"text": "hello"}, {"text": "ciao"}],
            "budget": {"characters": 10},
        }
    )
    valid = validate_job(body, max_items=10)
    out = estimate(
        valid, body.budget, tenant_id="t", store=MemoryObjectStore(), prices=DEFAULT_TABLE
    )
    assert (out.items, out.usage.characters) == (3, 14)
    assert out.cost.estimated == pytest.approx(14 * 15e-6)
    assert out.within_budget is False
    assert any("repeat" in note for note in out.notes)


def test_a_tiny_price_cannot_overflow_the_character_cap() -> None:
    """A near-zero override turns a cost budget into a bounded cap, never a huge integer."""
    table = price_table('{"openai": {"tts_per_million_chars": 1e-12}}')
    cap, _ = budget_caps(
        "tts", [("openai", "tts-1")], characters=None, audio_seconds=None, cost=1e7, prices=table
    )
    assert cap is not None and cap <= 10**15


def test_an_unread_split_of_a_fallback_job_is_shown_as_unknown() -> None:
    """Without its rerouted usage, a job with fallbacks shows totals but no per-provider
    split and no cost, instead of crediting everything to its own provider."""
    usage, cost = usage_and_cost(_job(), None, DEFAULT_TABLE)
    assert (usage.characters, usage.by_provider, cost.estimated) == (3000, {}, None)
