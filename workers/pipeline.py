"""The Celery-free pipeline for one item: claim → call the provider → write → record.

`run_item` is what the Celery task, local mode and the tests all call (`run_items` for a
message that carries a group of ids). The item is claimed
through the ledger (a conditional UPDATE and a lease), each provider call runs under a
throttle permit with in-call retries, the output goes to a deterministic key (a re-run
overwrites, never duplicates), and `workers.outcomes` records how it ended.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from jobs.catalog import ProviderSpec, get_provider_spec, limits_name
from jobs.error_codes import ErrorCode
from jobs.media import AudioRejected, check_audio
from jobs.records import AttemptRecord, ClaimedItem, ItemError, ItemResult
from jobs.status import JobKind
from jobs.validation import HTTP_SOURCE
from storage.keys import output_key, upload_key
from storage.objects import ObjectNotFound, StorageUnavailable
from workers import batch_stt, long_audio, long_tts, metrics, outcomes, reuse
from workers.archive import (
    ArchiveObject,
    archive_size,
    archive_stem,
    is_archive_source,
    read_archive_source,
    spool_archive_source,
)
from workers.audio import convert, ext_of
from workers.canceled import end_stopped, remove_if_canceled
from workers.circuit import CircuitOpen
from workers.fetch import fetch_source
from workers.interrupt import ItemStop, ItemStopped, provider_call
from workers.outcomes import Outcome, about, item_fields
from workers.providers.base import AudioInput, Synthesis, Transcript
from workers.providers.errors import (
    AuthenticationFailed,
    InvalidInput,
    PermanentProviderError,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    QuotaExceeded,
    RateLimited,
    TransientProviderError,
    UnsupportedAudio,
)
from workers.retry import call_with_retries, next_delay
from workers.runtime import Runtime
from workers.streamed import HeldAudio, StoredAudio, StoredSpeech
from workers.throttle import ThrottleBusy
from workers.transcript_files import transcript_files, write_all

T = TypeVar("T")
log = logging.getLogger(__name__)

__all__ = ["Outcome", "run_item", "run_items"]


def run_items(rt: Runtime, item_ids: Sequence[int], stop: threading.Event) -> list[int]:
    """Run a message's group of ids one after another, and return the ids handed back.

    Once `stop` is set (a warm shutdown) the ids not yet started are published again, as
    fresh messages, so the worker can exit after its current item instead of after the
    whole group. A redelivered group is harmless: its finished items are skipped by the claim.
    """
    for done, item_id in enumerate(item_ids):
        if stop.is_set():
            rest = list(item_ids[done:])
            rt.ledger.publish(rest)
            return rest
        run_item(rt, item_id)
    return []


def run_item(rt: Runtime, item_id: int) -> Outcome:
    """Run one item to an outcome. Never raises for provider or input problems.

    Each delivery logs one `item N outcome X` line (the chaos suite greps them to prove no
    item succeeded twice): `workers.outcomes` logs it for a claimed item, naming its job and
    provider; an unclaimable one is logged here by id only (its job is not read just to log).
    """
    item = rt.ledger.claim(item_id, lease_s=rt.config.lease_s)
    if item is None:
        skipped = Outcome.SKIPPED.value
        log.info(
            "item %s outcome %s", item_id, skipped, extra={"item_id": item_id, "outcome": skipped}
        )
        return Outcome.SKIPPED
    with rt.leases.holding(item) as stop:
        return _work(rt, item, stop)


def _work(rt: Runtime, item: ClaimedItem, stop: ItemStop) -> Outcome:  # noqa: PLR0911 - one return per outcome kind
    attempts: list[AttemptRecord] = []
    try:
        with stop.interruptible():  # the heartbeat cuts a canceled item's provider call off
            written = _before_call(rt, item)
            if written is None and item.kind == JobKind.TTS:
                written = _synthesize(rt, item, attempts)
            elif written is None:
                written = _transcribe(rt, item, attempts)
    except ItemStopped:
        return end_stopped(rt, item)
    except batch_stt.AwaitProvider as waiting:  # SLNG batch: the item waits in the database
        return outcomes.await_provider(rt, item, attempts, waiting.job, waiting.delay_s)
    except CircuitOpen as down:
        # Down for every worker: a fallback now, else back once the next probe may have run.
        if item.can_fail_over:
            return outcomes.fail_over(
                rt, item, attempts, ItemError(ErrorCode.CIRCUIT_OPEN, str(down))
            )
        return outcomes.hand_back(
            rt, item, attempts, down.retry_in_s + rt.rng.uniform(0.5, 3.0), ErrorCode.CIRCUIT_OPEN
        )
    except ThrottleBusy:
        return outcomes.hand_back(rt, item, attempts, rt.rng.uniform(1.0, 3.0))
    except StorageUnavailable:
        # Our own storage is down, not the item's fault: no attempt is spent on it.
        log.warning(
            "object storage unavailable; handing item %s back %s",
            item.id,
            about(item),
            extra=item_fields(item),
        )
        return outcomes.hand_back(rt, item, attempts, rt.rng.uniform(5.0, 15.0))
    except ProviderError as error:
        return _refused(rt, item, attempts, error)
    except Exception as error:  # a bug or an unexpected outage: bounded by item_attempts
        code = ErrorCode.INTERNAL_ERROR
        log.exception(
            "item %s failed unexpectedly %s",
            item.id,
            about(item, code),
            extra=item_fields(item, error_code=code.value),
        )
        transient = ProviderUnavailable(
            f"Internal error ({type(error).__name__}) while processing the item; retrying.",
            code=code,
        )
        return outcomes.retry_later(rt, item, attempts, transient)
    return _settle(rt, item, attempts, written)


def _settle(
    rt: Runtime, item: ClaimedItem, attempts: list[AttemptRecord], written: Settled
) -> Outcome:
    """The outcome of an item that ran (or was settled before its call) without an error."""
    if isinstance(written, reuse.WaitForLeader):  # an identical line is being spoken
        return outcomes.hand_back(rt, item, attempts, written.delay_s)
    if isinstance(written, OverBudget):
        return outcomes.stop_for_budget(rt, item)
    if written.content_hash is None and item.kind == JobKind.TTS:
        # Recorded for the route that spoke it, so a fallback's audio is found by its own hash.
        written = replace(written, content_hash=reuse.route_hash(item))
    outcome = outcomes.succeed(rt, item, attempts, written)
    if outcome is Outcome.LOST:  # canceled after its output was written: remove it
        remove_if_canceled(rt, item)
    return outcome


class OverBudget:
    """`_before_call`'s answer when starting the item would exceed its job's budget."""


Settled = ItemResult | reuse.WaitForLeader | OverBudget


def _before_call(rt: Runtime, item: ClaimedItem) -> Settled | None:
    """What settles an item before any provider call (issue 12): an identical line's output
    copied (`workers.reuse`), a wait for the identical line being spoken, or its job's
    budget cap reached; None when the provider is to be called."""
    found = reuse.reuse_or_wait(rt, item) if item.kind == JobKind.TTS else None
    if found is not None:
        return found
    # An item whose provider-side job is under way (SLNG batch) already started: let it end.
    if item.capped and item.provider_job is None and not rt.ledger.pass_budget(item):
        return OverBudget()
    return None


def _refused(
    rt: Runtime, item: ClaimedItem, attempts: list[AttemptRecord], error: ProviderError
) -> Outcome:
    """The outcome of a call the provider refused or failed, by the kind of error."""
    if isinstance(error, QuotaExceeded) and item.can_fail_over:
        # This account is out of quota; the fallback's may not be.
        return outcomes.fail_over(rt, item, attempts, _error(error))
    if isinstance(error, AuthenticationFailed | QuotaExceeded):
        # Every other item of the job would be refused the same way: stop the job's calls
        # now instead of burning through thousands of items (and the provider's patience).
        return outcomes.fail(rt, item, attempts, _error(error), whole_job=True)
    if isinstance(error, PermanentProviderError):
        return outcomes.fail(rt, item, attempts, _error(error))
    if isinstance(error, RateLimited):
        # "Slow down" is about the provider, not the item: wait at least Retry-After, and
        # spend no attempt, so a long 429 storm delays items instead of failing them.
        # (Quota-type refusals are QuotaExceeded, handled above.)
        policy = rt.config.retry
        wait = next_delay(1, error, base=policy.item_base_s, cap=policy.max_countdown_s, rng=rt.rng)
        return outcomes.hand_back(rt, item, attempts, wait, error.code)
    if isinstance(error, TransientProviderError):
        return outcomes.retry_later(rt, item, attempts, error)
    return outcomes.fail(rt, item, attempts, _error(error))


def _error(error: ProviderError) -> ItemError:
    return ItemError(error.code, error.message)


def _stored(rt: Runtime, operation: Callable[[], T]) -> T:
    """Run an object-store call, riding out a short storage outage (up to half the lease) so
    a provider result already paid for is not thrown away; then StorageUnavailable."""
    delay, deadline = 0.25, time.monotonic() + rt.config.in_call_deadline_s
    while True:
        try:
            return operation()
        except StorageUnavailable:
            if time.monotonic() + delay > deadline:
                raise
            rt.sleep(delay)
            delay = min(delay * 2, 4.0)


def _with_retries(
    rt: Runtime, item: ClaimedItem, attempts: list[AttemptRecord], call: Callable[[], T]
) -> T:
    """`call` with in-call retries, each HTTP attempt under one permit of the provider's
    shared limits, released (with how it went, for the adaptive limit) before any backoff."""
    credential = (limits_name(item.provider, item.kind), rt.providers.fingerprint(item.provider))
    wait_s = rt.config.throttle_wait_s

    def limited() -> T:
        rt.circuit.check(credential)  # CircuitOpen: the provider is down for every worker
        with provider_call(), rt.throttle.permit(*credential, max_wait_s=wait_s):
            try:
                with metrics.timed_call(item.provider, item.model, item.options.get("transport")):
                    result = call()
            except QuotaExceeded:
                rt.circuit.failed(credential, quota=True)
                raise
            except (ProviderUnavailable, ProviderTimeout) as error:
                if error.status_code is None or error.status_code >= 500:
                    rt.circuit.failed(credential)  # down, not "slow down" or bad output
                raise
        rt.circuit.succeeded(credential)
        return result

    return call_with_retries(
        limited,
        policy=rt.config.retry,
        rng=rt.rng,
        attempts_log=attempts,
        deadline_s=rt.config.in_call_deadline_s,
        budget=rt.budget,
        credential=credential,
        sleep=rt.sleep,
    )


def _synthesize(rt: Runtime, item: ClaimedItem, attempts: list[AttemptRecord]) -> ItemResult:
    text = item.text or ""
    fmt, sample_rate = item.options.get("format", "wav"), item.options.get("sample_rate")
    key = output_key(
        item.output_prefix, item.tenant_id, item.job_id, item.seq, item.external_id, ext_of(fmt)
    )
    spec = get_provider_spec(item.provider)
    limit = spec.text_limit(item.model) if spec is not None else len(text)
    if len(text) > limit and spec is not None:
        return _synthesize_long(rt, item, attempts, spec, limit, key)
    stored = _speak(rt, item, attempts, text, key, (fmt, sample_rate), item.options)
    return ItemResult(key, stored.size, stored.content_type, stored.duration_s, len(text))


def _speak(
    rt: Runtime,
    item: ClaimedItem,
    attempts: list[AttemptRecord],
    text: str,
    key: str,
    encoding: tuple[str, int | None],
    options: Mapping[str, Any],
) -> StoredAudio:
    """`text` spoken by the item's provider and stored at `key` as (format, rate) `encoding`."""
    provider = rt.providers.get(item.provider)
    fmt, sample_rate = encoding

    def attempt() -> Synthesis | StoredAudio | HeldAudio:
        # A streaming transport writes into `sink` as the audio arrives; one that sends its
        # audio whole ignores it. Leaving the block without commit() leaves nothing at `key`.
        with StoredSpeech(
            rt.store, key, fmt=fmt, sample_rate=sample_rate, text=text, provider=item.provider
        ) as sink:
            synthesis = provider.synthesize(
                text, model=item.model, voice=item.voice, options=options, sink=sink
            )
            if not synthesis.streamed:
                return synthesis
            return sink.commit(synthesis.request_id)

    answer = _with_retries(rt, item, attempts, attempt)
    if isinstance(answer, StoredAudio):
        return answer
    if isinstance(answer, HeldAudio):  # a short stream, stored now its permit is released
        held = answer
        size = _stored(rt, lambda: rt.store.put_bytes(key, held.data, held.content_type))
        return StoredAudio(size, held.content_type, held.duration_s)
    try:
        encoded = convert(answer.audio, fmt=fmt, sample_rate=sample_rate)
    except UnsupportedAudio as error:
        # The provider sent bytes we cannot decode: likely a truncated body, so retry.
        raise ProviderUnavailable(
            f"The provider returned audio that could not be decoded ({error.message}).",
            code=ErrorCode.BAD_PROVIDER_AUDIO,
        ) from error
    size = _stored(rt, lambda: rt.store.put_bytes(key, encoded.data, encoded.content_type))
    return StoredAudio(size, encoded.content_type, encoded.duration_s)


