"""The worker metrics' label values stay within bounded vocabularies (workers.metrics)."""

from __future__ import annotations

from prometheus_client import REGISTRY

from jobs.catalog import PROVIDERS
from workers import metrics
from workers.outcomes import Outcome


def test_catalog_models_are_kept_and_anything_else_is_other() -> None:
    """A catalog model id is its own label; an unknown model, a missing one, another vendor's
    model or an unknown provider become `other`, so tenants cannot mint series."""
    for name, spec in PROVIDERS.items():
        for model in (*spec.tts_models, *spec.stt_models):
            assert metrics.model_label(name, model) == model
    assert metrics.model_label("openai", "my-finetune-1234") == "other"
    assert metrics.model_label("openai", None) == "other"
    assert metrics.model_label("openai", "espeak-ng") == "other"
    assert metrics.model_label("nobody", "espeak-ng") == "other"


def test_provider_and_limit_names_are_bounded() -> None:
    """Providers and their per-kind limits names pass; any other string is `other`."""
    assert metrics.provider_label("slng") == "slng"
    assert metrics.provider_label("smallest-stt") == "smallest-stt"
    assert metrics.provider_label("https://evil.example/") == "other"
    assert metrics.provider_label("job_0123456789abcdef") == "other"


def test_transport_and_webhook_outcome_labels_are_closed_sets() -> None:
    """Transports are the options vocabulary (none asked: auto); webhook attempts are one of
    three outcomes whatever the status code."""
    assert metrics.transport_label(None) == "auto"
    assert metrics.transport_label("websocket") == "websocket"
    assert metrics.transport_label("carrier-pigeon") == "other"
    assert metrics.transport_label(["http"]) == "other"
    outcomes = {metrics.webhook_outcome(code) for code in (None, 200, 204, 301, 404, 500, 599)}
    assert outcomes == {"unreachable", "delivered", "rejected"}


def test_items_finished_takes_only_outcome_values() -> None:
    """Counting an item's outcome labels it with the Outcome member's value and the bounded
    provider, and the counter moves by one."""
    name, labels = "speechbatch_items_finished_total", {"provider": "other", "outcome": "lost"}
    before = REGISTRY.get_sample_value(name, labels) or 0.0
    metrics.ITEMS_FINISHED.labels(metrics.provider_label("a tenant's name"), Outcome.LOST).inc()
    assert REGISTRY.get_sample_value(name, labels) == before + 1
