"""Uploaded recordings, stored under their content: `upload://<id>/audio.<ext>`.

The use case behind `POST /v1/uploads` (`jobs.api.routes_uploads`) and the local mode's STT
files (`speechbatch.local`): the same bytes from the same tenant are one source.
"""

from __future__ import annotations

import hashlib
from typing import BinaryIO

from jobs.media import extension_for
from storage.keys import upload_key
from storage.objects import MiB, ObjectStore

# An upload id is the first 128 bits of the content's SHA-256: the 32 hex digits that
# `jobs.validation` accepts in `upload://<id>/<name>` (and that uuid-named uploads had).
UPLOAD_ID_HEX = 32


def content_id(stream: BinaryIO) -> str:
    """The upload id of a seekable stream's bytes from where it stands; the stream is rewound."""
    start = stream.tell()
    digest = hashlib.sha256()
    while chunk := stream.read(MiB):
        digest.update(chunk)
    stream.seek(start)
    return digest.hexdigest()[:UPLOAD_ID_HEX]


def store_upload(
    store: ObjectStore, tenant_id: str, stream: BinaryIO, content_type: str
) -> tuple[str, int]:
    """Store an uploaded recording under its content; returns (source, bytes).

    The same bytes from the same tenant give the same `upload://<sha256>/audio.<ext>` source
    whatever the file was called, so a job re-submitted with the same Idempotency-Key is the
    same body and replays. The bytes are hashed first, then streamed to their key (the store
    has no rename); `stream` is the API's spooled upload or a local file, so both passes are
    local reads. Writing again
    refreshes the object's age, which keeps beat's retention (`workers.sweeper`) off an
    upload a client has just sent again.
    """
    upload_id = content_id(stream)
    key = upload_key(tenant_id, upload_id, f"audio.{extension_for(content_type)}")
    size = store.put_file(key, stream, content_type)
    return f"upload://{upload_id}/{key.rsplit('/', 1)[-1]}", size