def _synthesize_long(
    rt: Runtime,
    item: ClaimedItem,
    attempts: list[AttemptRecord],
    spec: ProviderSpec,
    limit: int,
    key: str,
) -> ItemResult:
    """A line over the model's limit: its pieces spoken one by one (each stored before the
    next; those already stored by an earlier delivery are not asked for again) over the
    transport the whole line would use, then stitched into the one output."""
    text = item.text or ""
    pieces = long_tts.split_text(text, limit, item.options.get("language"))
    if len(pieces) > long_tts.MAX_PIECES:
        raise InvalidInput(
            f"The text is {len(text):,} characters: {len(pieces):,} pieces of at most {limit} "
            f"for {item.model}, over the {long_tts.MAX_PIECES:,} a line may take; split it into "
            "several items.",
            code=ErrorCode.TEXT_TOO_LONG,
        )
    # Every piece on the transport the whole line would get (`auto` streams a long line),
    # so a WebSocket vendor speaks them on one session, one after another.
    chosen = spec.pick_transport("tts", item.options.get("transport"), chars=len(text))
    options = {**item.options, "transport": chosen} if chosen else item.options
    keys = [long_tts.piece_key(key, n) for n in range(len(pieces))]
    for piece, at in zip(pieces, keys, strict=True):
        if _stored(rt, partial(rt.store.size, at)) is None:
            _speak(rt, item, attempts, piece, at, ("wav", None), options)
    fmt, sample_rate = item.options.get("format", "wav"), item.options.get("sample_rate")
    try:
        stored, _ = _stored(
            rt, partial(long_tts.stitch, rt.store, keys, key, fmt=fmt, sample_rate=sample_rate)
        )
    except long_tts.UnreadablePiece as torn:  # a torn write from long ago: speak it again
        rt.store.delete(torn.key)
        raise ProviderUnavailable(f"{torn} It is spoken again.") from None
    for at in keys:
        with suppress(StorageUnavailable):  # a leftover piece is removed with its job's objects
            rt.store.delete(at)
    return ItemResult(
        key, stored.size, stored.content_type, stored.duration_s, len(text), pieces=len(pieces)
    )


