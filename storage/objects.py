"""Object stores: where audio, transcripts and manifests live.

`ObjectStore` is the interface the rest of speechbatch codes against; two real implementations:

- `S3ObjectStore`: any S3 API (AWS, SeaweedFS, MinIO, R2) through an injected boto3 client.
- `LocalObjectStore`: a directory, for embedded mode (`file:///abs/path`).

Both take keys relative to their root (S3: bucket + prefix), refuse keys that could escape it
(see `storage.keys.validate_key`), and raise the same two errors:

    KeyError  → ObjectNotFound        the key does not exist
    Exception → StorageUnavailable    the store cannot be reached or used (endpoint down,
                                      bucket missing, credentials refused, 5xx after retries)
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol, cast
from urllib.parse import unquote, urlsplit

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    NoCredentialsError,
    ProxyConnectionError,
)

from storage.keys import UnsafeKey, validate_key, validate_prefix

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.literals import BucketLocationConstraintType

MiB = 1024 * 1024
# Parts of 8 MiB: large enough to keep the request count low, small enough that four
# concurrent parts per upload stay well inside a worker's memory.
TRANSFER_CONFIG = TransferConfig(
    multipart_threshold=8 * MiB, multipart_chunksize=8 * MiB, max_concurrency=4
)
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
_REFUSED_CODES = frozenset(
    {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"}
)
_TMP_MARK = ".sb-tmp-"


class ObjectNotFound(KeyError):
    """The key does not exist in the store."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key

    def __str__(self) -> str:
        return f"No object at key {self.key!r}."


class StorageUnavailable(Exception):
    """The store cannot be reached or used; the message says what to check."""


class ObjectStore(Protocol):
    """What speechbatch needs from a place to keep objects. Keys are `/`-separated, relative."""

    def put_bytes(self, key: str, data: bytes, content_type: str) -> int:
        """Store `data` at `key` (replacing it) and return its size."""

    def put_file(self, key: str, fileobj: BinaryIO, content_type: str) -> int:
        """Stream `fileobj` to `key` (replacing it), never whole in memory; return its size."""

    def get_bytes(self, key: str) -> bytes:
        """The whole object; ObjectNotFound when absent."""

    def iter_chunks(self, key: str, chunk_size: int = 65536) -> Iterator[bytes]:
        """The object in chunks; ObjectNotFound is raised by the call, before iteration."""

    def size(self, key: str) -> int | None:
        """The object's size in bytes, or None when absent."""

    def delete(self, key: str) -> None:
        """Remove the object; an absent key is not an error."""

    def list_keys(self, prefix: str) -> Iterator[str]:
        """Keys starting with `prefix` (a string prefix, not a folder), fetched page by page."""

    def presigned_url(self, key: str, expires_s: int) -> str | None:
        """A short-lived GET URL for clients, or None when the store cannot make one."""

    def check(self) -> None:
        """Raise StorageUnavailable unless the store is reachable and usable (for /healthz)."""

    def close(self) -> None:
        """Release connections; the store must not be used afterwards."""


class _CountingReader:
    """A read-only view of a file object that counts the bytes handed out."""

    def __init__(self, fileobj: BinaryIO) -> None:
        self._fileobj = fileobj
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self._fileobj.read(size)
        self.count += len(data)
        return data


