"""The Celery-free pipeline for one item: claim → call the provider → write → record.

`run_item` is what the Celery task, the CLI's local mode and the tests all call. Each
item is claimed with a conditional UPDATE and a lease, its output goes to a deterministic
key (a re-run overwrites, never duplicates), and its outcome plus every HTTP attempt is
recorded in one transaction that only the claim holder can commit.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable
from datetime import timedelta
from enum import StrEnum
from typing import Any, TypeVar

from jobs import repository as repo
from jobs.clock import utc_now
from jobs.media import sniff_audio
from jobs.repository import ClaimedItem
from jobs.service import publish_safely, write_manifest_if_finished
from jobs.status import JOB_TERMINAL
from jobs.validation import HTTP_SOURCE
from storage.keys import output_key, upload_key
from storage.objects import ObjectNotFound
from workers.audio import convert
from workers.fetch import fetch_source
from workers.providers.base import AudioInput, Transcript
from workers.providers.errors import (
    AuthenticationFailed,
    InvalidInput,
    PermanentProviderError,
    ProviderError,
    ProviderUnavailable,
    QuotaExceeded,
    TransientProviderError,
    UnsupportedAudio,
)
from workers.render import RENDERERS
from workers.retry import call_with_retries, next_delay
from workers.runtime import Runtime
from workers.throttle import ThrottleBusy, outcome_for

T = TypeVar("T")

log = logging.getLogger(__name__)


class Outcome(StrEnum):
    SKIPPED = "skipped"  # not claimable: someone else has it, it is done, or not due yet
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RETRYING = "retrying"  # back in the queue with next_attempt_at
    LOST = "lost"  # our lease was taken over while we worked; the new holder decides
    DEFERRED = "deferred"  # the provider's shared limit was full; handed back, not an attempt


def run_item(rt: Runtime, item_id: int) -> Outcome:
    """Run one item to an outcome. Never raises for provider or input problems."""
    outcome = _run_item(rt, item_id)
    # One line per delivery; the chaos suite greps these to prove no item succeeded twice.
    log.info("item %s outcome %s", item_id, outcome.value)
    return outcome


def _run_item(rt: Runtime, item_id: int) -> Outcome:
    now = utc_now()
    with rt.sessions() as session:
        item = repo.claim_item(
            session,
            item_id,
            token=secrets.token_hex(8),
            now=now,
            lease_until=now + timedelta(seconds=rt.lease_s),
        )
        session.commit()
    if item is None:
        return Outcome.SKIPPED
    if rt.leases is not None:
        rt.leases.hold(item.id, item.token)
    try:
        return _work(rt, item)
    finally:
        if rt.leases is not None:
            rt.leases.drop(item.id)


def _work(rt: Runtime, item: ClaimedItem) -> Outcome:
    attempts: list[dict[str, Any]] = []
    try:
        if item.kind == "tts":
            written = _synthesize(rt, item, attempts)
        else:
            written = _transcribe(rt, item, attempts)
    except ThrottleBusy:
        return _hand_back(rt, item, attempts)
    except (AuthenticationFailed, QuotaExceeded) as error:
        # Every other item of the job would be refused the same way: stop the job's calls
        # now instead of burning through thousands of items (and the provider's patience).
        return _finish_failed(rt, item, attempts, error.code, error.message, whole_job=True)
    except PermanentProviderError as error:
        return _finish_failed(rt, item, attempts, error.code, error.message)
    except TransientProviderError as error:
        return _retry_later(rt, item, attempts, error)
    except Exception as error:  # storage outage or a bug: bounded by item_attempts
        log.exception("item %s failed unexpectedly", item.id)
        transient = ProviderUnavailable(
            f"Internal error ({type(error).__name__}) while processing the item; retrying.",
            code="internal_error",
        )
        return _retry_later(rt, item, attempts, transient)

    with rt.sessions() as session:
        repo.record_attempts(session, item.id, attempts)
        status = repo.succeed_item(session, item, now=utc_now(), **written)
        session.commit()
    _after_final(rt, item, status)
    return Outcome.SUCCEEDED if status else Outcome.LOST


def _after_final(rt: Runtime, item: ClaimedItem, job_status: str | None) -> None:
    """Store the job's manifest if this outcome finished the job (never fails the item)."""
    if job_status not in JOB_TERMINAL:
        return
    try:
        write_manifest_if_finished(rt.sessions, rt.store, item.job_id)
    except Exception:  # the manifest endpoint still serves it; the next finisher rewrites
        log.warning("could not write the manifest of job %s", item.job_id, exc_info=True)


