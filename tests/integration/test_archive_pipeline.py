"""Archive items through the real pipeline, SeaweedFS and PostgreSQL/SQLite: read from the
archive bucket, incremental re-runs that call no provider, mirror layout, unreadable keys,
and the API's answers (202 `expanding`, refusals that keep tenants apart)."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from jobs.archive_ledger import ArchiveLedger
from jobs.archives import ArchivePolicy, parse_archive_buckets, parse_location, storage_location
from jobs.errors import ApiError
from jobs.ledger import ItemLedger
from jobs.models import Job
from jobs.status import ItemStatus, JobStatus
from storage.localfs import LocalObjectStore
from storage.s3 import S3ObjectStore
from tests.integration.helpers import migrated_ledger, published
from tests.integration.test_api import running_api
from tests.integration.test_archive_expansion import (
    WAV,
    expander_on,
    fill,
    item_rows,
    job_row,
    policy_for,
    submit_archive,
    tiny_wav,
)
from tests.integration.test_pipeline import runtime
from workers.archive import ArchiveStores
from workers.expand import Expander, Progress
from workers.pipeline import Outcome, run_item
from workers.providers.base import Transcript, Word
from workers.runtime import Runtime

pytestmark = pytest.mark.integration


class CountingStt:
    """A provider that transcribes every recording as "hello" and counts its calls."""

    name = "local"

    def __init__(self) -> None:
        self.calls, self.heard = 0, list[bytes]()
        self._lock = threading.Lock()

    def transcribe(self, audio: Any, *, model: str, options: Mapping[str, Any]) -> Transcript:
        with self._lock:
            self.calls += 1
            self.heard.append(audio.data)
        return Transcript("hello", "en", 0.001, "local", model, words=[Word("hello", 0.0, 0.001)])

    def synthesize(self, text: str, **_: Any) -> Any:
        raise NotImplementedError


def worker(
    database_url: str, out: LocalObjectStore, archive: S3ObjectStore, stt: CountingStt
) -> Runtime:
    return dataclasses.replace(runtime(database_url, out, stt), archives=ArchiveStores(archive))


def run_job(
    api: ItemLedger, rt: Runtime, archive: S3ObjectStore, out: LocalObjectStore, job: Job
) -> Job:
    """Expand the job, then run every item it published; the job's row afterwards."""
    start = len(published(api).ids)
    assert expander_on(api, archive, out).expand(job.id) is Progress.DONE
    for item_id in published(api).ids[start:]:
        assert run_item(rt, item_id) is Outcome.SUCCEEDED
    return job_row(api, job.id)


def test_a_rerun_archive_job_skips_every_object_and_calls_no_provider(
    database_url: str, s3_store: S3ObjectStore, local_store: LocalObjectStore
) -> None:
    """The first run transcribes 40 objects (read from the archive bucket); the same job again
    makes zero provider calls: 40 `skipped` items pointing at the first job's outputs, and
    the job `succeeded`. An object rewritten since (new ETag) is the one transcribed again."""
    keys = [f"night/{n:03d}.wav" for n in range(40)]
    fill(s3_store, keys)
    api = migrated_ledger(database_url)
    stt = CountingStt()
    rt = worker(database_url, local_store, s3_store, stt)
    policy = policy_for(s3_store.bucket, local_store)
    source = {"prefix": f"s3://{s3_store.bucket}/night/"}
    first = run_job(api, rt, s3_store, local_store, submit_archive(api, source, policy))
    assert (first.status, first.succeeded, stt.calls) == (JobStatus.SUCCEEDED, 40, 40)
    assert set(stt.heard) == {WAV}

    second = run_job(api, rt, s3_store, local_store, submit_archive(api, source, policy))
    assert stt.calls == 40
    assert (second.status, second.skipped, second.succeeded, second.total) == (
        JobStatus.SUCCEEDED,
        40,
        0,
        40,
    )
    earlier = {i.source: i.output_key for i in item_rows(api, first.id)}
    skipped = item_rows(api, second.id)
    assert {i.status for i in skipped} == {ItemStatus.SKIPPED}
    assert {i.skipped_from for i in skipped} == {first.id}
    assert all(i.output_key == earlier[i.source] for i in skipped)
    assert all(local_store.size(i.output_key or "") for i in skipped)

    fill(s3_store, [keys[7]], tiny_wav(32))  # rewritten: a new ETag
    third = run_job(api, rt, s3_store, local_store, submit_archive(api, source, policy))
    assert (third.skipped, third.succeeded, stt.calls) == (39, 1, 41)
    full = submit_archive(api, source | {"incremental": False}, policy)
    assert run_job(api, rt, s3_store, local_store, full).succeeded == 40
    other_tenant = submit_archive(api, source, policy, tenant="globex")
    assert run_job(api, rt, s3_store, local_store, other_tenant).skipped == 0


