"""One worker configuration, built from `Settings`: every knob a worker reads has one value.

Lease length, retry policy, the throttle's patience and the source-fetch caps used to have
defaults in three places that disagreed; now `Settings` holds the value, this object carries
it, and nothing below it has a default of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from jobs.catalog_limits import ProviderLimits, provider_limits
from jobs.catalog_slng import SLNG_SYNC_STT_MAX_BYTES
from jobs.netpolicy import Allowlist, parse_allowlist
from jobs.settings import Settings
from workers.audio_decode import DEFAULT_MAX_DECODE_SAMPLES
from workers.retry import RetryPolicy


@dataclass(frozen=True)
class BatchPolicy:
    """When an SLNG STT item goes to the batch API, and how its job is polled."""

    over_bytes: int = SLNG_SYNC_STT_MAX_BYTES  # recordings larger than this go to batch
    first_poll_s: float = 5.0  # the first poll comes this long after the submit,
    poll_cap_s: float = 60.0  # each later one twice as long after, up to this
    max_wait_s: float = 6 * 3600.0  # then the item fails (provider_timeout)

    def next_poll_s(self, polls: int) -> float:
        """Seconds until the poll after `polls` polls: 5, 10, 20, 40, 60, 60, ..."""
        return min(self.poll_cap_s, self.first_poll_s * 2.0 ** min(polls, 32))


@dataclass(frozen=True)
class WorkerConfig:
    lease_s: float = 60.0  # a claim's lease; heartbeats renew it every third
    # How long one attempt waits for a provider slot before the item is handed back.
    throttle_wait_s: float = 5.0
    provider_timeout_s: float = 60.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    limits: dict[str, ProviderLimits] = field(default_factory=provider_limits)
    source_allow: Allowlist = ()
    max_source_bytes: int = 100 * 1024 * 1024
    max_decode_samples: int = DEFAULT_MAX_DECODE_SAMPLES  # SPEECHBATCH_MAX_DECODE_SAMPLES
    source_timeout_s: float = 300.0
    batch: BatchPolicy = field(default_factory=BatchPolicy)

    @classmethod
    def from_settings(cls, settings: Settings) -> WorkerConfig:
        return cls(
            lease_s=float(settings.lease_seconds),
            throttle_wait_s=settings.throttle_wait_seconds,
            provider_timeout_s=settings.provider_timeout_seconds,
            retry=RetryPolicy(item_attempts=settings.max_item_attempts),
            limits=provider_limits(settings.provider_limits),
            source_allow=parse_allowlist(settings.allow_private_networks),
            max_source_bytes=settings.max_source_bytes,
            max_decode_samples=settings.max_decode_samples,
            source_timeout_s=settings.source_timeout_seconds,
            batch=BatchPolicy(
                over_bytes=settings.slng_batch_over_bytes,
                max_wait_s=settings.slng_batch_max_wait_seconds,
            ),
        )

    @property
    def in_call_deadline_s(self) -> float:
        """Stop retrying in-call well before the lease runs out, so the sweeper never
        re-queues an item that is still being worked on."""
        return self.lease_s / 2


def default_threads(limits: dict[str, ProviderLimits]) -> int:
    """Worker threads when `--concurrency` is not given: the largest hosted provider cap C,
    plus half as many again (at least 4).

    A thread also claims, writes to S3 and records the outcome while holding no provider
    permit; with only C threads the provider sat idle during that work (0.83 x C/L in
    bench/throughput.py). The shared throttle still keeps calls at C, so the extra threads
    only fill those gaps. C counts up to `_MOST_CALLS_PER_PROCESS`: one process is bound by
    its GIL near 16 calls in flight (bench/overhead.py), and a cap like Deepgram STT's 100
    would otherwise mean 150 threads and as many database connections; run more worker
    processes (or pass --concurrency) to use more of such a cap.
    """
    hosted = [lim.max_concurrency for name, lim in limits.items() if name != "local"]
    cap = min(max(hosted, default=4), _MOST_CALLS_PER_PROCESS)
    return cap + max(4, cap // 2)


_MOST_CALLS_PER_PROCESS = 16