def _transcribe_one(
    rt: Runtime, item: ClaimedItem, attempts: list[AttemptRecord], audio: AudioInput
) -> Transcript:
    provider = rt.providers.get(item.provider)
    return _with_retries(
        rt,
        item,
        attempts,
        lambda: provider.transcribe(audio, model=item.model, options=item.options),
    )


def _transcribe_long(
    rt: Runtime,
    item: ClaimedItem,
    attempts: list[AttemptRecord],
    limit: int,
    spool: Callable[[Path], Any],
) -> Transcript:
    """A recording over the provider's size limit: spooled to a temporary folder, re-encoded
    as 16 kHz mono FLAC and split at silences into pieces under `limit`
    (`workers.long_audio`), each transcribed in turn (one in memory at a time), and merged
    into one transcript on the recording's own timeline. A piece that fails retries the item;
    its pieces are made again from the source then (nothing of a recording is kept)."""
    with tempfile.TemporaryDirectory(prefix="sb-long-") as folder:
        workdir = Path(folder)
        source = workdir / "source"
        spool(source)
        try:
            pieces = long_audio.plan_pieces(
                source,
                max_bytes=limit,
                max_seconds=None,
                workdir=workdir,
                max_samples=rt.config.max_decode_samples,
            )
        except ValueError as error:
            raise UnsupportedAudio(str(error)) from None
        source.unlink()
        parts = []
        for n, piece in enumerate(pieces):
            audio = AudioInput(piece.path.read_bytes(), f"piece-{n:03d}.flac", "audio/flac")
            parts.append((piece, _transcribe_one(rt, item, attempts, audio)))
        return long_audio.merge_transcripts(parts)


