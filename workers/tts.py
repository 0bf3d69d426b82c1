"""A TTS item's provider work: its line spoken and stored at the item's output key.

The output goes to a deterministic key (a re-run overwrites, never duplicates). Every call
gets a `workers.streamed.StoredSpeech` sink that a streaming transport writes into as the
audio arrives; a whole answer (or a short held stream) is converted and put once the
provider's permit is released. A line over its model's limit is spoken piece by piece and
stitched into the one output (`workers.long_tts`).
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import suppress
from functools import partial
from typing import Any

from jobs.catalog import ProviderSpec, get_provider_spec
from jobs.error_codes import ErrorCode
from jobs.records import AttemptRecord, ClaimedItem, ItemResult
from storage.keys import output_key
from storage.objects import StorageUnavailable
from workers import calls, long_tts
from workers.audio import convert, ext_of
from workers.providers.base import Synthesis
from workers.providers.errors import InvalidInput, ProviderUnavailable, UnsupportedAudio
from workers.runtime import Runtime
from workers.streamed import HeldAudio, StoredAudio, StoredSpeech

__all__ = ["synthesize"]


def synthesize(rt: Runtime, item: ClaimedItem, attempts: list[AttemptRecord]) -> ItemResult:
    """The item's line spoken and stored at its output key (in pieces when over the limit)."""
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

    answer = calls.with_retries(rt, item, attempts, attempt)
    if isinstance(answer, StoredAudio):
        return answer
    if isinstance(answer, HeldAudio):  # a short stream, stored now its permit is released
        held = answer
        size = calls.stored(rt, lambda: rt.store.put_bytes(key, held.data, held.content_type))
        return StoredAudio(size, held.content_type, held.duration_s)
    try:
        encoded = convert(answer.audio, fmt=fmt, sample_rate=sample_rate)
    except UnsupportedAudio as error:
        # The provider sent bytes we cannot decode: likely a truncated body, so retry.
        raise ProviderUnavailable(
            f"The provider returned audio that could not be decoded ({error.message}).",
            code=ErrorCode.BAD_PROVIDER_AUDIO,
        ) from error
    size = calls.stored(rt, lambda: rt.store.put_bytes(key, encoded.data, encoded.content_type))
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
        if calls.stored(rt, partial(rt.store.size, at)) is None:
            _speak(rt, item, attempts, piece, at, ("wav", None), options)
    fmt, sample_rate = item.options.get("format", "wav"), item.options.get("sample_rate")
    try:
        stored, _ = calls.stored(
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
