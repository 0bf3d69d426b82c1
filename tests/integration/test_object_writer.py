"""Streaming writers (`ObjectStore.open_writer`) on SeaweedFS over S3, a local folder and memory.

The contract: what is written arrives intact, nothing is at the key before commit() or after
abort(), libsndfile can encode straight into a writer, and S3 keeps about two parts in memory.
"""

from __future__ import annotations

import hashlib
import io
import random
import time
import tracemalloc
from typing import TYPE_CHECKING, NoReturn, cast

import numpy as np
import pytest
import soundfile
from botocore.exceptions import ClientError

from storage.localfs import LocalObjectStore
from storage.objects import ObjectStore, ObjectWriter, StorageUnavailable
from storage.s3 import PART_SIZE, S3ObjectStore

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
# Uneven on purpose: single bytes, odd sizes, and one write that spans a whole S3 part.
CHUNK_SIZES = (1, 4093, 65536, 3 * MiB + 5, 7, 10 * MiB + 1)


def _write_in_uneven_chunks(writer: ObjectWriter, data: bytes) -> None:
    view, done, turn = memoryview(data), 0, 0
    while done < len(data):
        size = CHUNK_SIZES[turn % len(CHUNK_SIZES)]
        assert writer.write(view[done : done + size].tobytes()) == min(size, len(data) - done)
        done, turn = done + size, turn + 1


def _digest(store: ObjectStore, key: str) -> str:
    digest = hashlib.sha256()
    for chunk in store.iter_chunks(key, chunk_size=MiB):
        digest.update(chunk)
    return digest.hexdigest()


def _temp_files(store: ObjectStore) -> list[str]:
    """Files on disk that are not objects (the local store's temp files); [] elsewhere."""
    if not isinstance(store, LocalObjectStore):
        return []
    return [p.name for p in store.root.rglob("*") if p.is_file() and ".sb-tmp-" in p.name]


def _open_uploads(store: S3ObjectStore) -> list[str]:
    listing = store.client.list_multipart_uploads(Bucket=store.bucket)
    return [upload["Key"] for upload in listing.get("Uploads", [])]


def test_small_object_round_trip(object_store: ObjectStore) -> None:
    """A few KiB written in uneven chunks come back byte for byte, with the size commit gave."""
    data = random.Random(1).randbytes(70_001)
    with object_store.open_writer("job/000001-a.txt", "text/plain") as writer:
        _write_in_uneven_chunks(writer, data)
        assert writer.tell() == len(data)
        assert writer.commit() == len(data)
    assert writer.closed
    assert object_store.get_bytes("job/000001-a.txt") == data
    assert object_store.size("job/000001-a.txt") == len(data)


def test_empty_object_round_trip(object_store: ObjectStore) -> None:
    """A writer committed without a write stores an empty object."""
    with object_store.open_writer("empty.bin", "application/octet-stream") as writer:
        assert writer.commit() == 0
    assert object_store.get_bytes("empty.bin") == b""


def test_large_object_round_trip(object_store: ObjectStore) -> None:
    """20 MiB and a bit (three S3 parts) written in uneven chunks arrive intact."""
    data = random.Random(2).randbytes(20 * MiB + 12_345)
    with object_store.open_writer("big/000001-a.wav", "audio/wav") as writer:
        _write_in_uneven_chunks(writer, data)
        assert writer.commit() == len(data)
    assert object_store.size("big/000001-a.wav") == len(data)
    assert _digest(object_store, "big/000001-a.wav") == hashlib.sha256(data).hexdigest()
    assert _temp_files(object_store) == []
    if isinstance(object_store, S3ObjectStore):
        head = object_store.client.head_object(Bucket=object_store.bucket, Key="big/000001-a.wav")
        assert head["ETag"].endswith('-3"'), "three parts of a multipart upload"
        assert head["ContentType"] == "audio/wav"
        assert _open_uploads(object_store) == []


def test_nothing_at_key_before_commit(object_store: ObjectStore) -> None:
    """While a stream is written, neither size, get nor list sees the object."""
    with object_store.open_writer("out/000001-a.wav", "audio/wav") as writer:
        writer.write(random.Random(3).randbytes(9 * MiB))  # past one S3 part
        assert object_store.size("out/000001-a.wav") is None
        assert list(object_store.list_keys("")) == []
        writer.commit()
    assert list(object_store.list_keys("")) == ["out/000001-a.wav"]


