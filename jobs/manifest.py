"""A job's manifest: one JSON Lines record per item, stored beside its outputs when it ends.

`ManifestRecord` is the manifest's own type (the REST item view may grow fields clients see
but the kept manifest does not, such as presigned URLs). The API's manifest endpoint streams
the same records, so the stored file and the endpoint never disagree.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from jobs import repository as repo
from jobs.models import Item, Job
from jobs.status import JOB_TERMINAL, ItemStatus, JobKind
from storage.keys import manifest_key
from storage.objects import ObjectStore


def output_files(job: Job, item: Item) -> list[tuple[str, str]]:
    """(format, key) of every object an item produced: the main output plus STT renderings."""
    if not item.output_key:
        return []
    if job.kind != JobKind.STT:
        return [(item.output_key.rsplit(".", 1)[-1], item.output_key)]
    base = item.output_key.removesuffix(".json")
    renderings = [f for f in job.options.get("transcript_formats", []) if f != "json"]
    return [("json", item.output_key)] + [(fmt, f"{base}.{fmt}") for fmt in renderings]


@dataclass(frozen=True)
class ManifestRecord:
    id: str
    seq: int
    status: ItemStatus
    attempts: int
    source: str | None
    error: dict[str, str] | None
    output: dict[str, Any] | None
    reused: bool = False  # a copy of an identical line's output: no provider call (issue 12)

    @classmethod
    def of(cls, job: Job, item: Item) -> ManifestRecord:
        error = None
        if item.error_code and item.status != ItemStatus.SUCCEEDED:
            error = {"code": item.error_code, "message": item.error_message or ""}
        output = None
        if item.output_key:
            output = {
                "key": item.output_key,
                "url": None,  # presigned URLs expire; manifests are kept
                "bytes": item.output_bytes,
                "duration_s": item.duration_s,
                "content_type": item.output_content_type,
                "pieces": item.pieces,
                "files": [
                    {"format": fmt, "key": key, "url": None} for fmt, key in output_files(job, item)
                ],
            }
        return cls(
            item.external_id,
            item.seq,
            item.status,
            item.attempts,
            item.source,
            error,
            output,
            reused=item.reused_from is not None,
        )

    def line(self) -> bytes:
        return (json.dumps(asdict(self)) + "\n").encode()


def write_manifest_if_finished(
    sessions: sessionmaker[Session], store: ObjectStore, job_id: str
) -> bool:
    """Store `{prefix}/{tenant}/{job_id}/manifest.jsonl` once the job is terminal.

    Whoever finishes a job calls this; two racing finishers write the same bytes to the same
    key, and a retried job's next finish rewrites it. Spooled, so 100k lines stay on disk.
    """
    with sessions() as session:
        job = session.get(Job, job_id)
        if job is None or job.status not in JOB_TERMINAL:
            return False
        with tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024) as buffer:
            for item in repo.iter_items(session, job_id):
                buffer.write(ManifestRecord.of(job, item).line())
            buffer.seek(0)
            key = manifest_key(job.output_prefix, job.tenant_id, job.id)
            store.put_file(key, buffer, "application/x-ndjson")  # type: ignore[arg-type]
    return True
