"""Uploads: stream a recording into the object store and hand back a `source` for STT jobs."""

from __future__ import annotations

from fastapi import APIRouter, UploadFile

from jobs import service
from jobs.api.deps import Res, TenantId
from jobs.errors import refused_upload
from jobs.media import AudioRejected, check_audio
from jobs.schemas import UploadOut

router = APIRouter(prefix="/v1/uploads", tags=["uploads"])


@router.post("", status_code=201, response_model=UploadOut)
def upload(file: UploadFile, res: Res, tenant_id: TenantId) -> UploadOut:
    """The body size cap is enforced while streaming (413) by the size-limit middleware."""
    try:
        content_type = check_audio(file.file.read(64), "The uploaded file")
    except AudioRejected as rejected:
        raise refused_upload(rejected) from None
    file.file.seek(0)
    source, size = service.store_upload(
        res.store, tenant_id, file.filename or "audio", file.file, content_type
    )
    return UploadOut(source=source, bytes=size, content_type=content_type)