class S3ObjectStore:
    """Objects in `bucket` under `prefix`, through a thread-safe boto3 S3 client."""

    def __init__(self, client: S3Client, bucket: str, prefix: str = "") -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = validate_prefix(prefix)

    def _key(self, key: str) -> str:
        validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    @contextmanager
    def _errors(self, key: str) -> Iterator[None]:
        """Translate botocore failures into ObjectNotFound / StorageUnavailable."""
        try:
            yield
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if code in _NOT_FOUND_CODES:
                raise ObjectNotFound(key) from exc
            if code == "NoSuchBucket":
                raise StorageUnavailable(f"S3 bucket {self.bucket!r} does not exist.") from exc
            if status >= 500 or code in _REFUSED_CODES:
                raise StorageUnavailable(f"S3 refused the request ({code}): {exc}") from exc
            raise
        except NoCredentialsError as exc:
            raise StorageUnavailable(
                "No S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY."
            ) from exc
        except (
            EndpointConnectionError,
            ConnectTimeoutError,
            ProxyConnectionError,
            HTTPClientError,
        ) as exc:
            raise StorageUnavailable(f"S3 endpoint unreachable: {exc}") from exc

    def put_bytes(self, key: str, data: bytes, content_type: str) -> int:
        full = self._key(key)
        with self._errors(key):
            self.client.put_object(
                Bucket=self.bucket, Key=full, Body=data, ContentType=content_type
            )
        return len(data)

    def put_file(self, key: str, fileobj: BinaryIO, content_type: str) -> int:
        full = self._key(key)
        # The counting wrapper hides seek(), so s3transfer reads part by part (its non-seekable
        # path, multipart above 8 MiB) and we learn the size without a HEAD request.
        reader = _CountingReader(fileobj)
        with self._errors(key):
            self.client.upload_fileobj(
                reader,  # type: ignore[arg-type]  # s3transfer needs only read()
                self.bucket,
                full,
                ExtraArgs={"ContentType": content_type},
                Config=TRANSFER_CONFIG,
            )
        return reader.count

    def get_bytes(self, key: str) -> bytes:
        full = self._key(key)
        with self._errors(key):
            return self.client.get_object(Bucket=self.bucket, Key=full)["Body"].read()

    def iter_chunks(self, key: str, chunk_size: int = 65536) -> Iterator[bytes]:
        """See ObjectStore. Iterate to the end (or close the iterator) to free the connection."""
        full = self._key(key)
        with self._errors(key):
            body = self.client.get_object(Bucket=self.bucket, Key=full)["Body"]

        def chunks() -> Iterator[bytes]:
            try:
                with self._errors(key):
                    yield from body.iter_chunks(chunk_size)
            finally:
                body.close()

        return chunks()

    def size(self, key: str) -> int | None:
        full = self._key(key)
        try:
            with self._errors(key):
                return self.client.head_object(Bucket=self.bucket, Key=full)["ContentLength"]
        except ObjectNotFound:
            return None

    def delete(self, key: str) -> None:
        full = self._key(key)
        with self._errors(key):
            self.client.delete_object(Bucket=self.bucket, Key=full)

    def list_keys(self, prefix: str) -> Iterator[str]:
        validate_prefix(prefix.rstrip("/"))
        root = f"{self.prefix}/" if self.prefix else ""
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=root + prefix
        )
        with self._errors(prefix):
            for page in pages:
                for item in page.get("Contents", []):
                    yield item["Key"][len(root) :]

    def presigned_url(self, key: str, expires_s: int) -> str | None:
        full = self._key(key)
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": full}, ExpiresIn=expires_s
        )

    def check(self) -> None:
        try:
            with self._errors(self.bucket):
                self.client.head_bucket(Bucket=self.bucket)
        except ObjectNotFound as exc:  # HEAD on a missing bucket answers a bare 404
            raise StorageUnavailable(f"S3 bucket {self.bucket!r} does not exist.") from exc
        except (ClientError, BotoCoreError) as exc:
            raise StorageUnavailable(f"S3 bucket {self.bucket!r} is not usable: {exc}") from exc

    def close(self) -> None:
        self.client.close()


