"""Archive outputs in another bucket (`output{url, layout: mirror}`) on real SeaweedFS and
PostgreSQL/SQLite: mirrored keys in the destination and nothing in the service's store, a
retry writing the same key, the API's views, presigned URLs, streaming, manifest and skipped
pointers on those outputs, and the refusals of destinations the deployment does not allow."""

from __future__ import annotations

import dataclasses
import json
import threading
import uuid
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from jobs import repository as repo
from jobs.archive_ledger import ArchiveLedger
from jobs.archives import ArchivePolicy, parse_archive_buckets, storage_location
from jobs.ledger import ItemLedger
from jobs.status import ItemStatus, JobStatus
from storage.keys import manifest_key
from storage.s3 import S3ObjectStore
from tests.conftest import _remove_bucket
from tests.integration.helpers import migrated_ledger, published
from tests.integration.test_api import Api, running_api
from tests.integration.test_archive_expansion import (
    expander_on,
    fill,
    item_rows,
    job_row,
    submit_archive,
)
from tests.integration.test_pipeline import runtime
from workers.archive import ArchiveStores, remove_mirrored
from workers.expand import Expander, Progress
from workers.pipeline import Outcome, run_item
from workers.providers.base import Transcript, Word
from workers.providers.errors import InvalidInput
from workers.runtime import Runtime

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

pytestmark = pytest.mark.integration
KEYS = ["calls/2026/01/a.wav", "calls/2026/02/b.wav", "calls/2026/02/c.wav"]
GONE = f"gone-{uuid.uuid4().hex[:12]}"  # allowed by a write: entry, but never created


class NumberedStt:
    """Transcribes call n as "call n"; fails the first call for file names in `fail_once`."""

    name = "local"

    def __init__(self, fail_once: frozenset[str] = frozenset()) -> None:
        self.calls, self.fail_once = 0, set(fail_once)
        self._lock = threading.Lock()

    def transcribe(self, audio: Any, *, model: str, options: Mapping[str, Any]) -> Transcript:
        with self._lock:
            self.calls += 1
            text = f"call {self.calls}"
            if audio.filename in self.fail_once:
                self.fail_once.discard(audio.filename)
                raise InvalidInput("refused once")
        return Transcript(text, "en", 0.001, "local", model, words=[Word("call", 0.0, 0.001)])

    def synthesize(self, text: str, **_: Any) -> Any:
        raise NotImplementedError


def fresh_bucket(client: S3Client, prefix: str = "") -> Iterator[S3ObjectStore]:
    store = S3ObjectStore(client, f"t-{uuid.uuid4().hex[:16]}", prefix)
    store.ensure_exists()
    yield store
    _remove_bucket(client, store.bucket)


@pytest.fixture
def destination(s3_client: S3Client) -> Iterator[S3ObjectStore]:
    """Another bucket the deployment may write transcripts to."""
    yield from fresh_bucket(s3_client)


@pytest.fixture
def service(s3_client: S3Client) -> Iterator[S3ObjectStore]:
    """The service's own storage: a bucket of its own, under the prefix `sb`."""
    yield from fresh_bucket(s3_client, "sb")


def all_keys(store: S3ObjectStore) -> set[str]:
    pages = store.client.get_paginator("list_objects_v2").paginate(Bucket=store.bucket)
    return {o["Key"] for page in pages for o in page.get("Contents", [])}


def run_published(api: ItemLedger, rt: Runtime, start: int = 0) -> list[Outcome]:
    return [run_item(rt, item_id) for item_id in published(api).ids[start:]]


