"""An item whose claim was lost mid-work: record nothing, and leave nothing behind if canceled.

Cancelling a job cancels its running items in the database at once (`ItemLedger.cancel_job`),
so their workers' outcome writes no longer match. The heartbeat then stops the item's thread
(`workers.interrupt`), or its success write comes back lost; either way, when the item ended
canceled, every object it wrote at its keys is removed, so a canceled item leaves no output.
A lease taken over by another worker is different: that worker owns the same keys now, so
nothing is removed.
"""

from __future__ import annotations

import logging

from jobs.records import ClaimedItem
from storage.keys import job_prefix
from storage.objects import StorageUnavailable
from workers.archive import remove_mirrored
from workers.outcomes import Outcome, about, item_fields
from workers.runtime import Runtime

log = logging.getLogger(__name__)


def end_stopped(rt: Runtime, item: ClaimedItem) -> Outcome:
    """The item was stopped by its lost claim: clean up after a cancel, log, report LOST."""
    removed = remove_if_canceled(rt, item)
    outcome = Outcome.LOST.value
    log.info(
        "item %s outcome %s %s: stopped, its claim was lost (%d objects removed)",
        item.id,
        outcome,
        about(item),
        removed,
        extra=item_fields(item, outcome=outcome),
    )
    return Outcome.LOST


def remove_if_canceled(rt: Runtime, item: ClaimedItem) -> int:
    """If the item ended canceled, delete every object at its keys; returns how many."""
    if not rt.ledger.is_canceled(item.id):
        return 0
    # Every key of one item starts with its sequence number: `{seq:06d}-{name}.{ext}`.
    prefix = f"{job_prefix(item.output_prefix, item.tenant_id, item.job_id)}/{item.seq:06d}-"
    try:
        keys = list(rt.store.list_keys(prefix))
        for key in keys:
            rt.store.delete(key)
        # A mirror-layout item's files are beside its source's path, not in the job folder.
        mirrored = remove_mirrored(rt.archives, rt.ledger.db.sessions, rt.store, item)
    except StorageUnavailable:
        log.warning(
            "could not remove the outputs of canceled item %s %s",
            item.id,
            about(item),
            extra=item_fields(item),
        )
        return 0
    return len(keys) + mirrored
