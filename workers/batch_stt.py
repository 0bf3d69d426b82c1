"""SLNG batch STT in the pipeline: the item waits in the database, not in a worker thread.

An SLNG STT item goes to the batch API when its job names the batch model or its recording
is larger than the synchronous routes take (`BatchPolicy.over_bytes`). Each delivery does
one step and hands the item back (no attempt spent) until the transcript is in:

    1. no provider job yet  → record the job id we choose, hand back at once
    2. recorded, not sent   → ask SLNG for that id (a crash may have come after a submit);
                              unknown → submit the recording; hand back for the first poll
    3. submitted            → poll once: DONE → fetch and store the transcript;
                              FAILED → fail with SLNG's reason; else hand back 5, 10, 20,
                              40, 60, 60 ... s later, failing once `max_wait_s` has passed

The job id is `sb<item id>c<claim token>`: the claim that recorded it. Recording it before
the submit means a crash between submit and record never pays twice, whether or not SLNG
refuses a repeated id; a later claim keeps the recorded id, and "retry failed" clears it so a
retried item submits afresh under its new claim's id.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any, Protocol, cast

from jobs.catalog_slng import SLNG_BATCH_STT_MODEL
from jobs.error_codes import ErrorCode
from jobs.records import ClaimedItem, ProviderJob
from workers.config import BatchPolicy
from workers.providers.base import AudioInput, Transcript
from workers.providers.errors import AuthenticationFailed, PermanentProviderError
from workers.providers.slng_batch import DONE, FAILED, BatchStatus

# Runs one provider call under the pipeline's throttle permit and in-call retries.
Calls = Callable[[Callable[[], Any]], Any]


class BatchApi(Protocol):
    """The batch API a worker submits to and polls (`SlngBatch`, or `NoBatchApi`)."""

    def submit(self, job_id: str, audio: AudioInput, options: Mapping[str, Any]) -> BatchStatus: ...
    def status(self, job_id: str) -> BatchStatus | None: ...
    def transcript(
        self, job_id: str, *, options: Mapping[str, Any], duration_s: float | None
    ) -> Transcript: ...


class NoBatchApi:
    """The batch API of a worker without an SLNG key: every call says which key to set."""

    def _refuse(self, *_: Any, **__: Any) -> Any:
        raise AuthenticationFailed(
            "No SLNG API key is configured; set SLNG_API_KEY for the workers and retry.",
            code=ErrorCode.MISSING_API_KEY,
        )

    submit = status = transcript = _refuse


class AwaitProvider(Exception):
    """Not an error: hand the item back as due in `delay_s`, recording `job` on it."""

    def __init__(self, job: ProviderJob, delay_s: float) -> None:
        super().__init__(job.id)
        self.job, self.delay_s = job, delay_s


def goes_to_batch(item: ClaimedItem) -> bool:
    """Whether the item is on the batch path before its recording is read."""
    return item.provider_job is not None or item.model == SLNG_BATCH_STT_MODEL


def too_big_for_sync(item: ClaimedItem, audio: AudioInput, policy: BatchPolicy) -> bool:
    """An SLNG recording the synchronous routes would refuse (413) for its size."""
    return item.provider == "slng" and len(audio.data) > policy.over_bytes


def job_id_for(item: ClaimedItem) -> str:
    """The batch job id this claim submits under (SLNG takes `^[a-zA-Z0-9]+$`)."""
    return f"sb{item.id}c{item.token}"


def transcribe(
    api: BatchApi,
    item: ClaimedItem,
    *,
    policy: BatchPolicy,
    now: datetime,
    read: Callable[[], AudioInput],
    calls: Calls,
) -> Transcript:
    """One step of the batch flow: the transcript when SLNG is done, else AwaitProvider
    (or the error that ends the item). `now` is the ledger clock's time."""
    job = item.provider_job
    if job is None:
        raise AwaitProvider(ProviderJob(job_id_for(item), since=now), 0.0)
    if not job.submitted:
        if calls(lambda: api.status(job.id)) is None:
            audio = read()
            calls(lambda: api.submit(job.id, audio, item.options))
        raise AwaitProvider(replace(job, submitted=True), policy.next_poll_s(0))
    status = cast(BatchStatus | None, calls(lambda: api.status(job.id)))
    if status is None:
        raise PermanentProviderError(
            f"SLNG no longer knows batch job {job.id} (deleted or expired); retry the item "
            "to submit the recording again.",
            code=ErrorCode.PROVIDER_REJECTED,
        )
    if status.state == DONE:
        return cast(
            Transcript,
            calls(
                lambda: api.transcript(job.id, options=item.options, duration_s=status.duration_s)
            ),
        )
    if status.state in (FAILED, "DELETED"):
        raise PermanentProviderError(
            f"SLNG's batch job {job.id} ended {status.state}: "
            f"{status.error or 'no reason given'}. Check the recording; retry the item to "
            "submit it again.",
            code=ErrorCode.PROVIDER_REJECTED,
            request_id=status.request_id,
        )
    waited = (now - job.since).total_seconds()
    if waited >= policy.max_wait_s:
        raise PermanentProviderError(
            f"SLNG's batch job {job.id} was still {status.state} after {waited:.0f} s "
            "(SPEECHBATCH_SLNG_BATCH_MAX_WAIT_SECONDS); retry the item later or raise the limit.",
            code=ErrorCode.PROVIDER_TIMEOUT,
            request_id=status.request_id,
        )
    raise AwaitProvider(replace(job, polls=job.polls + 1), policy.next_poll_s(job.polls + 1))