def test_outputs_land_in_the_destination_at_mirrored_keys_and_a_retry_overwrites_them(
    database_url: str, s3_store: S3ObjectStore, destination: S3ObjectStore, service: S3ObjectStore
) -> None:
    """Each transcript and rendering is written at `{url}{path below the source prefix}.{ext}`
    in the destination bucket and recorded as that URL; the service's bucket holds only the
    manifest. A failed item retried writes the same key (a stale object there is replaced)."""
    fill(s3_store, KEYS)
    api = migrated_ledger(database_url)
    stt = NumberedStt(fail_once=frozenset({"b.wav"}))
    rt = dataclasses.replace(runtime(database_url, service, stt), archives=ArchiveStores(service))
    policy = ArchivePolicy(
        parse_archive_buckets(f"s3://{s3_store.bucket}, write:s3://{destination.bucket}/out"),
        storage_location(f"s3://{service.bucket}/sb"),
    )
    url = f"s3://{destination.bucket}/out/2026"  # no trailing slash: a folder all the same
    job = submit_archive(
        api,
        {"prefix": f"s3://{s3_store.bucket}/calls/2026/"},
        policy,
        output={"url": url},
        options={"transcript_formats": ["json", "srt"]},
    )
    assert expander_on(api, s3_store, service).expand(job.id) is Progress.DONE
    assert sorted(run_published(api, rt)) == sorted([Outcome.SUCCEEDED] * 2 + [Outcome.FAILED])
    row = job_row(api, job.id)
    assert (row.status, row.output_layout) == (JobStatus.COMPLETED_WITH_ERRORS, "mirror")
    mirrored = {"out/2026/01/a.wav", "out/2026/02/c.wav"}
    assert all_keys(destination) == {f"{k}.{ext}" for k in mirrored for ext in ("json", "srt")}
    by_name = {(i.source or "").rsplit("/", 1)[-1]: i for i in item_rows(api, job.id)}
    dest = f"s3://{destination.bucket}"
    assert by_name["a.wav"].output_key == f"{dest}/out/2026/01/a.wav.json"
    assert all_keys(service) == {f"sb/{manifest_key('', row.tenant_id, job.id)}"}

    stale = "out/2026/02/b.wav.json"  # as if a crashed earlier run had left it
    destination.put_bytes(stale, b'{"stale": true}', "application/json")
    start = len(published(api).ids)
    api.retry_failed(job.id)
    assert run_published(api, rt, start) == [Outcome.SUCCEEDED]
    retried = next(i for i in item_rows(api, job.id) if (i.source or "").endswith("b.wav"))
    assert retried.output_key == f"{dest}/{stale}"
    assert json.loads(destination.get_bytes(stale))["text"].startswith("call ")
    assert len(all_keys(destination)) == 6
    assert job_row(api, job.id).status == JobStatus.SUCCEEDED


def test_a_canceled_mirrored_item_leaves_none_of_its_files(
    database_url: str, s3_store: S3ObjectStore, destination: S3ObjectStore, service: S3ObjectStore
) -> None:
    """`remove_mirrored` deletes an item's JSON and renderings from the destination bucket
    (they are not below the job's folder, where a canceled item's cleanup looks)."""
    fill(s3_store, KEYS[:1])
    api = migrated_ledger(database_url)
    rt = dataclasses.replace(runtime(database_url, service), archives=ArchiveStores(service))
    policy = ArchivePolicy(
        parse_archive_buckets(f"s3://{s3_store.bucket}, write:s3://{destination.bucket}"),
        storage_location(f"s3://{service.bucket}/sb"),
    )
    output = {"url": f"s3://{destination.bucket}/t/", "layout": "mirror"}
    job = submit_archive(
        api,
        {"prefix": f"s3://{s3_store.bucket}/calls/"},
        policy,
        output=output,
        options={"transcript_formats": ["json", "txt", "vtt"]},
    )
    assert expander_on(api, s3_store, service).expand(job.id) is Progress.DONE
    claimed = rt.ledger.claim(published(api).ids[0], lease_s=60)
    assert claimed is not None
    for ext in ("json", "txt", "vtt"):
        destination.put_bytes(f"t/2026/01/a.wav.{ext}", b"x", "text/plain")
    destination.put_bytes("t/2026/01/other.wav.json", b"x", "application/json")
    assert remove_mirrored(rt.archives, rt.ledger.db.sessions, rt.store, claimed) == 3
    assert all_keys(destination) == {"t/2026/01/other.wav.json"}