def test_abort_leaves_nothing(object_store: ObjectStore) -> None:
    """abort() discards the stream, leaves no object or temp file, and may be repeated."""
    writer = object_store.open_writer("out/000001-a.wav", "audio/wav")
    writer.write(random.Random(4).randbytes(17 * MiB))
    writer.abort()
    writer.abort()
    writer.close()
    assert writer.closed
    assert object_store.size("out/000001-a.wav") is None
    assert list(object_store.list_keys("")) == []
    assert _temp_files(object_store) == []
    if isinstance(object_store, S3ObjectStore):
        assert _open_uploads(object_store) == []


def test_exception_inside_with_aborts(object_store: ObjectStore) -> None:
    """A stream that breaks off inside `with` leaves no object, and its error propagates."""
    opened: list[ObjectWriter] = []

    def stream_that_breaks_off() -> None:
        with object_store.open_writer("out/000001-a.wav", "audio/wav") as writer:
            opened.append(writer)
            writer.write(random.Random(5).randbytes(9 * MiB))
            raise RuntimeError("provider hung up")

    with pytest.raises(RuntimeError, match="provider hung up"):
        stream_that_breaks_off()
    assert opened[0].closed
    assert object_store.size("out/000001-a.wav") is None
    assert _temp_files(object_store) == []
    if isinstance(object_store, S3ObjectStore):
        assert _open_uploads(object_store) == []


def test_leaving_with_without_commit_aborts(object_store: ObjectStore) -> None:
    """Closing a writer is never a way to publish: without commit() nothing is stored."""
    with object_store.open_writer("out/a.txt", "text/plain") as writer:
        writer.write(b"half an answer")
    assert object_store.size("out/a.txt") is None


def test_earlier_object_survives_abort(object_store: ObjectStore) -> None:
    """An object already at the key stays readable while a new stream runs, and after abort."""
    object_store.put_bytes("out/a.wav", b"the old take", "audio/wav")
    with object_store.open_writer("out/a.wav", "audio/wav") as writer:
        writer.write(random.Random(6).randbytes(9 * MiB))
        assert object_store.get_bytes("out/a.wav") == b"the old take"
        writer.abort()
    assert object_store.get_bytes("out/a.wav") == b"the old take"

    with object_store.open_writer("out/a.wav", "audio/wav") as writer:
        writer.write(b"the new take")
        writer.commit()
    assert object_store.get_bytes("out/a.wav") == b"the new take"


def test_header_patch_after_20_mib_lands(object_store: ObjectStore) -> None:
    """Seeking back to offset 0 after 20 MiB and rewriting the header is what gets stored."""
    body = random.Random(7).randbytes(20 * MiB)
    with object_store.open_writer("out/a.wav", "audio/wav") as writer:
        writer.write(b"\0" * 44)
        _write_in_uneven_chunks(writer, body)
        assert writer.seek(0) == 0
        writer.write(b"RIFF")
        writer.seek(40)
        writer.write(len(body).to_bytes(4, "little"))
        assert writer.seek(0, io.SEEK_END) == 44 + len(body)
        writer.write(b"tail")
        writer.commit()
    stored = object_store.get_bytes("out/a.wav")
    assert stored[:4] == b"RIFF"
    assert stored[40:44] == len(body).to_bytes(4, "little")
    assert stored[44:-4] == body
    assert stored[-4:] == b"tail"


def test_seek_past_end_fills_with_zeros(object_store: ObjectStore) -> None:
    """Writing after a seek past the end leaves zeros in the gap, as a file does."""
    with object_store.open_writer("gap.bin", "application/octet-stream") as writer:
        writer.write(b"ab")
        writer.seek(10)
        writer.write(b"cd")
        writer.commit()
    assert object_store.get_bytes("gap.bin") == b"ab" + b"\0" * 8 + b"cd"


