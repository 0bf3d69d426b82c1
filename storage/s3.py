"""`S3ObjectStore`: objects in an S3 bucket (AWS, SeaweedFS, MinIO, R2) through boto3.

Streamed writes (`open_writer`) are multipart uploads, `storage.s3_writer.S3ObjectWriter`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import datetime
from typing import TYPE_CHECKING, Any, BinaryIO, cast

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

from storage.keys import validate_key, validate_prefix
from storage.objects import (
    ObjectInfo,
    ObjectNotFound,
    ObjectPage,
    ObjectWriter,
    StorageUnavailable,
)
from storage.s3_writer import PART_SIZE, S3ObjectWriter

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.literals import BucketLocationConstraintType

TRANSFER_CONFIG = TransferConfig(
    multipart_threshold=PART_SIZE, multipart_chunksize=PART_SIZE, max_concurrency=4
)
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
_REFUSED_CODES = frozenset(
    {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"}
)
# What a bodiless HEAD bucket status means, for check()'s message.
_HEAD_CAUSES = {"404": "NoSuchBucket", "NotFound": "NoSuchBucket", "403": "AccessDenied"}


class BucketMissing(StorageUnavailable):
    """`check()` found no such bucket (not a refusal or an outage: it is not there)."""


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
    """Objects in `bucket` under `prefix`, through a thread-safe boto3 S3 client.

    `presign_client` signs download URLs (default: `client`). Give it one built for the
    address clients outside the storage network use (compose publishes SeaweedFS on
    localhost:8333, while the containers reach it as seaweedfs:8333): a SigV4 URL names
    its host, so it cannot be rewritten afterwards. Presigning is local; it sends nothing.

    A worker killed in the middle of an `open_writer` stream leaves an incomplete multipart
    upload: never visible at the key, but its parts are stored (and billed) until aborted.
    Give the bucket a lifecycle rule with `AbortIncompleteMultipartUpload` (e.g.
    `DaysAfterInitiation: 1`) so that S3 removes them.
    """

    def __init__(
        self,
        client: S3Client,
        bucket: str,
        prefix: str = "",
        *,
        presign_client: S3Client | None = None,
    ) -> None:
        self.client = client
        self.presign_client = presign_client or client
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

    def open_writer(self, key: str, content_type: str) -> ObjectWriter:
        return S3ObjectWriter(self, key, content_type)

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

    def copy(self, src: str, dst: str) -> int:
        """See ObjectStore: one CopyObject request, so the bytes stay inside S3. (CopyObject
        takes objects up to 5 GiB; speechbatch copies TTS outputs, far below that.)"""
        source, target = self._key(src), self._key(dst)
        with self._errors(src):
            self.client.copy_object(
                Bucket=self.bucket,
                Key=target,
                CopySource={"Bucket": self.bucket, "Key": source},
                MetadataDirective="COPY",
            )
        size = self.size(dst)
        if size is None:  # copied and gone at once: a concurrent delete
            raise ObjectNotFound(dst)
        return size

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

    def list_keys_older_than(self, prefix: str, before: datetime) -> Iterator[str]:
        """See ObjectStore: S3's own LastModified of each listed object, no HEAD per key."""
        validate_prefix(prefix.rstrip("/"))
        root = f"{self.prefix}/" if self.prefix else ""
        listing = self.client.get_paginator("list_objects_v2")
        with self._errors(prefix):
            for page in listing.paginate(Bucket=self.bucket, Prefix=root + prefix):
                old = (o for o in page.get("Contents", []) if o["LastModified"] < before)
                yield from (o["Key"][len(root) :] for o in old)

    def list_page(
        self, prefix: str, *, start_after: str | None = None, limit: int = 1000
    ) -> ObjectPage:
        """See ObjectStore: one ListObjectsV2 call, resumed by StartAfter (no continuation
        token to keep). Archive keys are S3's own, so `prefix` is not held to our key rules."""
        root = f"{self.prefix}/" if self.prefix else ""
        args: dict[str, Any] = {"Bucket": self.bucket, "Prefix": root + prefix, "MaxKeys": limit}
        if start_after:
            args["StartAfter"] = root + start_after
        with self._errors(prefix):
            page = self.client.list_objects_v2(**args)
        objects = [
            ObjectInfo(
                o["Key"][len(root) :], o["Size"], o.get("ETag", "").strip('"'), o["LastModified"]
            )
            for o in page.get("Contents", [])
        ]
        return ObjectPage(objects, truncated=bool(page.get("IsTruncated")))

    def presigned_url(self, key: str, expires_s: int) -> str | None:
        full = self._key(key)
        return self.presign_client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": full}, ExpiresIn=expires_s
        )

    def check(self) -> None:
        """See ObjectStore. The message names the bucket and the cause, and nothing else (no
        endpoint URL or credentials): /healthz, which anyone may call, shows it."""
        bucket = self.bucket
        try:
            self.client.head_bucket(Bucket=bucket)
        except ClientError as exc:
            # A HEAD answer has no body, so the code is mostly the bare HTTP status.
            code = exc.response.get("Error", {}).get("Code", "") or "?"
            cause = _HEAD_CAUSES.get(code, code if not code.isdigit() else f"HTTP {code}")
            if cause == "NoSuchBucket":
                raise BucketMissing(f"bucket {bucket!r} does not exist ({cause})") from exc
            raise StorageUnavailable(f"bucket {bucket!r} is not usable ({cause})") from exc
        except NoCredentialsError as exc:
            raise StorageUnavailable(
                f"bucket {bucket!r} is not usable (no S3 credentials: set AWS_ACCESS_KEY_ID)"
            ) from exc
        except BotoCoreError as exc:
            raise StorageUnavailable(
                f"bucket {bucket!r} is unreachable ({type(exc).__name__})"
            ) from exc

    def ensure_exists(self) -> None:
        """Create the bucket when it does not exist yet (a no-op when it does)."""
        client, bucket = self.client, self.bucket
        try:
            with self._errors(bucket):
                client.head_bucket(Bucket=bucket)
            return
        except ObjectNotFound:
            pass  # HEAD on a missing bucket answers a bare 404
        region = client.meta.region_name
        with self._errors(bucket), suppress(client.exceptions.BucketAlreadyOwnedByYou):
            if region and region != "us-east-1":
                location = cast("BucketLocationConstraintType", region)
                client.create_bucket(
                    Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": location}
                )
            else:
                client.create_bucket(Bucket=bucket)

    def close(self) -> None:
        self.client.close()
        if self.presign_client is not self.client:
            self.presign_client.close()


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
