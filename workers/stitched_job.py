"""A TTS job's outputs as one track (`output.stitched: true`), written once the job ends.

Next to the manifest: `stitched.<ext>` (the succeeded items in sequence order, each join a
short pause, encoded on the fly through the store's writer, one item in memory at a time)
and `cues.json` (each item's id, sequence number and start/end second in the track), so an
editor or a player can jump to any line. Failed and canceled items are left out and listed.
Whoever finishes the job writes it, as with the manifest; a retried job's next finish
rewrites both. A failure here never fails an item: it is logged, and `retry` redoes it.
"""

from __future__ import annotations

import json

from sqlalchemy.orm import Session, sessionmaker

from jobs import repository as repo
from jobs.models import Job
from jobs.status import JOB_TERMINAL, ItemStatus, JobKind
from storage.keys import job_prefix
from storage.objects import ObjectStore
from workers.audio import ext_of
from workers.long_tts import stitch

JOIN_PAUSE_S = 0.5  # between two items: a paragraph's breath, longer than within a line


def stitch_job_if_finished(
    sessions: sessionmaker[Session], store: ObjectStore, job_id: str
) -> str | None:
    """Write the stitched track and cue sheet of a finished TTS job that asked for them;
    the track's key, or None when there is nothing to stitch."""
    with sessions() as session:
        job = session.get(Job, job_id)
        if job is None or not job.stitched or job.kind != JobKind.TTS:
            return None
        if job.status not in JOB_TERMINAL:
            return None
        outputs, left_out = [], []
        for item in repo.iter_items(session, job_id):
            if item.status == ItemStatus.SUCCEEDED and item.output_key:
                outputs.append((item.external_id, item.seq, item.output_key))
            else:
                left_out.append(item.external_id)
        folder = job_prefix(job.output_prefix, job.tenant_id, job.id)
        fmt = str(job.options.get("format") or "wav")
        sample_rate = job.options.get("sample_rate")
    if not outputs:
        return None
    key = f"{folder}/stitched.{ext_of(fmt)}"
    stored, starts = stitch(
        store,
        [output for _, _, output in outputs],
        key,
        fmt=fmt,
        sample_rate=sample_rate,
        pause_s=JOIN_PAUSE_S,
    )
    ends = [*(start - JOIN_PAUSE_S for start in starts[1:]), stored.duration_s]
    cues = {
        "track": key,
        "duration_s": round(stored.duration_s, 3),
        "cues": [
            {"id": item_id, "seq": seq, "start_s": round(start, 3), "end_s": round(end, 3)}
            for (item_id, seq, _), start, end in zip(outputs, starts, ends, strict=True)
        ],
        "left_out": left_out,
    }
    store.put_bytes(f"{folder}/cues.json", json.dumps(cues, indent=1).encode(), "application/json")
    return key