def test_read_back_the_header(object_store: ObjectStore) -> None:
    """What was written at the start can be read back through the writer (encoders may)."""
    with object_store.open_writer("out/a.bin", "application/octet-stream") as writer:
        writer.write(b"0123456789" * 1000)
        writer.seek(5)
        assert writer.read(5) == b"56789"
        assert writer.tell() == 10
        writer.seek(0, io.SEEK_END)
        assert writer.read() == b""


@pytest.mark.parametrize("audio_format", ["WAV", "FLAC"])
def test_soundfile_encodes_straight_into_a_writer(
    object_store: ObjectStore, audio_format: str
) -> None:
    """libsndfile streams 3 minutes of 44.1 kHz mono into a writer, and it decodes exactly."""
    rate, seconds = 44_100, 180
    noise = np.random.default_rng(8).normal(0, 6000, rate * seconds)
    samples = np.clip(noise, -32768, 32767).astype(np.int16)  # noise: FLAC stays past a part
    key = f"out/000001-a.{audio_format.lower()}"
    with object_store.open_writer(key, "audio/x-test") as writer:
        with soundfile.SoundFile(
            writer, mode="w", samplerate=rate, channels=1, format=audio_format, subtype="PCM_16"
        ) as encoder:
            for start in range(0, len(samples), 4096):  # as a TTS stream arrives, block by block
                encoder.write(samples[start : start + 4096])
        size = writer.commit()
    assert size > PART_SIZE, "the header patch must reach back across an uploaded part"
    stored = object_store.get_bytes(key)
    if audio_format == "WAV":  # decoders forgive a stale header; this is the patch itself
        assert stored[4:8] == (size - 8).to_bytes(4, "little")
    decoded, decoded_rate = soundfile.read(io.BytesIO(stored), dtype="int16")
    assert decoded_rate == rate
    assert len(decoded) == rate * seconds
    assert np.array_equal(decoded, samples)


def test_soundfile_mp3_into_a_writer(object_store: ObjectStore) -> None:
    """libsndfile's MP3 encoder, which rewrites its LAME tag at offset 0, decodes every frame."""
    rate, seconds = 44_100, 30
    tone = np.sin(2 * np.pi * 440 * np.arange(rate * seconds) / rate)
    samples = (tone * 12_000).astype(np.int16)
    with object_store.open_writer("out/a.mp3", "audio/mpeg") as writer:
        with soundfile.SoundFile(
            writer, mode="w", samplerate=rate, channels=1, format="MP3", subtype="MPEG_LAYER_III"
        ) as encoder:
            for start in range(0, len(samples), 4096):
                encoder.write(samples[start : start + 4096])
        writer.commit()
    decoded, _ = soundfile.read(io.BytesIO(object_store.get_bytes("out/a.mp3")), dtype="int16")
    assert len(decoded) == len(samples), "the LAME tag (encoder delay, padding) was patched in"


def test_committed_writer_is_closed(object_store: ObjectStore) -> None:
    """After commit a writer refuses writes, and abort() or close() leave the object alone."""
    with object_store.open_writer("a.txt", "text/plain") as writer:
        writer.write(b"done")
        writer.commit()
        with pytest.raises(ValueError, match="committed"):
            writer.write(b"more")
        writer.abort()
        writer.close()
    assert object_store.get_bytes("a.txt") == b"done"


def test_local_temp_file_sits_beside_target(local_store: LocalObjectStore) -> None:
    """The local writer streams into a 0644 temp file in the target's folder, renamed at commit."""
    with local_store.open_writer("job/out/a.wav", "audio/wav") as writer:
        writer.write(b"x" * 1000)
        folder = local_store.root / "job" / "out"
        [temp] = list(folder.iterdir())
        assert temp.name.startswith(".sb-tmp-")
        assert temp.stat().st_mode & 0o777 == 0o644
        assert writer.bytes_stored == 1000
        assert writer.first_stored_at is not None
        writer.commit()
    assert [p.name for p in folder.iterdir()] == ["a.wav"]


