"""`S3ObjectWriter`: an object of unknown length streamed to S3 as a multipart upload.

Kept apart from `storage.s3` (the store) because it is a file object with a life of its own:
about two parts in memory whatever the object's size, nothing at the key until `commit`.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from storage.objects import BaseObjectWriter, MiB

if TYPE_CHECKING:
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

    from storage.s3 import S3ObjectStore

# Parts of 8 MiB: large enough to keep the request count low, small enough that four
# concurrent parts per upload stay well inside a worker's memory. S3 wants >= 5 MiB for
# every part but the last.
PART_SIZE = 8 * MiB


class S3ObjectWriter(BaseObjectWriter):
    """An object streamed as a multipart upload of PART_SIZE parts (see ObjectWriter).

    Two buffers, so memory stays at about two parts: the *head*, bytes [0, PART_SIZE), is
    kept until commit because encoders seek back into it to patch their headers; the *tail*
    is the part being filled. A part is uploaded when the stream moves past its end: the
    head early, so `bytes_stored` moves while the stream runs, and again at commit only if
    it was written to since; each later part once, after which it is dropped and
    io.UnsupportedOperation guards its bytes. The upload is created only when the object
    outgrows one part; a smaller one is a single put_object at commit. Uploads run inside
    write(), so a slow store slows the producer instead of piling up parts in memory.
    """

    def __init__(self, store: S3ObjectStore, key: str, content_type: str) -> None:
        super().__init__(key)
        self._store = store
        self._full_key = store._key(key)
        self._content_type = content_type
        self._head = bytearray()
        self._tail = bytearray()
        self._tail_start = PART_SIZE  # where the tail sits in the object; parts before it are sent
        self._head_dirty = False  # written to since its upload as part 1
        self._pos = 0
        self._size = 0
        self._upload_id: str | None = None
        self._etags: dict[int, str] = {}
        self._sent_sizes: dict[int, int] = {}

    def _write(self, data: memoryview) -> int:
        if self._pos > self._size:  # a seek past the end: the gap reads as zeros, as in a file
            target, self._pos = self._pos, self._size
            zeros = memoryview(bytes(min(target - self._size, 64 * 1024)))
            while self._pos < target:
                self._write_some(zeros[: target - self._pos])
        done = 0
        while done < len(data):
            done += self._write_some(data[done:])
        return done

    def _write_some(self, data: memoryview) -> int:
        """Write the part of `data` that fits in the buffer under the position; its length."""
        pos = self._pos
        if pos < PART_SIZE:
            count = min(len(data), PART_SIZE - pos)
            self._head[pos : pos + count] = data[:count]
            if self._upload_id is not None:
                self._head_dirty = True
        else:
            self._check_held(pos)
            if self._upload_id is None:
                self._start_upload()
            if pos == self._tail_start + PART_SIZE:  # the tail is full and the stream moves on
                self._send_part(self._tail_part_number, self._tail)
                self._tail_start += PART_SIZE
                self._tail = bytearray()
            offset = pos - self._tail_start
            count = min(len(data), PART_SIZE - offset)
            self._tail[offset : offset + count] = data[:count]
        self._pos += count
        self._size = max(self._size, self._pos)
        return count

    @property
    def _tail_part_number(self) -> int:
        return self._tail_start // PART_SIZE + 1

    def _check_held(self, pos: int) -> None:
        if PART_SIZE <= pos < self._tail_start:
            raise io.UnsupportedOperation(
                f"Byte {pos} of {self.key!r} was already uploaded to S3 (bytes {PART_SIZE} to "
                f"{self._tail_start} are sent); only the first {PART_SIZE} bytes and the "
                "part still being filled can be revisited."
            )

    def _start_upload(self) -> None:
        """Create the multipart upload and send the (full) head as part 1."""
        with self._store._errors(self.key):
            created = self._store.client.create_multipart_upload(
                Bucket=self._store.bucket, Key=self._full_key, ContentType=self._content_type
            )
        self._upload_id = created["UploadId"]
        self._send_part(1, self._head)
        self._head_dirty = False

    def _send_part(self, number: int, body: bytearray) -> None:
        assert self._upload_id is not None
        with self._store._errors(self.key):
            sent = self._store.client.upload_part(
                Bucket=self._store.bucket,
                Key=self._full_key,
                UploadId=self._upload_id,
                PartNumber=number,
                Body=body,  # type: ignore[arg-type]  # botocore takes a bytearray as it is
            )
        self._etags[number] = sent["ETag"]
        self._sent_sizes[number] = len(body)
        self._stored(sum(self._sent_sizes.values()))

    def _seek(self, offset: int, whence: int) -> int:
        bases = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}
        if whence not in bases:
            raise ValueError(f"Invalid whence ({whence}): use 0, 1 or 2.")
        target = bases[whence] + offset
        if target < 0:
            raise ValueError(f"Negative seek position {target}.")
        self._check_held(target)
        self._pos = target
        return target

    def _tell(self) -> int:
        return self._pos

    def _read(self, size: int) -> bytes:
        pos = self._pos
        if pos >= self._size:
            return b""
        self._check_held(pos)
        buffer, start = (self._head, 0) if pos < PART_SIZE else (self._tail, self._tail_start)
        end = len(buffer) if size < 0 else min(len(buffer), pos - start + size)
        data = bytes(buffer[pos - start : end])
        self._pos += len(data)
        return data

    def _commit(self) -> int:
        store = self._store
        if self._upload_id is None:
            with store._errors(self.key):
                store.client.put_object(
                    Bucket=store.bucket,
                    Key=self._full_key,
                    Body=self._head,  # type: ignore[arg-type]  # as in _send_part
                    ContentType=self._content_type,
                )
            self._stored(self._size)
        else:
            if self._head_dirty:
                self._send_part(1, self._head)
                self._head_dirty = False
            if self._tail:
                self._send_part(self._tail_part_number, self._tail)
            parts: list[CompletedPartTypeDef] = [
                {"PartNumber": number, "ETag": etag} for number, etag in sorted(self._etags.items())
            ]
            with store._errors(self.key):
                store.client.complete_multipart_upload(
                    Bucket=store.bucket,
                    Key=self._full_key,
                    UploadId=self._upload_id,
                    MultipartUpload={"Parts": parts},
                )
            self._upload_id = None
        self._head, self._tail = bytearray(), bytearray()
        return self._size

    def _abort(self) -> None:
        if self._upload_id is not None:
            try:
                with self._store._errors(self.key):
                    self._store.client.abort_multipart_upload(
                        Bucket=self._store.bucket, Key=self._full_key, UploadId=self._upload_id
                    )
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "NoSuchUpload":
                    raise
            self._upload_id = None
        self._head, self._tail = bytearray(), bytearray()