def test_mirror_layout_writes_outputs_at_the_archive_paths_under_the_tenant(
    database_url: str, s3_store: S3ObjectStore, local_store: LocalObjectStore
) -> None:
    """`output{prefix, layout: mirror}` writes `{prefix}/{tenant}/{path below the source
    prefix}.json` (and each rendering beside it); a key too long to mirror keeps the job
    layout, and a key no store reads safely fails alone."""
    long_key = "calls/" + "d" * 90 + "/" + "e" * 90 + ".wav"  # mirrored: over 200 characters
    unsafe = "calls/x/\x01y.wav"  # SeaweedFS refuses '..' keys; a control character it keeps
    fill(s3_store, ["calls/2026/01/a.wav", "calls/2026/02/b.wav", long_key, unsafe])
    try:
        mirrored_run(database_url, s3_store, local_store, long_key)
    finally:  # the fixture's DeleteObjects cannot carry a control character in its XML
        s3_store.client.delete_object(Bucket=s3_store.bucket, Key=unsafe)


def mirrored_run(
    database_url: str, s3_store: S3ObjectStore, local_store: LocalObjectStore, long_key: str
) -> None:
    api = migrated_ledger(database_url)
    rt = worker(database_url, local_store, s3_store, CountingStt())
    job = submit_archive(
        api,
        {"prefix": f"s3://{s3_store.bucket}/calls/"},
        policy_for(s3_store.bucket, local_store),
        output={"prefix": "transcripts", "layout": "mirror"},
        options={"transcript_formats": ["json", "srt"]},
    )
    assert expander_on(api, s3_store, local_store).expand(job.id) is Progress.DONE
    for item_id in published(api).ids:
        assert run_item(rt, item_id) is Outcome.SUCCEEDED
    row = job_row(api, job.id)
    assert (row.status, row.succeeded, row.failed) == (JobStatus.COMPLETED_WITH_ERRORS, 3, 1)
    by_source = {i.source.rsplit("/", 1)[-1]: i for i in item_rows(api, job.id) if i.source}
    tenant = row.tenant_id
    assert by_source["a.wav"].output_key == f"transcripts/{tenant}/2026/01/a.wav.json"
    assert local_store.size(f"transcripts/{tenant}/2026/02/b.wav.srt")
    long_item = by_source["e" * 90 + ".wav"]
    assert (long_item.output_key or "").startswith(f"transcripts/{tenant}/{job.id}/")
    assert by_source["\x01y.wav"].error_code == "unreadable_key"
    assert all(".." not in key for key in local_store.list_keys("transcripts/"))


