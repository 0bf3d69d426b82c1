"""One contract, three object stores: SeaweedFS over S3, a local directory, and memory."""

from __future__ import annotations

import hashlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

import httpx
import pytest

from storage.keys import UnsafeKey
from storage.localfs import LocalObjectStore
from storage.objects import ObjectNotFound, ObjectStore, StorageUnavailable
from storage.s3 import S3ObjectStore, s3_client
from storage.stores import open_object_store
from tests.services import free_port

pytestmark = pytest.mark.integration

MiB = 1024 * 1024


class NoSlurpReader:
    """A file wrapper that fails the test if anyone reads it whole or in huge pieces."""

    def __init__(self, inner: BinaryIO, max_read: int = 16 * MiB) -> None:
        self.inner, self.max_read, self.largest_read = inner, max_read, 0

    def read(self, size: int = -1) -> bytes:
        assert 0 <= size <= self.max_read, f"read({size}) would load the file whole"
        self.largest_read = max(self.largest_read, size)
        return self.inner.read(size)


def test_put_get_round_trip(object_store: ObjectStore) -> None:
    """Bytes put under a key come back whole, in chunks, and with the right size."""
    data = os.urandom(200_000)
    assert object_store.put_bytes("job/000001-a.wav", data, "audio/wav") == len(data)
    assert object_store.get_bytes("job/000001-a.wav") == data
    assert b"".join(object_store.iter_chunks("job/000001-a.wav", chunk_size=4096)) == data
    assert object_store.size("job/000001-a.wav") == len(data)


def test_put_replaces_existing_object(object_store: ObjectStore) -> None:
    """Writing a key again overwrites it, so a re-run item never leaves two versions."""
    object_store.put_bytes("k.txt", b"first version", "text/plain")
    object_store.put_bytes("k.txt", b"second", "text/plain")
    assert object_store.get_bytes("k.txt") == b"second"
    assert list(object_store.list_keys("")) == ["k.txt"]


def test_absent_key(object_store: ObjectStore) -> None:
    """An absent key has size None, and reading it raises ObjectNotFound (a KeyError)."""
    assert object_store.size("missing/key.wav") is None
    with pytest.raises(ObjectNotFound) as caught:
        object_store.get_bytes("missing/key.wav")
    assert isinstance(caught.value, KeyError)
    assert caught.value.key == "missing/key.wav"
    with pytest.raises(ObjectNotFound):
        object_store.iter_chunks("missing/key.wav")


def test_delete(object_store: ObjectStore) -> None:
    """delete removes the object, and deleting an absent key is not an error."""
    object_store.put_bytes("a/b.bin", b"x", "application/octet-stream")
    object_store.delete("a/b.bin")
    assert object_store.size("a/b.bin") is None
    object_store.delete("a/b.bin")
    object_store.delete("never/existed.bin")


def test_list_keys_is_a_string_prefix_match(object_store: ObjectStore) -> None:
    """list_keys returns relative keys starting with the prefix, folders or not."""
    for key in ["t/j1/000001-a.wav", "t/j1/manifest.jsonl", "t/j10/000001-a.wav", "u/x.wav"]:
        object_store.put_bytes(key, b"x", "application/octet-stream")
    assert sorted(object_store.list_keys("t/j1/")) == ["t/j1/000001-a.wav", "t/j1/manifest.jsonl"]
    assert len(list(object_store.list_keys("t/j1"))) == 3
    assert len(list(object_store.list_keys(""))) == 4
    assert list(object_store.list_keys("nothing/")) == []


def test_list_keys_older_than_compares_the_last_write(object_store: ObjectStore) -> None:
    """Keys under the prefix written before the cut-off are listed; none written after it."""
    for key in ["uploads/t/a/audio.wav", "uploads/t/b/audio.wav", "other/c.wav"]:
        object_store.put_bytes(key, b"x", "audio/wav")
    now = datetime.now(UTC)
    assert list(object_store.list_keys_older_than("uploads/", now - timedelta(hours=1))) == []
    later = now + timedelta(minutes=1)
    assert sorted(object_store.list_keys_older_than("uploads/", later)) == [
        "uploads/t/a/audio.wav",
        "uploads/t/b/audio.wav",
    ]
    object_store.delete("uploads/t/a/audio.wav")
    assert list(object_store.list_keys_older_than("uploads/", later)) == ["uploads/t/b/audio.wav"]