def _throttled(rt: Runtime, item: ClaimedItem, call: Callable[[], T]) -> Callable[[], T]:
    """`call` under the provider's shared limits: one permit per HTTP attempt, released
    (with how it went, for the adaptive limit) before any backoff sleep."""
    throttle = rt.throttle
    if throttle is None:
        return call
    fingerprint = rt.fingerprint(item.provider)

    def limited() -> T:
        permit = throttle.acquire(item.provider, fingerprint, max_wait_s=rt.throttle_wait_s)
        if permit is None:
            raise ThrottleBusy(item.provider)
        error: BaseException | None = None
        try:
            return call()
        except BaseException as exc:
            error = exc
            raise
        finally:
            permit.release(outcome_for(error))

    return limited


def _hand_back(rt: Runtime, item: ClaimedItem, attempts: list[dict[str, Any]]) -> Outcome:
    """No provider slot within `rt.throttle_wait_s`: give the item back (the claim does not count
    as an attempt) and free this thread for items of other providers."""
    delay = rt.rng.uniform(1.0, 3.0)
    now = utc_now()
    with rt.sessions() as session:
        repo.record_attempts(session, item.id, attempts)
        done = repo.hand_back_item(
            session, item, now=now, next_attempt_at=now + timedelta(seconds=delay)
        )
        session.commit()
    if not done:
        return Outcome.LOST
    publish_safely(rt.sessions, rt.publish, [item.id], delay)
    return Outcome.DEFERRED


def _deadline(rt: Runtime) -> float:
    # Stop retrying in-call well before the lease runs out, so a sweeper never re-queues
    # an item that is still being worked on.
    return rt.lease_s / 2


def _synthesize(rt: Runtime, item: ClaimedItem, attempts: list[dict[str, Any]]) -> dict[str, Any]:
    provider = rt.provider_for(item.provider)
    text = item.text or ""
    synthesis = call_with_retries(
        _throttled(
            rt,
            item,
            lambda: provider.synthesize(
                text, model=item.model, voice=item.voice, options=item.options
            ),
        ),
        policy=rt.policy,
        rng=rt.rng,
        attempts_log=attempts,
        deadline_s=_deadline(rt),
        sleep=rt.sleep,
    )
    try:
        encoded = convert(
            synthesis.audio,
            fmt=item.options.get("format", "wav"),
            sample_rate=item.options.get("sample_rate"),
        )
    except UnsupportedAudio as error:
        # The provider sent bytes we cannot decode: likely a truncated body, so retry.
        raise ProviderUnavailable(
            f"The provider returned audio that could not be decoded ({error.message}).",
            code="bad_provider_audio",
        ) from error
    key = output_key(
        item.output_prefix, item.tenant_id, item.job_id, item.seq, item.external_id, encoded.ext
    )
    size = rt.store.put_bytes(key, encoded.data, encoded.content_type)
    return {
        "output_key": key,
        "output_bytes": size,
        "content_type": encoded.content_type,
        "duration_s": encoded.duration_s,
        "characters": len(text),
    }


