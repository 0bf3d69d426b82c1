"""Presigned download URLs are signed for the public S3 address, data goes to the in-network one.

In docker compose the containers reach SeaweedFS as `seaweedfs:8333` while a client on the
host reaches it as `localhost:8333`. Here the same real SeaweedFS (with an identity, so it
checks signatures) answers under two loopback names, `127.0.0.1` and `localhost`.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from storage.objects import ObjectStore
from storage.s3 import S3ObjectStore
from storage.stores import open_object_store
from tests.services import free_port

pytestmark = pytest.mark.integration
KEY = "acme/job-1/000001-intro.wav"
DATA = b"RIFF" + bytes(range(256)) * 8


@pytest.fixture
def open_store(s3_store: S3ObjectStore) -> Iterator[list[ObjectStore]]:
    """Stores opened on the fixture's fresh bucket; closed after the test."""
    opened: list[ObjectStore] = []
    yield opened
    for store in opened:
        store.close()


def test_presigned_url_names_the_public_host_and_downloads(
    s3_store: S3ObjectStore, s3_endpoint_url: str, open_store: list[ObjectStore]
) -> None:
    """A URL presigned with a public endpoint carries that host and downloads the object there."""
    port = urlsplit(s3_endpoint_url).port
    public = f"http://localhost:{port}"
    store = open_object_store(
        f"s3://{s3_store.bucket}", endpoint_url=s3_endpoint_url, public_endpoint_url=public
    )
    open_store.append(store)
    store.put_bytes(KEY, DATA, "audio/wav")
    url = store.presigned_url(KEY, 60)
    assert url is not None
    assert urlsplit(url).netloc == f"localhost:{port}"
    fetched = httpx.get(url, timeout=10)
    assert fetched.status_code == 200, fetched.text
    assert fetched.content == DATA
    # The signature covers the host: the same URL rewritten to the in-network name is refused,
    # so the public address must be chosen when signing, not patched in afterwards.
    rewritten = url.replace(f"//localhost:{port}", f"//127.0.0.1:{port}", 1)
    assert httpx.get(rewritten, timeout=10).status_code == 403


def test_data_calls_stay_on_the_in_network_endpoint(
    s3_store: S3ObjectStore, s3_endpoint_url: str, open_store: list[ObjectStore]
) -> None:
    """With nothing listening at the public endpoint, puts and reads still work and presign
    (local, no request) still names it: only presigning uses the public address."""
    public = f"http://localhost:{free_port()}"
    store = open_object_store(
        f"s3://{s3_store.bucket}/out", endpoint_url=s3_endpoint_url, public_endpoint_url=public
    )
    open_store.append(store)
    store.put_bytes(KEY, DATA, "audio/wav")
    assert store.get_bytes(KEY) == DATA
    assert store.size(KEY) == len(DATA)
    url = store.presigned_url(KEY, 60)
    assert url is not None
    assert url.startswith(f"{public}/{s3_store.bucket}/out/{KEY}?")
