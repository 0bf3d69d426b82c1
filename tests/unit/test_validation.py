"""Job bodies are checked before anything is stored, each failure with its own code."""

from typing import Any

import pytest

from jobs.errors import ApiError
from jobs.schemas import JobCreate
from jobs.validation import validate_job


def body(**overrides: Any) -> JobCreate:
    data: dict[str, Any] = {"kind": "tts", "provider": "slng", "items": [{"text": "hello"}]}
    data.update(overrides)
    return JobCreate.model_validate(data)


def code_of(job: JobCreate, max_items: int = 100) -> str:
    with pytest.raises(ApiError) as caught:
        validate_job(job, max_items=max_items)
    return caught.value.code


def test_defaults_are_filled_from_the_catalog() -> None:
    """An SLNG TTS job without model or voice gets SLNG's defaults and item ids 1..n."""
    valid = validate_job(body(items=[{"text": "a"}, {"text": "b"}]), max_items=10)
    assert valid.model == "slng/deepgram/aura:2-en"
    assert valid.voice == "aura-2-thalia-en"
    assert [i.external_id for i in valid.items] == ["1", "2"]


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"items": [{"text": ""}]}, "empty_text"),
        ({"items": [{"text": "  \n\t "}]}, "empty_text"),
        ({"items": [{"text": "?! ... -- \u2026"}]}, "empty_text"),  # only punctuation
        ({"fallback": [{"provider": "acme"}]}, "unknown_provider"),
        (
            {"output": {"stitched": True}, "kind": "stt", "items": [{"source": "upload://x"}]},
            "invalid_option",
        ),
        ({"items": [{"text": "ok\x00no"}]}, "invalid_text"),
        ({"provider": "acme"}, "unknown_provider"),
        ({"model": "slng/acme/voice:1"}, "unknown_model"),
        ({"model": "slng/deepgram/nova:3-en"}, "unknown_model"),  # an STT model for TTS
        ({"items": []}, "no_items"),
        ({"items": [{"id": "../etc/passwd", "text": "x"}]}, "invalid_item_id"),
        ({"items": [{"id": "a/b", "text": "x"}]}, "invalid_item_id"),
        ({"items": [{"id": "..", "text": "x"}]}, "invalid_item_id"),
        ({"items": [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]}, "duplicate_item_id"),
        ({"output": {"prefix": "../other-tenant"}}, "invalid_output_prefix"),
    ],
)
def test_bad_bodies_get_stable_codes(overrides: dict[str, Any], code: str) -> None:
    """Each kind of bad input is refused with its own code."""
    assert code_of(body(**overrides)) == code


def test_unknown_provider_names_the_ones_that_exist() -> None:
    """Asking for a provider that does not exist lists the valid names in the message."""
    with pytest.raises(ApiError) as caught:
        validate_job(body(provider="acme"), max_items=10)
    assert "(known: deepgram, elevenlabs, local, openai, slng, smallest)" in caught.value.message


def test_too_many_items_is_a_413() -> None:
    """A job over the item cap is refused as too large, not as malformed."""
    with pytest.raises(ApiError) as caught:
        validate_job(body(items=[{"text": "x"}] * 5), max_items=4)
    assert (caught.value.status, caught.value.code) == (413, "too_many_items")


@pytest.mark.parametrize(
    ("source", "ok"),
    [
        ("upload://" + "a" * 32 + "/call.wav", True),
        ("upload://" + "a" * 32 + "/../x.wav", False),
        ("file:///etc/passwd", False),
        ("", False),
    ],
)
def test_stt_sources_must_be_uploads(source: str, ok: bool) -> None:
    """STT items may only name sources this server issued."""
    job = body(kind="stt", items=[{"source": source}])
    if ok:
        assert validate_job(job, max_items=10).items[0].source == source
    else:
        assert code_of(job) in {"invalid_source", "missing_source"}


def test_per_item_voice_is_kept() -> None:
    """A CSV's per-line voice travels with the item."""
    valid = validate_job(body(items=[{"text": "x", "voice": "aura-2-orion-en"}]), max_items=10)
    assert valid.items[0].voice == "aura-2-orion-en"


# --- options.transport and retired models --------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "kind", "transport"),
    [
        ("slng", "tts", "http"),
        ("slng", "stt", "http"),
        ("smallest", "tts", "http"),
        ("smallest", "tts", "stream"),
        ("smallest", "stt", "http"),
        ("smallest", "stt", "auto"),
        ("slng", "tts", "websocket"),
        ("slng", "stt", "websocket"),
        ("smallest", "tts", "websocket"),
    ],
)
def test_transports_a_vendor_offers_are_accepted(provider: str, kind: str, transport: str) -> None:
    """Each transport the catalog lists for a vendor and kind passes and is kept in the options."""
    items = [{"text": "hi"}] if kind == "tts" else [{"source": "upload://" + "a" * 32 + "/a.wav"}]
    job = body(provider=provider, kind=kind, items=items, options={"transport": transport})
    assert validate_job(job, max_items=10).options["transport"] == transport


def test_transport_defaults_to_auto() -> None:
    """A job that names no transport is stored with `auto`, resolved by the adapter per call."""
    assert validate_job(body(), max_items=10).options["transport"] == "auto"


@pytest.mark.parametrize(
    ("provider", "kind", "transport", "offered"),
    [
        ("smallest", "stt", "stream", "which offers http (or auto)"),
        ("smallest", "stt", "websocket", "which offers http (or auto)"),
        ("slng", "tts", "stream", "which offers http, websocket (or auto)"),
        ("local", "tts", "websocket", "which offers none"),
    ],
)
def test_a_transport_the_vendor_lacks_is_a_422_naming_what_it_offers(
    provider: str, kind: str, transport: str, offered: str
) -> None:
    """Asking a vendor for a transport it does not offer for that kind is invalid_option, and
    the message lists the transports it does offer."""
    items = [{"text": "hi"}] if kind == "tts" else [{"source": "upload://" + "a" * 32 + "/a.wav"}]
    job = body(provider=provider, kind=kind, items=items, options={"transport": transport})
    with pytest.raises(ApiError) as caught:
        validate_job(job, max_items=10)
    assert (caught.value.status, caught.value.code) == (422, "invalid_option")
    assert f"options.transport {transport!r}" in caught.value.message
    assert offered in caught.value.message


def test_an_unknown_transport_is_refused_by_the_schema() -> None:
    """A transport name outside auto/http/stream/websocket never reaches the catalog check."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="'auto', 'http', 'stream' or 'websocket'"):
        body(options={"transport": "carrier-pigeon"})


def test_smallest_defaults_and_a_retired_model() -> None:
    """Smallest gets Lightning v3.1 and magnus by default; a retired model is model_deprecated
    naming its successor, before any item is queued."""
    valid = validate_job(body(provider="smallest"), max_items=10)
    assert (valid.model, valid.voice) == ("lightning_v3.1", "magnus")
    with pytest.raises(ApiError) as caught:
        validate_job(body(provider="smallest", model="lightning-v2"), max_items=10)
    assert (caught.value.status, caught.value.code) == (422, "model_deprecated")
    assert "'lightning_v3.1'" in caught.value.message