def _read_source(rt: Runtime, item: ClaimedItem) -> AudioInput:
    source = item.source or ""
    if HTTP_SOURCE.match(source):
        # Resolved, checked against private ranges and fetched with size/time caps here, at
        # run time: DNS answers may differ from submit time (rebinding).
        return fetch_source(
            source,
            allow=rt.source_allow,
            max_bytes=rt.max_source_bytes,
            timeout_s=rt.source_timeout_s,
        )
    upload_id, _, name = source.removeprefix("upload://").partition("/")
    try:
        data = rt.store.get_bytes(upload_key(item.tenant_id, upload_id, name))
    except ObjectNotFound:
        raise InvalidInput(
            f"Source {source} was not found; upload it again with POST /v1/uploads.",
            code="source_not_found",
        ) from None
    content_type = sniff_audio(data[:64])
    if not data:
        raise UnsupportedAudio(f"Source {source} is empty.", code="empty_audio")
    if content_type is None:
        raise UnsupportedAudio(
            f"Source {source} is not an audio file we recognise (wav, flac, ogg, mp3, m4a, webm)."
        )
    return AudioInput(data=data, filename=name, content_type=content_type)


def _transcribe(rt: Runtime, item: ClaimedItem, attempts: list[dict[str, Any]]) -> dict[str, Any]:
    audio = _read_source(rt, item)
    provider = rt.provider_for(item.provider)
    transcript: Transcript = call_with_retries(
        _throttled(
            rt, item, lambda: provider.transcribe(audio, model=item.model, options=item.options)
        ),
        policy=rt.policy,
        rng=rt.rng,
        attempts_log=attempts,
        deadline_s=_deadline(rt),
        sleep=rt.sleep,
    )
    stem = output_key(
        item.output_prefix, item.tenant_id, item.job_id, item.seq, item.external_id, "json"
    )
    body = json.dumps(transcript.to_json(), ensure_ascii=False, indent=2).encode()
    size = rt.store.put_bytes(stem, body, "application/json")
    base = stem.removesuffix(".json")
    for fmt in item.options.get("transcript_formats", []):
        if fmt in RENDERERS:
            render, content_type = RENDERERS[fmt]
            rt.store.put_bytes(f"{base}.{fmt}", render(transcript).encode(), content_type)
    return {
        "output_key": stem,
        "output_bytes": size,
        "content_type": "application/json",
        "duration_s": transcript.duration_s,
        "characters": len(transcript.text),
    }


def _finish_failed(
    rt: Runtime,
    item: ClaimedItem,
    attempts: list[dict[str, Any]],
    code: str,
    message: str,
    *,
    whole_job: bool = False,
) -> Outcome:
    with rt.sessions() as session:
        now = utc_now()
        repo.record_attempts(session, item.id, attempts)
        status = repo.fail_item(session, item, now=now, code=code, message=message)
        if status and whole_job:
            repo.fail_queued_items(
                session,
                item.job_id,
                now=now,
                code=code,
                message=f"Not attempted: another item of this job was refused ({message})",
            )
            status = repo.job_status(session, item.job_id)
        session.commit()
    _after_final(rt, item, status)
    return Outcome.FAILED if status else Outcome.LOST


def _retry_later(
    rt: Runtime, item: ClaimedItem, attempts: list[dict[str, Any]], error: ProviderError
) -> Outcome:
    if item.attempts >= rt.policy.item_attempts:
        message = f"Gave up after {item.attempts} attempts; last error: {error.message}"
        return _finish_failed(rt, item, attempts, error.code, message)
    now = utc_now()
    delay = next_delay(
        item.attempts, error, base=rt.policy.item_base_s, cap=rt.policy.item_cap_s, rng=rt.rng
    )
    due = now + timedelta(seconds=delay)
    countdown = delay <= rt.policy.max_countdown_s
    with rt.sessions() as session:
        repo.record_attempts(session, item.id, attempts)
        done = repo.requeue_item(
            session,
            item,
            now=now,
            next_attempt_at=due,
            # A countdown message is "published" for when it becomes due; otherwise the
            # sweeper publishes the item once it is due.
            published_at=due if countdown else None,
            code=error.code,
            message=error.message,
        )
        session.commit()
    if not done:
        return Outcome.LOST
    if countdown:
        publish_safely(rt.sessions, rt.publish, [item.id], delay)
    return Outcome.RETRYING
