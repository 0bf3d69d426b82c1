"""An STT item's provider work: its source read and transcribed, its transcript files written.

The source is an upload (`upload://`), an archive object (issue 12) or a URL fetched at run
time under the worker's size and time caps. A recording over the provider's size limit is
never read whole: it is spooled to disk and transcribed in pieces (`workers.long_audio`);
an SLNG batch item goes through `workers.batch_stt`. The transcript files go to a
deterministic stem (a re-run overwrites, never duplicates), or to the archive's mirror.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from jobs.catalog import get_provider_spec
from jobs.error_codes import ErrorCode
from jobs.media import AudioRejected, check_audio
from jobs.records import AttemptRecord, ClaimedItem, ItemResult
from jobs.validation import HTTP_SOURCE
from storage.keys import output_key, upload_key
from storage.objects import ObjectNotFound
from workers import batch_stt, calls, long_audio
from workers.archive import (
    ArchiveObject,
    archive_size,
    archive_stem,
    is_archive_source,
    read_archive_source,
    spool_archive_source,
)
from workers.fetch import fetch_source
from workers.providers.base import AudioInput, Transcript
from workers.providers.errors import InvalidInput, UnsupportedAudio
from workers.runtime import Runtime
from workers.transcript_files import transcript_files, write_all

__all__ = ["transcribe"]


def transcribe(rt: Runtime, item: ClaimedItem, attempts: list[AttemptRecord]) -> ItemResult:
    """The item's source transcribed and its transcript files written at its output stem."""

    def by_batch(read: Callable[[], AudioInput]) -> Transcript:
        return batch_stt.transcribe(
            rt.batch,
            item,
            policy=rt.config.batch,
            now=rt.ledger.clock(),
            read=read,
            calls=partial(calls.with_retries, rt, item, attempts),
        )

    spec = get_provider_spec(item.provider)
    limit = spec.max_audio_bytes if spec is not None else None
    upload = _upload_key(item)
    size = calls.stored(rt, partial(rt.store.size, upload)) if upload and limit else None
    archived = _archived(rt, item)
    spool = partial(_spool, rt, upload)
    if archived is not None:
        size = (
            calls.stored(rt, partial(archive_size, archived, item.source or "")) if limit else None
        )
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
        put=lambda f: calls.stored(rt, partial(out.put_bytes, f.key, f.body, f.content_type)),
        delete=out.delete,
    )
    return ItemResult(stem, size, "application/json", transcript.duration_s, len(transcript.text))


def _transcribe_one(
    rt: Runtime, item: ClaimedItem, attempts: list[AttemptRecord], audio: AudioInput
) -> Transcript:
    provider = rt.providers.get(item.provider)
    return calls.with_retries(
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
        chunks = calls.stored(rt, partial(rt.store.iter_chunks, key, 1024 * 1024))
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
        return calls.stored(rt, partial(read_archive_source, archived, source, max_bytes=cap))
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
        data = calls.stored(
            rt, lambda: rt.store.get_bytes(upload_key(item.tenant_id, upload_id, name))
        )
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