def test_the_api_answers_202_expanding_and_refuses_places_a_tenant_may_not_read(
    database_url: str, redis_url: str, s3_store: S3ObjectStore, tmp_path: Path
) -> None:
    """POST with `source` is 202 `expanding` at once; a bucket not in
    SPEECHBATCH_ARCHIVE_BUCKETS, another tenant's entry, the service's own storage, a `..`
    prefix, and malformed bodies are each a 422 with their own code."""
    own = f"own-{s3_store.bucket}"
    settings = {
        "storage_url": f"s3://{own}/sb",
        "s3_endpoint_url": "http://127.0.0.1:1",  # the API lists nothing itself
        "archive_buckets": f"{s3_store.bucket}/calls, globex=s3://globex-only, s3://{own}",
    }
    with running_api(database_url, redis_url, **settings) as api:
        ok = api.post_job(
            {
                "kind": "stt",
                "provider": "local",
                "source": {"prefix": f"s3://{s3_store.bucket}/calls/"},
            }
        )
        assert ok.status_code == 202, ok.text
        body = ok.json()
        assert (body["status"], body["counts"]["total"], body["counts"]["skipped"]) == (
            "expanding",
            0,
            0,
        )
        fill(s3_store, [f"calls/{n:04d}.wav" for n in range(1200)])
        res = api.resources
        expander = Expander(
            ArchiveLedger(res.ledger.db, res.ledger.publisher),
            ArchiveStores(s3_store),
            res.store,
            batch=500,
        )
        assert expander.expand(body["id"], budget_s=0.0) is Progress.MORE
        polled = api.client.get(ok.headers["Location"], headers=api.auth())
        assert (polled.json()["status"], polled.json()["counts"]["total"]) == ("expanding", 500)
        assert polled.headers["Retry-After"]
        assert expander.expand(body["id"]) is Progress.DONE
        polled = api.client.get(ok.headers["Location"], headers=api.auth())
        assert (polled.json()["status"], polled.json()["counts"]["queued"]) == ("queued", 1200)

        def refused(source: dict[str, Any], **extra: Any) -> tuple[int, str]:
            response = api.post_job({"kind": "stt", "provider": "local", "source": source, **extra})
            return response.status_code, response.json()["error"]["code"]

        forbidden = (422, "archive_forbidden")
        assert refused({"prefix": f"s3://{s3_store.bucket}/private/"}) == forbidden
        assert refused({"prefix": f"s3://{s3_store.bucket}/callsx/"}) == forbidden
        assert refused({"prefix": "s3://globex-only/x/"}) == forbidden  # globex's, not acme's
        assert refused({"prefix": f"s3://{own}/sb/uploads/"}) == forbidden  # our own storage
        assert refused({"prefix": f"s3://{own}/"}) == forbidden  # it holds our storage
        assert refused({"prefix": "file:///etc/"}) == forbidden
        bad = (422, "invalid_archive")
        assert refused({"prefix": f"s3://{s3_store.bucket}/calls/../x/"}) == bad
        assert refused({"prefix": "ftp://host/x"}) == bad
        assert refused({"prefix": f"s3://{s3_store.bucket}/calls/", "pattern": "*" * 9}) == bad
        assert (
            refused({"prefix": f"s3://{s3_store.bucket}/calls/", "min_bytes": 9, "max_bytes": 3})
            == bad
        )
        assert refused({"prefix": f"s3://{s3_store.bucket}/calls/"}, items=[{"source": "x"}]) == bad
        tts = api.post_job(
            {
                "kind": "tts",
                "provider": "local",
                "source": {"prefix": f"s3://{s3_store.bucket}/calls/"},
            }
        )
        assert tts.json()["error"]["code"] == "invalid_archive"
        mirror = api.post_job(
            {
                "kind": "stt",
                "provider": "local",
                "items": [{"source": "upload://" + "a" * 32 + "/a.wav"}],
                "output": {"layout": "mirror"},
            }
        )
        assert mirror.json()["error"]["code"] == "invalid_archive"
        assert (
            refused({"prefix": f"s3://{s3_store.bucket}/calls/", "min_bytes": -1})[1]
            == "invalid_request"
        )
        prefix = f"s3://{s3_store.bucket}/calls/"
        for hostile in (
            {"prefix": prefix, "modified_since": "0001-01-01T00:00:00+01:00"},
            {"prefix": prefix, "modified_since": "9999-12-31T23:59:59-14:00"},
            {"prefix": prefix, "modified_since": "yesterday"},
            {"prefix": prefix, "pattern": "[", "max_bytes": 2**80},
            {"prefix": prefix + "\u00e9/"},
            {"prefix": "s3://" + "b" * 70 + "/x"},
            {"prefix": prefix + "x" * 2000},
            {"prefix": None},
            {},
        ):
            answer = api.post_job({"kind": "stt", "provider": "local", "source": hostile})
            assert answer.status_code in (202, 422), (hostile, answer.text)
        surrogate = b'{"kind":"stt","provider":"local","source":{"prefix":"s3://b1/\\ud800"}}'
        raw = api.client.post(
            "/v1/jobs",
            content=surrogate,
            headers={**api.auth(), "Content-Type": "application/json"},
        )
        assert raw.status_code == 422 and raw.json()["error"]["message"]
        other = api.client.post(
            "/v1/jobs",
            json={"kind": "stt", "provider": "local", "source": {"prefix": "s3://globex-only/x/"}},
            headers=api.auth(api.other_key),
        )
        assert other.status_code == 202  # the entry is globex's


def test_local_policy_reads_any_folder_but_never_the_store_itself(tmp_path: Path) -> None:
    """Local mode lists any folder of its user's, except the folder of its own objects."""
    store = tmp_path / "objects"
    local = ArchivePolicy(
        parse_archive_buckets(""), storage_location(f"file://{store}"), any_local_dir=True
    )
    local.check(parse_location(f"file://{tmp_path}/recordings/"), None)
    with pytest.raises(ApiError) as refused:
        local.check(parse_location(f"file://{store}/uploads/"), None)
    assert refused.value.code == "archive_forbidden"