@pytest.fixture
def api_on_s3(
    database_url: str,
    redis_url: str,
    s3_endpoint_url: str,
    s3_store: S3ObjectStore,
    destination: S3ObjectStore,
    service: S3ObjectStore,
) -> Iterator[Api]:
    settings = {
        "storage_url": f"s3://{service.bucket}/sb",
        "s3_endpoint_url": s3_endpoint_url,
        "archive_buckets": f"{s3_store.bucket}, acme=write:s3://{destination.bucket}/acme, "
        f"write:s3://{service.bucket}, write:s3://{GONE}",  # the service's storage stays refused
    }
    with running_api(database_url, redis_url, **settings) as api:
        yield api


def expand_and_run(api: Api, rt: Runtime, archive: S3ObjectStore, job_id: str) -> None:
    """List the job's archive as a worker would, then run each queued item it made."""
    res = api.resources
    ledger = ArchiveLedger(res.ledger.db, res.ledger.publisher)
    assert Expander(ledger, ArchiveStores(archive), res.store).expand(job_id) is Progress.DONE
    with res.sessions() as session:
        queued = repo.item_ids(session, job_id, status=ItemStatus.QUEUED)
    for item_id in queued:
        assert run_item(rt, item_id) is Outcome.SUCCEEDED


def test_the_api_serves_outputs_from_the_destination_and_skips_point_at_them(
    database_url: str,
    api_on_s3: Api,
    s3_store: S3ObjectStore,
    destination: S3ObjectStore,
    service: S3ObjectStore,
) -> None:
    """The job shows `output.url`; items' keys are the destination URLs, their presigned
    URLs and the output route return the stored bytes, and the manifest names them. A re-run
    (without output.url) is all `skipped`, pointing at the same destination objects."""
    api = api_on_s3
    fill(s3_store, KEYS)
    rt = dataclasses.replace(
        runtime(database_url, service, NumberedStt()), archives=ArchiveStores(service)
    )
    url = f"s3://{destination.bucket}/acme/calls/"
    body = {
        "kind": "stt",
        "provider": "local",
        "options": {"transcript_formats": ["json", "vtt"]},
        "source": {"prefix": f"s3://{s3_store.bucket}/calls/"},
        "output": {"url": url, "layout": "mirror"},
    }
    created = api.post_job(body)
    assert created.status_code == 202, created.text
    job = created.json()
    assert job["output"]["url"] == url and "output_url" not in job["options"]
    expand_and_run(api, rt, s3_store, job["id"])

    items = api.client.get(f"/v1/jobs/{job['id']}/items", headers=api.auth()).json()["items"]
    first = next(i for i in items if i["source"].endswith("a.wav"))
    output = first["output"]
    assert output["key"] == f"{url}2026/01/a.wav.json"
    stored = destination.get_bytes("acme/calls/2026/01/a.wav.json")
    assert httpx.get(output["url"]).content == stored
    vtt = next(f for f in output["files"] if f["format"] == "vtt")
    assert httpx.get(vtt["url"]).content == destination.get_bytes("acme/calls/2026/01/a.wav.vtt")
    route = f"/v1/jobs/{job['id']}/items/{first['id']}/output"
    streamed = api.client.get(route, headers=api.auth())
    assert (streamed.status_code, streamed.content) == (200, stored)
    assert api.client.get(route + "?format=vtt", headers=api.auth()).text.startswith("WEBVTT")
    manifest = api.client.get(f"/v1/jobs/{job['id']}/manifest", headers=api.auth())
    keys = {json.loads(line)["output"]["key"] for line in manifest.text.splitlines()}
    assert keys == {f"{url}{k.removeprefix('calls/')}.json" for k in KEYS}
    assert not any(k.endswith((".json", ".vtt")) and "/calls/" in k for k in all_keys(service))

    again = api.post_job({**body, "output": {}}).json()
    expand_and_run(api, rt, s3_store, again["id"])
    skipped = api.client.get(f"/v1/jobs/{again['id']}/items", headers=api.auth()).json()["items"]
    assert {i["status"] for i in skipped} == {ItemStatus.SKIPPED.value}
    pointer = next(i for i in skipped if i["source"].endswith("a.wav"))["output"]
    assert pointer["key"] == output["key"] and httpx.get(pointer["url"]).content == stored