def _archived(rt: Runtime, item: ClaimedItem) -> ArchiveObject | None:
    """The store and key of an archive item's source (None for uploads and URLs)."""
    return rt.archives.open(item.source or "") if is_archive_source(item.source) else None


def _upload_key(item: ClaimedItem) -> str | None:
    """The store key of an `upload://` source (None for a URL source)."""
    source = item.source or ""
    if not source.startswith("upload://"):
        return None
    upload_id, _, name = source.removeprefix("upload://").partition("/")
    return upload_key(item.tenant_id, upload_id, name)


def _spool(rt: Runtime, key: str | None, path: Path) -> None:
    """The object at `key` copied to `path` chunk by chunk (never whole in memory)."""
    if key is None:
        raise ValueError("nothing to spool")
    try:
        chunks = _stored(rt, partial(rt.store.iter_chunks, key, 1024 * 1024))
    except ObjectNotFound:
        raise InvalidInput(
            f"Source {key} was not found; upload it again with POST /v1/uploads.",
            code=ErrorCode.SOURCE_NOT_FOUND,
        ) from None
    with path.open("wb") as out:
        for chunk in chunks:
            out.write(chunk)


def _read_source(rt: Runtime, item: ClaimedItem) -> AudioInput:
    source = item.source or ""
    archived = _archived(rt, item)
    if archived is not None:  # an archive object (issue 12): streamed, capped like a URL
        cap = rt.config.max_source_bytes
        return _stored(rt, partial(read_archive_source, archived, source, max_bytes=cap))
    if HTTP_SOURCE.match(source):
        # Resolved, checked against private ranges and fetched with size/time caps here, at
        # run time: DNS answers may differ from submit time (rebinding).
        return fetch_source(
            source,
            allow=rt.config.source_allow,
            max_bytes=rt.config.max_source_bytes,
            timeout_s=rt.config.source_timeout_s,
        )
    upload_id, _, name = source.removeprefix("upload://").partition("/")
    try:
        data = _stored(rt, lambda: rt.store.get_bytes(upload_key(item.tenant_id, upload_id, name)))
    except ObjectNotFound:
        raise InvalidInput(
            f"Source {source} was not found; upload it again with POST /v1/uploads.",
            code=ErrorCode.SOURCE_NOT_FOUND,
        ) from None
    try:
        content_type = check_audio(data[:64], f"Source {source}")
    except AudioRejected as rejected:
        raise UnsupportedAudio(rejected.message, code=rejected.code) from None
    return AudioInput(data=data, filename=name, content_type=content_type)


