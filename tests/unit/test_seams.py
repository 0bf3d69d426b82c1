"""The in-memory seams and the worker's derived defaults behave like the real ones."""

from __future__ import annotations

from jobs.catalog import limits_name
from jobs.catalog_limits import ProviderLimits, provider_limits
from storage.publisher import InMemoryPublisher
from workers.config import default_threads


def test_in_memory_publisher_hands_out_ids_once_each_when_due() -> None:
    """Immediate ids come out in order, a countdown id only once its time has come, and
    `depth` counts what is due but not yet taken."""
    now = [100.0]
    publisher = InMemoryPublisher(clock=lambda: now[0])
    publisher.publish([1, 2])
    publisher.publish([3], countdown=5.0)
    assert publisher.depth() == 2
    assert [publisher.take(timeout_s=0), publisher.take(timeout_s=0)] == [1, 2]
    assert publisher.take(timeout_s=0) is None  # 3 is not due yet
    now[0] += 5.0
    assert publisher.depth() == 1 and publisher.take(timeout_s=0) == 3
    assert publisher.published == [(1, 0.0), (2, 0.0), (3, 5.0)]


def test_default_worker_threads_cover_the_provider_cap_with_headroom() -> None:
    """Without --concurrency a worker runs the largest hosted cap plus half again (at least 4
    more), ignoring the local engines' per-host cap."""
    assert default_threads(provider_limits()) == 24  # SLNG's 16 (Deepgram STT's 100 counts 16)
    assert default_threads({"slng": ProviderLimits(4), "local": ProviderLimits(100)}) == 8
    assert default_threads({"slng": ProviderLimits(40), "local": ProviderLimits(100)}) == 24


def test_a_kind_with_limits_of_its_own_counts_against_them() -> None:
    """Smallest's Pulse STT is limited apart from its TTS (25 a minute vs 1 in flight), so an
    STT call takes `smallest-stt`'s permits and a TTS call the provider's; both can be set."""
    assert limits_name("smallest", "stt") == "smallest-stt"
    assert limits_name("smallest", "tts") == "smallest"
    assert limits_name("slng", "stt") == "slng"
    limits = provider_limits()
    assert limits["smallest"] == ProviderLimits(1, None)
    assert limits["smallest-stt"] == ProviderLimits(4, 25 / 60)
    assert provider_limits("smallest-stt=2/1")["smallest-stt"] == ProviderLimits(2, 1.0)