def test_put_file_streams_20_mib(object_store: ObjectStore, tmp_path: Path) -> None:
    """A 20 MiB file is uploaded in bounded reads (multipart on S3) and arrives intact."""
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(20 * MiB))
    with source.open("rb") as handle:
        reader = NoSlurpReader(handle)
        written = object_store.put_file("big/000001-big.wav", reader, "audio/wav")  # type: ignore[arg-type]
    assert written == 20 * MiB
    assert object_store.size("big/000001-big.wav") == 20 * MiB
    digest = hashlib.sha256()
    for chunk in object_store.iter_chunks("big/000001-big.wav", chunk_size=MiB):
        digest.update(chunk)
    assert digest.hexdigest() == hashlib.sha256(source.read_bytes()).hexdigest()
    if isinstance(object_store, S3ObjectStore):
        head = object_store.client.head_object(Bucket=object_store.bucket, Key="big/000001-big.wav")
        assert "-" in head["ETag"], "a multipart upload's ETag ends in -<part count>"


def test_s3_list_keys_pages_beyond_1000(s3_store: S3ObjectStore) -> None:
    """Listing 1,100 keys crosses S3's 1,000-key page limit and still yields every key."""
    keys = [f"many/{index:05d}.txt" for index in range(1100)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda key: s3_store.put_bytes(key, b"", "text/plain"), keys))
    assert list(s3_store.list_keys("many/")) == keys


def test_s3_presigned_url(s3_store: S3ObjectStore) -> None:
    """A presigned URL serves the bytes; a tampered or expired one gets 403."""
    s3_store.put_bytes("out/000001-a.wav", b"RIFF-audio", "audio/wav")
    url = s3_store.presigned_url("out/000001-a.wav", expires_s=300)
    assert url is not None
    response = httpx.get(url)
    assert response.status_code == 200
    assert response.content == b"RIFF-audio"
    assert response.headers["content-type"] == "audio/wav"

    tampered = url.replace("out/000001-a.wav", "out/000002-a.wav")
    assert httpx.get(tampered).status_code == 403
    signature = url.rsplit("X-Amz-Signature=", 1)[1][:64]
    forged = url.replace(signature, signature[::-1])
    assert httpx.get(forged).status_code == 403

    short = s3_store.presigned_url("out/000001-a.wav", expires_s=1)
    assert short is not None
    time.sleep(2.1)  # the server's clock, not ours, decides expiry: nothing to fake here
    assert httpx.get(short).status_code == 403


def test_local_presigned_url_is_none(local_store: LocalObjectStore) -> None:
    """The local store cannot sign URLs and says so with None."""
    local_store.put_bytes("a.wav", b"x", "audio/wav")
    assert local_store.presigned_url("a.wav", expires_s=60) is None


@pytest.mark.parametrize(
    "key", ["../outside.txt", "a/../../outside.txt", "/etc/passwd", "a\\..\\b", "", "a/./b"]
)
def test_local_store_refuses_escaping_keys(local_store: LocalObjectStore, key: str) -> None:
    """Keys that could leave the root are refused for every operation."""
    for call in (
        lambda: local_store.put_bytes(key, b"x", "text/plain"),
        lambda: local_store.get_bytes(key),
        lambda: local_store.size(key),
        lambda: local_store.delete(key),
    ):
        with pytest.raises(UnsafeKey):
            call()
    assert not (local_store.root.parent / "outside.txt").exists()


