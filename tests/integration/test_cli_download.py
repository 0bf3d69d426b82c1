"""The CLI's download falls back to the API's output route when a presigned URL fails.

A deployment may sign URLs for an S3 address the CLI's machine cannot reach (compose's
in-network `seaweedfs:8333` without SPEECHBATCH_S3_PUBLIC_ENDPOINT_URL). Here the public
endpoint is a closed port on the real SeaweedFS-backed API, so every presigned URL fails.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from jobs.api import create_app
from jobs.records import ItemResult
from jobs.settings import Settings
from jobs.tenants import create_api_key
from speechbatch.client import HttpBackend
from speechbatch.outputs import download_outputs
from storage.keys import output_key
from tests.integration.helpers import migrated_ledger, published, tts_job

pytestmark = pytest.mark.integration


def test_download_uses_the_api_route_when_the_presigned_url_is_unreachable(
    sqlite_url: str, redis_url: str, s3_endpoint_url: str, s3_client, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """Outputs of a succeeded item arrive byte for byte although its presigned URL cannot
    be fetched."""
    bucket = f"dl-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=bucket)
    settings = Settings(
        database_url=sqlite_url,
        broker_url=redis_url,
        storage_url=f"s3://{bucket}",
        s3_endpoint_url=s3_endpoint_url,
        s3_public_endpoint_url="http://127.0.0.1:9",  # nothing listens on port 9
    )
    ledger = migrated_ledger(sqlite_url)
    submitted = tts_job(ledger, ["hello"])
    item = ledger.claim(published(ledger).ids[0], lease_s=60)
    assert item is not None
    key = output_key("", submitted.job.tenant_id, item.job_id, item.seq, item.external_id, "wav")
    audio = b"RIFF" + uuid.uuid4().bytes * 64
    s3_client.put_object(Bucket=bucket, Key=key, Body=audio)
    ledger.succeed(item, ItemResult(key, len(audio), "audio/wav", 1.0, 5), [])
    api_key = create_api_key(ledger.db.sessions, "acme")
    with TestClient(create_app(settings)) as client:
        backend = HttpBackend("http://testserver", api_key, client=client)
        job = backend.get_job(item.job_id)
        (listed,) = backend.items(item.job_id)
        assert listed["output"]["url"].startswith("http://127.0.0.1:9/")
        failed = download_outputs(backend, job, tmp_path / "out")
    assert failed == []
    assert (tmp_path / "out" / key.rsplit("/", 1)[-1]).read_bytes() == audio