def _transcribe(rt: Runtime, item: ClaimedItem, attempts: list[AttemptRecord]) -> ItemResult:
    def by_batch(read: Callable[[], AudioInput]) -> Transcript:
        return batch_stt.transcribe(
            rt.batch,
            item,
            policy=rt.config.batch,
            now=rt.ledger.clock(),
            read=read,
            calls=partial(_with_retries, rt, item, attempts),
        )

    spec = get_provider_spec(item.provider)
    limit = spec.max_audio_bytes if spec is not None else None
    upload = _upload_key(item)
    size = _stored(rt, partial(rt.store.size, upload)) if upload and limit else None
    archived = _archived(rt, item)
    spool = partial(_spool, rt, upload)
    if archived is not None:
        size = _stored(rt, partial(archive_size, archived, item.source or "")) if limit else None
        spool = partial(spool_archive_source, archived, item.source or "")
    if batch_stt.goes_to_batch(item):
        transcript = by_batch(lambda: _read_source(rt, item))
    elif limit and size and size > limit:  # never read whole: spooled to disk, then split
        transcript = _transcribe_long(rt, item, attempts, limit, spool)
    else:
        audio = _read_source(rt, item)
        if batch_stt.too_big_for_sync(item, audio, rt.config.batch):
            transcript = by_batch(lambda: audio)
        elif limit and len(audio.data) > limit:  # a fetched URL over the provider's limit
            spooled = partial(Path.write_bytes, data=audio.data)
            transcript = _transcribe_long(rt, item, attempts, limit, spooled)
        else:
            transcript = _transcribe_one(rt, item, attempts, audio)
    stem = output_key(
        item.output_prefix, item.tenant_id, item.job_id, item.seq, item.external_id, "json"
    )
    if archived is not None:  # `output.layout: mirror` lays outputs out as the archive is
        stem = archive_stem(rt.archives, rt.ledger.db.sessions, item) or stem
    out = rt.archives.outputs(rt.store)  # an `output.url` stem is a URL of another bucket
    # Checked and rendered before the first write; a failed write removes the others.
    files = transcript_files(transcript, stem, item.options.get("transcript_formats", []))
    size, *_ = write_all(
        files,
        put=lambda f: _stored(rt, partial(out.put_bytes, f.key, f.body, f.content_type)),
        delete=out.delete,
    )
    return ItemResult(stem, size, "application/json", transcript.duration_s, len(transcript.text))
