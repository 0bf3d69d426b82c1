"""Content-addressed reuse: an identical TTS line is copied, not spoken again (issue 12).

Before a TTS item calls its provider, the worker asks the database about the line's content
hash (`jobs.content_hash`: tenant, provider, model, voice, audio options, text; for the
route the item is on now, so a fallback never reuses the primary's audio):

1. A succeeded item with that hash: its output is copied inside the store
   (`ObjectStore.copy`, S3 CopyObject) to this item's own deterministic key, and the item
   succeeds with `reused_from` set and no usage. An output that is gone (its job's objects
   were removed) is skipped for the next candidate; none left, and the line is spoken.
2. Otherwise, an identical item with a lower id still queued or running: that one is the
   line's leader and speaks it; this item goes back to the queue for a moment without
   spending an attempt (`hand_back`) and finds the leader's output on its next run. The
   leader is the lowest pending id, which never waits for anyone, so there is no deadlock,
   and two copies claimed at the same instant agree on who speaks: one call per distinct
   line, within a job and across the tenant's jobs. A leader that fails ends pending, and
   the next lowest copy speaks the line itself.

What is not shared: lines of different tenants (the tenant is in the hash), and STT (a
recording's transcript is for archives' incremental mode, `jobs.archives`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from jobs import repository as repo
from jobs.content_hash import tts_content_hash
from jobs.records import ClaimedItem, ItemResult
from jobs.status import JobKind
from storage.keys import output_key
from storage.objects import ObjectNotFound
from workers.audio import ext_of
from workers.runtime import Runtime

log = logging.getLogger(__name__)
CANDIDATES = 3  # newest succeeded copies tried before the line is spoken again
WAIT_S = (0.5, 2.0)  # a copy waits this long (uniform) before looking again


@dataclass(frozen=True)
class WaitForLeader:
    """An identical line with a lower id is pending: let it speak, look again in `delay_s`."""

    leader_id: int
    delay_s: float


def route_hash(item: ClaimedItem) -> str | None:
    """The content hash of `item`'s line on the route it is on now (None: not TTS)."""
    if item.kind != JobKind.TTS or item.text is None:
        return None
    return tts_content_hash(
        tenant_id=item.tenant_id,
        provider=item.provider,
        model=item.model,
        voice=item.voice,
        options=item.options,
        text=item.text,
    )


def item_key(item: ClaimedItem) -> str:
    """The deterministic key of a TTS item's output (as `workers.tts` writes it)."""
    fmt = item.options.get("format", "wav")
    return output_key(
        item.output_prefix, item.tenant_id, item.job_id, item.seq, item.external_id, ext_of(fmt)
    )


def reuse_or_wait(rt: Runtime, item: ClaimedItem) -> ItemResult | WaitForLeader | None:
    """A reused output (already copied to this item's key), a reason to wait for the line's
    leader, or None: speak it. StorageUnavailable from the copy propagates (a hand-back)."""
    digest = route_hash(item)
    if digest is None:
        return None
    if item.twin is False and digest == item.content_hash:
        return None  # the claim found no other item with this line: nothing to copy or await
    engine = rt.ledger.db.autocommit or rt.ledger.db.engine
    with engine.connect() as c:
        candidates, leader = repo.reuse_lookup(c, digest, item.id, limit=CANDIDATES)
    key = item_key(item)
    for found in candidates:
        try:
            size = rt.store.copy(found.output_key, key)
        except ObjectNotFound:
            log.info("item %s: the output of item %s is gone; not reused", item.id, found.id)
            continue
        return ItemResult(
            output_key=key,
            output_bytes=size,
            content_type=found.output_content_type or "application/octet-stream",
            duration_s=found.duration_s,
            characters=0,  # nothing was synthesised for it
            pieces=0,
            content_hash=digest,
            reused_from=found.id,
        )
    if leader is not None:
        return WaitForLeader(leader, rt.rng.uniform(*WAIT_S))
    return None