def test_local_store_refuses_symlink_out_of_root(
    local_store: LocalObjectStore, tmp_path: Path
) -> None:
    """A symlink inside the root can be used neither to write nor to list outside it."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"private")
    (local_store.root / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UnsafeKey):
        local_store.put_bytes("link/evil.txt", b"x", "text/plain")
    with pytest.raises(UnsafeKey):
        local_store.get_bytes("link/secret.txt")
    with pytest.raises(UnsafeKey):
        list(local_store.list_keys("link/"))
    assert list(local_store.list_keys("")) == []
    assert [p.name for p in outside.iterdir()] == ["secret.txt"]


def test_local_writes_are_atomic_and_leave_no_temp_files(local_store: LocalObjectStore) -> None:
    """A write that fails half-way leaves neither a partial object nor a temp file behind."""

    class Exploding:
        def __init__(self) -> None:
            self.calls = 0

        def read(self, size: int = -1) -> bytes:
            self.calls += 1
            if self.calls > 2:
                raise OSError("disk on fire")
            return b"x" * 1000

    local_store.put_bytes("obj.bin", b"old", "application/octet-stream")
    with pytest.raises(OSError, match="disk on fire"):
        local_store.put_file("obj.bin", Exploding(), "application/octet-stream")  # type: ignore[arg-type]
    assert local_store.get_bytes("obj.bin") == b"old"
    assert sorted(p.name for p in local_store.root.iterdir()) == ["obj.bin"]


def test_check_passes_on_healthy_stores(object_store: ObjectStore) -> None:
    """check() is silent when the store is usable."""
    object_store.check()


def test_s3_check_raises_when_endpoint_is_down() -> None:
    """check() and reads raise StorageUnavailable when nothing listens on the S3 port."""
    store = S3ObjectStore(s3_client(f"http://127.0.0.1:{free_port()}"), "speechbatch")
    with pytest.raises(StorageUnavailable):
        store.check()
    with pytest.raises(StorageUnavailable):
        store.get_bytes("a.wav")
    store.close()


def test_s3_check_raises_for_missing_bucket(s3_store: S3ObjectStore) -> None:
    """A reachable endpoint without the bucket is unavailable storage, and says which bucket."""
    store = S3ObjectStore(s3_store.client, "no-such-bucket-here")
    with pytest.raises(StorageUnavailable) as caught:
        store.check()
    assert str(caught.value) == "bucket 'no-such-bucket-here' does not exist (NoSuchBucket)"


def test_local_check_raises_when_root_is_gone(tmp_path: Path) -> None:
    """check() raises StorageUnavailable once the root folder has disappeared."""
    store = LocalObjectStore(tmp_path / "objects")
    (tmp_path / "objects").rmdir()
    with pytest.raises(StorageUnavailable):
        store.check()


def test_s3_prefix_keeps_keys_relative(s3_store: S3ObjectStore) -> None:
    """A store with a prefix writes under it and lists keys relative to it."""
    scoped = S3ObjectStore(s3_store.client, s3_store.bucket, prefix="tenant-root/")
    scoped.put_bytes("a/1.txt", b"one", "text/plain")
    assert s3_store.get_bytes("tenant-root/a/1.txt") == b"one"
    assert list(scoped.list_keys("a/")) == ["a/1.txt"]
    assert list(s3_store.list_keys("")) == ["tenant-root/a/1.txt"]


def test_open_object_store_from_urls(s3_endpoint_url: str, tmp_path: Path) -> None:
    """Storage URLs pick the store; the production S3 client works against SeaweedFS."""
    s3 = open_object_store("s3://speechbatch-open-test/some/prefix", endpoint_url=s3_endpoint_url)
    assert isinstance(s3, S3ObjectStore)
    assert (s3.bucket, s3.prefix) == ("speechbatch-open-test", "some/prefix")
    s3.ensure_exists()
    s3.ensure_exists()  # idempotent
    s3.put_bytes("x.txt", b"via url", "text/plain")
    assert s3.get_bytes("x.txt") == b"via url"
    s3.delete("x.txt")
    s3.client.delete_bucket(Bucket="speechbatch-open-test")
    s3.close()

    local = open_object_store(f"file://{tmp_path}/objects")
    assert isinstance(local, LocalObjectStore)
    assert local.root == (tmp_path / "objects").resolve()


@pytest.mark.parametrize(
    "url", ["gs://bucket", "file://relative/path", "s3://", "objects", "s3://bucket/../x"]
)
def test_open_object_store_rejects_other_urls(url: str) -> None:
    """Unsupported or unsafe storage URLs raise ValueError with the accepted forms."""
    with pytest.raises(ValueError, match=r"s3://|Prefix"):
        open_object_store(url)