class LocalObjectStore:
    """Objects as files under `root`; every write is a temp file renamed into place."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        path = (self.root / validate_key(key)).resolve()
        # resolve() follows symlinks, so a link pointing outside root is caught here too.
        if not path.is_relative_to(self.root) or path == self.root:
            raise UnsafeKey(f"Object key {key!r} resolves outside the store's root.")
        return path

    def _write(self, key: str, write: Callable[[BinaryIO], int]) -> int:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=_TMP_MARK, dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as tmp:
                os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide outputs from other users
                written = write(tmp)
                tmp.flush()
                os.fsync(tmp.fileno())
            os.replace(tmp_name, path)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        return written

    def put_bytes(self, key: str, data: bytes, content_type: str) -> int:
        # content_type is not kept: local files are served with a type guessed from the name.
        return self._write(key, lambda tmp: tmp.write(data))

    def put_file(self, key: str, fileobj: BinaryIO, content_type: str) -> int:
        def copy(tmp: BinaryIO) -> int:
            total = 0
            while chunk := fileobj.read(MiB):
                total += tmp.write(chunk)
            return total

        return self._write(key, copy)

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise ObjectNotFound(key) from exc

    def iter_chunks(self, key: str, chunk_size: int = 65536) -> Iterator[bytes]:
        try:
            handle = self._path(key).open("rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise ObjectNotFound(key) from exc

        def chunks() -> Iterator[bytes]:
            with handle:
                while chunk := handle.read(chunk_size):
                    yield chunk

        return chunks()

    def size(self, key: str) -> int | None:
        path = self._path(key)
        return path.stat().st_size if path.is_file() else None

    def delete(self, key: str) -> None:
        # Empty folders are left behind on purpose: pruning them races with concurrent writers.
        self._path(key).unlink(missing_ok=True)

    def list_keys(self, prefix: str) -> Iterator[str]:
        validate_prefix(prefix.rstrip("/"))
        folder = (self.root / prefix.rpartition("/")[0]).resolve()
        if not folder.is_relative_to(self.root):  # a symlinked folder pointing elsewhere
            raise UnsafeKey(f"Prefix {prefix!r} resolves outside the store's root.")
        yield from (key for key in self._walk(folder) if key.startswith(prefix))

    def _walk(self, folder: Path) -> Iterator[str]:
        """Keys under `folder`, depth first in sorted order, one directory in memory at a time."""
        try:
            entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
        except (FileNotFoundError, NotADirectoryError):
            return
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                yield from self._walk(Path(entry.path))
            elif entry.is_file(follow_symlinks=False) and not entry.name.startswith(_TMP_MARK):
                yield Path(entry.path).relative_to(self.root).as_posix()

    def presigned_url(self, key: str, expires_s: int) -> str | None:
        self._path(key)
        return None

    def check(self) -> None:
        if not self.root.is_dir() or not os.access(self.root, os.W_OK | os.X_OK):
            raise StorageUnavailable(f"Storage folder {self.root} is missing or not writable.")

    def close(self) -> None:
        """Nothing to release."""


def s3_client(endpoint_url: str | None = None) -> S3Client:
    """A boto3 S3 client with explicit timeouts; credentials come from the AWS_* variables.

    Built from its own Session (sessions are not thread-safe; the client is). Path-style
    addressing when an endpoint is given: self-hosted stores rarely have wildcard DNS.
    """
    config = Config(
        connect_timeout=5,
        read_timeout=60,
        retries={"max_attempts": 3, "mode": "standard"},
        max_pool_connections=32,
        signature_version="s3v4",
        s3={"addressing_style": "path"} if endpoint_url else None,
    )
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url, config=config)


def open_object_store(storage_url: str, *, endpoint_url: str | None = None) -> ObjectStore:
    """The store named by `storage_url`: `s3://bucket[/prefix]` or `file:///absolute/path`."""
    parts = urlsplit(storage_url)
    if parts.scheme == "file" and parts.netloc in {"", "localhost"} and parts.path.startswith("/"):
        return LocalObjectStore(Path(unquote(parts.path)))
    if parts.scheme == "s3" and parts.netloc and not (parts.query or parts.fragment):
        prefix = unquote(parts.path).strip("/")
        return S3ObjectStore(s3_client(endpoint_url), parts.netloc, prefix)
    raise ValueError(
        f"Unsupported storage URL {storage_url!r}: use 's3://bucket[/prefix]' or "
        "'file:///absolute/path'."
    )


def ensure_bucket(store: ObjectStore) -> None:
    """Create the S3 bucket (or local folder) behind `store` when it does not exist yet."""
    if isinstance(store, LocalObjectStore):
        store.root.mkdir(parents=True, exist_ok=True)
        return
    if not isinstance(store, S3ObjectStore):
        raise TypeError(f"Cannot create storage for {type(store).__name__}.")
    client, bucket = store.client, store.bucket
    try:
        with store._errors(bucket):
            client.head_bucket(Bucket=bucket)
        return
    except ObjectNotFound:
        pass  # HEAD on a missing bucket answers a bare 404
    region = client.meta.region_name
    with store._errors(bucket), suppress(client.exceptions.BucketAlreadyOwnedByYou):
        if region and region != "us-east-1":
            location = cast("BucketLocationConstraintType", region)
            client.create_bucket(
                Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": location}
            )
        else:
            client.create_bucket(Bucket=bucket)