def test_a_destination_the_deployment_does_not_allow_is_a_422_naming_the_setting(
    api_on_s3: Api, s3_store: S3ObjectStore, destination: S3ObjectStore, service: S3ObjectStore
) -> None:
    """Only a `write:` entry for this tenant lets output.url write: a read entry, another
    place, another tenant's entry and the service's own storage are `output_forbidden`
    naming SPEECHBATCH_ARCHIVE_BUCKETS; an allowed bucket that does not exist is
    `output_unavailable`; malformed or misplaced ones are `invalid_archive`; and a write
    entry is never listed as an archive."""
    api = api_on_s3
    source = {"prefix": f"s3://{s3_store.bucket}/calls/"}

    def refused(output: dict[str, Any], key: str | None = None, **extra: Any) -> tuple[int, str]:
        body = {"kind": "stt", "provider": "local", "source": source, "output": output, **extra}
        response = api.client.post("/v1/jobs", json=body, headers=api.auth(key))
        return response.status_code, response.json()["error"]["code"]

    forbidden = (422, "output_forbidden")
    assert refused({"url": f"s3://{s3_store.bucket}/out/"}) == forbidden  # read-only entry
    assert refused({"url": f"s3://{destination.bucket}/other/"}) == forbidden
    assert refused({"url": f"s3://{destination.bucket}/acme/x/"}, api.other_key) == forbidden
    own = api.post_job(
        {
            "kind": "stt",
            "provider": "local",
            "source": source,
            "output": {"url": f"s3://{service.bucket}/sb/mirror/"},
        }
    )
    assert (own.status_code, own.json()["error"]["code"]) == forbidden
    assert "own storage" in own.json()["error"]["message"]
    beside = api.post_job(  # the same bucket, outside the service's prefix: allowed
        {
            "kind": "stt",
            "provider": "local",
            "source": source,
            "output": {"url": f"s3://{service.bucket}/elsewhere/"},
        }
    )
    assert beside.status_code == 202, beside.text
    answer = api.post_job(
        {
            "kind": "stt",
            "provider": "local",
            "source": source,
            "output": {"url": "s3://nowhere-allowed/x/"},
        }
    )
    assert "SPEECHBATCH_ARCHIVE_BUCKETS" in answer.json()["error"]["message"]
    dry = api.client.post(
        "/v1/jobs?dry_run=true",
        json={
            "kind": "stt",
            "provider": "local",
            "source": source,
            "output": {"url": "s3://no-such/x/"},
        },
        headers=api.auth(),
    )
    assert (dry.status_code, dry.json()["error"]["code"]) == forbidden
    assert refused({"url": f"s3://{GONE}/x/"}) == (422, "output_unavailable")
    bad = (422, "invalid_archive")
    assert refused({"url": "ftp://host/x/"}) == bad
    assert refused({"url": f"s3://{destination.bucket}/acme/../x/"}) == bad
    assert refused({"url": f"s3://{destination.bucket}/acme/", "layout": "job"}) == bad
    no_source = api.post_job(
        {
            "kind": "stt",
            "provider": "local",
            "items": [{"source": "upload://" + "a" * 32 + "/a.wav"}],
            "output": {"url": f"s3://{destination.bucket}/acme/"},
        }
    )
    assert no_source.json()["error"]["code"] == "invalid_archive"
    listed = api.post_job(
        {"kind": "stt", "provider": "local", "source": {"prefix": f"s3://{destination.bucket}/"}}
    )
    assert listed.json()["error"]["code"] == "archive_forbidden"
