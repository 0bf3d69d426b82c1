"""Uploads: stream a recording into the object store and hand back a `source` for STT jobs.

The source is content-addressed (`jobs.uploads.store_upload`): the same bytes from the same
tenant always give the same `upload://…`, so a re-submitted job body is the same body.
"""

from __future__ import annotations

from fastapi import APIRouter, UploadFile

from jobs.api.deps import Res, TenantId
from jobs.api.docs import AUTH, errors
from jobs.errors import refused_upload
from jobs.media import AudioRejected, check_audio
from jobs.schemas import UploadOut
from jobs.uploads import store_upload

router = APIRouter(prefix="/v1/uploads", tags=["uploads"])


@router.post(
    "",
    status_code=201,
    response_model=UploadOut,
    responses=errors(
        {
            400: "`empty_audio`: the file has 0 bytes.",
            401: AUTH,
            413: "`payload_too_large`: over SPEECHBATCH_MAX_UPLOAD_BYTES.",
            415: "`unsupported_audio`: the bytes are not a recording we recognise.",
            422: "`invalid_request`: no multipart field `file`.",
        }
    ),
)
def upload(file: UploadFile, res: Res, tenant_id: TenantId) -> UploadOut:
    """The body size cap is enforced while streaming (413) by the size-limit middleware."""
    try:
        content_type = check_audio(file.file.read(64), "The uploaded file")
    except AudioRejected as rejected:
        raise refused_upload(rejected) from None
    file.file.seek(0)
    source, size = store_upload(res.store, tenant_id, file.file, content_type)
    return UploadOut(source=source, bytes=size, content_type=content_type)