def test_s3_stores_parts_before_commit(s3_store: S3ObjectStore) -> None:
    """Past one part, S3 holds bytes before commit; after commit no upload is left open."""
    before = time.monotonic()
    with s3_store.open_writer("out/a.wav", "audio/wav") as writer:
        writer.write(random.Random(9).randbytes(PART_SIZE))
        assert writer.bytes_stored == 0, "one part is not uploaded until the stream moves on"
        assert _open_uploads(s3_store) == []
        writer.write(random.Random(10).randbytes(PART_SIZE + 1))
        assert writer.bytes_stored == 2 * PART_SIZE
        assert writer.first_stored_at is not None
        assert before <= writer.first_stored_at <= time.monotonic()
        assert _open_uploads(s3_store) == ["out/a.wav"]
        assert writer.commit() == 2 * PART_SIZE + 1
        assert writer.bytes_stored == 2 * PART_SIZE + 1
    assert _open_uploads(s3_store) == []


def test_s3_object_of_one_part_is_a_single_put(s3_store: S3ObjectStore) -> None:
    """An object that never outgrows one part opens no multipart upload."""
    with s3_store.open_writer("out/a.wav", "audio/wav") as writer:
        writer.write(random.Random(11).randbytes(PART_SIZE))
        assert _open_uploads(s3_store) == []
        assert writer.commit() == PART_SIZE
    head = s3_store.client.head_object(Bucket=s3_store.bucket, Key="out/a.wav")
    assert "-" not in head["ETag"], "a single PUT's ETag has no part count"
    assert head["ContentLength"] == PART_SIZE


def test_s3_seek_into_uploaded_part_raises(s3_store: S3ObjectStore) -> None:
    """A sent later part cannot be revisited, and the writer then refuses to commit."""
    with s3_store.open_writer("out/a.wav", "audio/wav") as writer:
        writer.write(random.Random(12).randbytes(20 * MiB))
        assert writer.seek(0) == 0  # the first part is held
        assert writer.seek(2 * PART_SIZE) == 2 * PART_SIZE  # the part being filled
        with pytest.raises(io.UnsupportedOperation, match="already uploaded"):
            writer.seek(PART_SIZE + 10)
        # libsndfile would have dropped that error, so commit raises it again.
        with pytest.raises(io.UnsupportedOperation):
            writer.commit()
    assert s3_store.size("out/a.wav") is None
    assert _open_uploads(s3_store) == []


class _CompleteFails:
    """The real S3 client, except that completing a multipart upload answers 503."""

    def __init__(self, inner: S3Client) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def complete_multipart_upload(self, **kwargs: object) -> NoReturn:
        error = {
            "Error": {"Code": "ServiceUnavailable"},
            "ResponseMetadata": {"HTTPStatusCode": 503},
        }
        raise ClientError(error, "CompleteMultipartUpload")  # type: ignore[arg-type]


def test_s3_abort_after_failed_commit(s3_store: S3ObjectStore) -> None:
    """A commit that fails raises StorageUnavailable; abort() then removes the open upload."""
    flaky = S3ObjectStore(cast("S3Client", _CompleteFails(s3_store.client)), s3_store.bucket)
    writer = flaky.open_writer("out/a.wav", "audio/wav")
    writer.write(random.Random(14).randbytes(PART_SIZE + 1))
    with pytest.raises(StorageUnavailable, match="ServiceUnavailable"):
        writer.commit()
    assert not writer.closed
    assert _open_uploads(s3_store) == ["out/a.wav"]
    writer.abort()
    writer.abort()
    assert writer.closed
    assert _open_uploads(s3_store) == []
    assert s3_store.size("out/a.wav") is None


@pytest.mark.parametrize("store_name", ["s3", "local"])
def test_writer_memory_stays_bounded(request: pytest.FixtureRequest, store_name: str) -> None:
    """Streaming 64 MiB allocates under three parts at its peak, whatever the object's size."""
    store: ObjectStore = request.getfixturevalue(f"{store_name}_store")
    chunk = random.Random(13).randbytes(MiB)
    writer = store.open_writer("big.bin", "application/octet-stream")
    tracemalloc.start()
    try:
        for _ in range(64):
            writer.write(chunk)
        writer.seek(0)
        writer.write(b"header")
        size = writer.commit()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        writer.abort()
    assert size == 64 * MiB
    assert peak < 3 * PART_SIZE, f"peak {peak / MiB:.1f} MiB"
