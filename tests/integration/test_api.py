"""The REST API in-process over real SQLite/PostgreSQL, Redis and a local object store.

No worker runs here: these tests cover the front door (validation, auth, tenancy,
idempotency, publishing, uploads, pagination, outputs). The e2e suite covers processing.
"""

from __future__ import annotations

import contextlib
import io
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import redis
import soundfile as sf
from fastapi.testclient import TestClient
from sqlalchemy import select

from jobs.api import create_app
from jobs.api.deps import Resources
from jobs.migrate import upgrade_to_head
from jobs.models import Item, Job
from jobs.settings import Settings
from jobs.tenants import create_api_key
from storage.db import make_engine, make_session_factory
from storage.keys import output_key
from storage.publisher import QUEUE

pytestmark = pytest.mark.integration


@dataclass
class Api:
    client: TestClient
    key: str
    other_key: str
    redis: redis.Redis

    def auth(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.key}"}

    def post_job(self, body: dict[str, Any], **headers: str) -> Any:
        return self.client.post("/v1/jobs", json=body, headers={**self.auth(), **headers})

    def upload(self, name: str, content: bytes) -> Any:
        return self.client.post("/v1/uploads", files={"file": (name, content)}, headers=self.auth())

    @property
    def resources(self) -> Resources:
        res: Resources = self.client.app.state.resources  # type: ignore[attr-defined]
        return res


@contextlib.contextmanager
def running_api(database_url: str, redis_url: str, **overrides: Any) -> Iterator[Api]:
    """An in-process API on `database_url` with two tenants' keys; `overrides` are settings."""
    upgrade_to_head(database_url)
    sessions = make_session_factory(make_engine(database_url))
    limits: dict[str, Any] = {
        "max_items_per_job": 1000,
        "max_request_bytes": 256 * 1024,
        "max_upload_bytes": 1024 * 1024,
    }
    settings = Settings(database_url=database_url, broker_url=redis_url, **{**limits, **overrides})
    client_redis = redis.Redis.from_url(redis_url)
    client_redis.delete(QUEUE)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield Api(
            client,
            create_api_key(sessions, "acme"),
            create_api_key(sessions, "globex"),
            client_redis,
        )
    client_redis.delete(QUEUE)
    client_redis.close()


def tts(n: int = 3, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "tts",
        "provider": "slng",
        "items": [{"text": f"line {i}"} for i in range(n)],
        **extra,
    }


def wav_bytes(seconds: float = 0.5) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, np.zeros(int(16000 * seconds), dtype="int16"), 16000, format="WAV")
    return buffer.getvalue()


def test_create_returns_202_location_and_publishes_every_item(api: Api) -> None:
    """POST /v1/jobs answers 202 with Location, the job body, and one broker message per item."""
    response = api.post_job(tts(5))
    assert response.status_code == 202
    job = response.json()
    assert response.headers["Location"] == f"/v1/jobs/{job['id']}"
    assert job["counts"] == {
        "total": 5,
        "queued": 5,
        "running": 0,
        "succeeded": 0,
        "failed": 0,
        "canceled": 0,
        "skipped": 0,
    }
    assert api.redis.llen(QUEUE) == 5
    got = api.client.get(response.headers["Location"], headers=api.auth())
    assert got.status_code == 200 and got.json()["id"] == job["id"]
    assert got.headers["Retry-After"] == "2"


def test_idempotency_key_replays_and_conflicts(api: Api) -> None:
    """The same key and body return the same job; the same key with another body is 409."""
    first = api.post_job(tts(2), **{"Idempotency-Key": "abc"})
    again = api.post_job(tts(2), **{"Idempotency-Key": "abc"})
    assert again.json()["id"] == first.json()["id"]
    assert api.redis.llen(QUEUE) == 2  # the replay published nothing
    clash = api.post_job(tts(3), **{"Idempotency-Key": "abc"})
    assert clash.status_code == 409
    assert clash.json()["error"]["code"] == "idempotency_key_reused"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (tts(items=[{"text": "   "}]), 422, "empty_text"),
        (tts(items=[]), 422, "no_items"),
        (tts(provider="acme"), 422, "unknown_provider"),
        (tts(model="slng/nope:1"), 422, "unknown_model"),
        (tts(items=[{"id": "../x", "text": "hi"}]), 422, "invalid_item_id"),
        (
            tts(items=[{"id": "a", "text": "hi"}, {"id": "a", "text": "yo"}]),
            422,
            "duplicate_item_id",
        ),
        (tts(options={"sample_rate": -5}), 422, "invalid_request"),
        (tts(options={"speed": 1e9}), 422, "invalid_request"),
        (tts(output={"prefix": "../../etc"}), 422, "invalid_output_prefix"),
        ({"kind": "tts"}, 422, "invalid_request"),
    ],
)
def test_bad_bodies_are_refused_with_a_code_and_nothing_is_queued(
    api: Api, body: dict[str, Any], status: int, code: str
) -> None:
    """Each bad body gets its status, stable code and a sentence; the broker stays empty."""
    response = api.post_job(body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and len(error["message"]) > 10
    assert api.redis.llen(QUEUE) == 0


def test_malformed_json_is_a_400(api: Api) -> None:
    """A body that is not JSON is `malformed_json`, not a server error."""
    response = api.client.post(
        "/v1/jobs", content=b"{not json", headers={**api.auth(), "Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "malformed_json"


@pytest.mark.parametrize(
    "payload",
    [
        b'{"kind": "tts", "provider": "slng", "items": [{"text": "caf\xe9 \xff\xfe"}]}',
        b"\xff\xfe\x00\x01",
    ],
)
def test_invalid_utf8_is_a_400(api: Api, payload: bytes) -> None:
    """A body that is not UTF-8 is refused as malformed and queues nothing."""
    response = api.client.post(
        "/v1/jobs", content=payload, headers={**api.auth(), "Content-Type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "malformed_json"
    assert api.redis.llen(QUEUE) == 0


def test_oversized_body_is_413_before_reading(api: Api) -> None:
    """A body over the request cap is refused with 413 and a code."""
    big = tts(items=[{"text": "x" * 1000} for _ in range(400)])
    response = api.client.post(
        "/v1/jobs",
        content=json.dumps(big).encode(),
        headers={**api.auth(), "Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


@pytest.mark.parametrize("header", [None, "Bearer nope", "Bearer sb_000000000000_wrong", "Basic x"])
def test_missing_or_wrong_key_is_401(api: Api, header: str | None) -> None:
    """Without a valid bearer key every job endpoint answers 401 with a code."""
    headers = {"Authorization": header} if header else {}
    response = api.client.post("/v1/jobs", json=tts(), headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"


def test_another_tenants_job_is_404_everywhere(api: Api) -> None:
    """A job id from another tenant looks exactly like a job that does not exist."""
    job_id = api.post_job(tts()).json()["id"]
    other = api.auth(api.other_key)
    for method, path in [
        ("GET", f"/v1/jobs/{job_id}"),
        ("GET", f"/v1/jobs/{job_id}/items"),
        ("GET", f"/v1/jobs/{job_id}/manifest"),
        ("POST", f"/v1/jobs/{job_id}/cancel"),
        ("POST", f"/v1/jobs/{job_id}/retry"),
    ]:
        response = api.client.request(method, path, headers=other)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "not_found"
    assert api.client.get("/v1/jobs", headers=other).json()["jobs"] == []


def test_list_jobs_paginates_newest_first(api: Api) -> None:
    """Cursor pagination walks every job once, newest first."""
    ids = [api.post_job(tts(1)).json()["id"] for _ in range(5)]
    seen, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = api.client.get("/v1/jobs", params=params, headers=api.auth()).json()
        seen += [j["id"] for j in page["jobs"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == ids[::-1]


def test_items_and_manifest_list_every_item(api: Api) -> None:
    """Items page through by cursor and the manifest streams one JSON line per item."""
    job_id = api.post_job(tts(7)).json()["id"]
    first = api.client.get(
        f"/v1/jobs/{job_id}/items", params={"limit": 4}, headers=api.auth()
    ).json()
    rest = api.client.get(
        f"/v1/jobs/{job_id}/items",
        params={"limit": 4, "cursor": first["next_cursor"]},
        headers=api.auth(),
    ).json()
    assert [i["id"] for i in first["items"] + rest["items"]] == [str(n) for n in range(1, 8)]
    manifest = api.client.get(f"/v1/jobs/{job_id}/manifest", headers=api.auth())
    lines = [json.loads(line) for line in manifest.text.splitlines()]
    assert [line["seq"] for line in lines] == list(range(1, 8))
    assert all(line["status"] == "queued" for line in lines)


def test_cancel_then_retry_nothing(api: Api) -> None:
    """Cancel ends a queued job as canceled; retry on a canceled job is a 409 with a code."""
    job_id = api.post_job(tts(3)).json()["id"]
    canceled = api.client.post(f"/v1/jobs/{job_id}/cancel", headers=api.auth()).json()
    assert canceled["status"] == "canceled" and canceled["counts"]["canceled"] == 3
    retried = api.client.post(f"/v1/jobs/{job_id}/retry", headers=api.auth())
    assert retried.status_code == 409 and retried.json()["error"]["code"] == "job_canceled"


def test_upload_then_stt_job(api: Api) -> None:
    """An uploaded WAV returns a source that an STT job accepts."""
    uploaded = api.client.post(
        "/v1/uploads", files={"file": ("call one.wav", wav_bytes())}, headers=api.auth()
    )
    assert uploaded.status_code == 201, uploaded.text
    source = uploaded.json()["source"]
    assert source.startswith("upload://") and uploaded.json()["content_type"] == "audio/wav"
    job = api.post_job({"kind": "stt", "provider": "slng", "items": [{"source": source}]})
    assert job.status_code == 202, job.text


@pytest.mark.parametrize(
    ("content", "status", "code"),
    [(b"", 400, "empty_audio"), (b"this is plainly not audio at all", 415, "unsupported_audio")],
)
def test_bad_uploads_are_refused(api: Api, content: bytes, status: int, code: str) -> None:
    """Empty and non-audio uploads are refused before anything is stored."""
    response = api.client.post(
        "/v1/uploads", files={"file": ("x.wav", content)}, headers=api.auth()
    )
    assert response.status_code == status and response.json()["error"]["code"] == code


def test_upload_over_the_cap_is_413(api: Api) -> None:
    """An upload larger than the cap is cut off with 413."""
    response = api.client.post(
        "/v1/uploads", files={"file": ("big.wav", wav_bytes(60))}, headers=api.auth()
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


def test_stt_job_cannot_use_a_made_up_source(api: Api) -> None:
    """An STT item naming a path instead of an upload is refused."""
    response = api.post_job(
        {"kind": "stt", "provider": "slng", "items": [{"source": "/etc/passwd"}]}
    )
    assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_source"


def test_healthz_reports_each_dependency(api: Api) -> None:
    """/healthz is 200 with every check ok when DB, broker and storage answer."""
    response = api.client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "ok", "broker": "ok", "storage": "ok"}


def test_unknown_route_uses_the_error_envelope(api: Api) -> None:
    """Even a 404 for an unknown path has the error envelope."""
    response = api.client.get("/v1/nothing-here", headers=api.auth())
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


def test_openapi_lists_the_endpoints(api: Api) -> None:
    """The OpenAPI schema is served and names the job endpoints."""
    paths = api.client.get("/openapi.json").json()["paths"]
    assert {
        "/v1/jobs",
        "/v1/jobs/{job_id}",
        "/v1/jobs/{job_id}/items",
        "/v1/uploads",
        "/v1/jobs/{job_id}/manifest",
        "/healthz",
    } <= set(paths)


# --- strictness, outputs, uploads and health (issue 8) ---------------------------------------


@pytest.mark.parametrize(
    ("body", "where"),
    [
        (tts(colour="red"), "colour"),
        (tts(options={"format": "wav", "fromat": "mp3"}), "options.fromat"),
        (tts(items=[{"text": "hi", "txt": "hi"}]), "items.0.txt"),
    ],
)
def test_unknown_body_fields_are_refused_with_their_path(
    sqlite_api: Api, body: dict[str, Any], where: str
) -> None:
    """A made-up field anywhere in a job body is a 422 that names it and says what to do."""
    response = sqlite_api.post_job(body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert error["message"].startswith(f"{where}: not a field of this request; check its spelling")
    assert sqlite_api.redis.llen(QUEUE) == 0


@pytest.mark.parametrize(
    ("path", "parameter"),
    [
        ("/v1/jobs?status=bogus", "status"),
        ("/v1/jobs?kind=bogus", "kind"),
        ("/v1/jobs/job_0/items?status=bogus", "status"),
    ],
)
def test_unknown_filter_values_are_refused_with_the_parameter_named(
    sqlite_api: Api, path: str, parameter: str
) -> None:
    """A status or kind filter that is no such value is refused, never read as no filter."""
    response = sqlite_api.client.get(path, headers=sqlite_api.auth())
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert error["message"].startswith(f"query.{parameter}: Input should be ")


def store_output(
    api: Api, job_id: str, ext: str, content_type: str, data: bytes
) -> tuple[str, str]:
    """Give the job's first item a stored main output, as a worker would: (item id, key)."""
    res = api.resources
    with res.sessions() as session:
        job = session.get(Job, job_id)
        item = session.scalars(select(Item).where(Item.job_id == job_id).order_by(Item.seq)).first()
        assert job is not None and item is not None
        key = output_key(job.output_prefix, job.tenant_id, job.id, item.seq, item.external_id, ext)
        item.output_key, item.output_content_type, item.output_bytes = key, content_type, len(data)
        external_id = item.external_id
        session.commit()
    res.store.put_bytes(key, data, content_type)
    return external_id, key


def test_an_output_is_served_in_its_own_format_and_never_swapped_for_another(api: Api) -> None:
    """An MP3 item answers ?format=mp3 (or none) with its bytes, and ?format=wav with a 422."""
    job_id = api.post_job(tts(1, options={"format": "mp3"})).json()["id"]
    mp3 = b"ID3\x04\x00\x00" + bytes(300)
    item, _ = store_output(api, job_id, "mp3", "audio/mpeg", mp3)
    url = f"/v1/jobs/{job_id}/items/{item}/output"
    for params in ({"format": "mp3"}, {}):
        served = api.client.get(url, params=params, headers=api.auth())
        assert served.status_code == 200, served.text
        assert (served.content, served.headers["content-type"]) == (mp3, "audio/mpeg")
    refused = api.client.get(url, params={"format": "wav"}, headers=api.auth())
    assert refused.status_code == 422
    error = refused.json()["error"]
    assert error["code"] == "format_unavailable"
    assert "no wav output" in error["message"] and "stored as mp3" in error["message"]
    unknown = api.client.get(url, params={"format": "aiff"}, headers=api.auth())
    assert unknown.status_code == 422
    assert unknown.json()["error"]["message"].startswith("query.format: ")


def test_transcript_renderings_are_served_with_their_own_media_types(sqlite_api: Api) -> None:
    """An STT item's srt and vtt files come back as what they are, not application/octet-stream."""
    source = sqlite_api.upload("call.wav", wav_bytes()).json()["source"]
    body = {"kind": "stt", "provider": "slng", "items": [{"source": source}]}
    job_id = sqlite_api.post_job(body).json()["id"]
    item, main = store_output(sqlite_api, job_id, "json", "application/json", b'{"text": ""}')
    for fmt, media in (("srt", "application/x-subrip"), ("vtt", "text/vtt"), ("txt", "text/plain")):
        sqlite_api.resources.store.put_bytes(f"{main.removesuffix('.json')}.{fmt}", b"hi", media)
        served = sqlite_api.client.get(
            f"/v1/jobs/{job_id}/items/{item}/output",
            params={"format": fmt},
            headers=sqlite_api.auth(),
        )
        assert served.status_code == 200
        assert served.headers["content-type"].split(";")[0] == media


def test_the_manifest_is_sent_as_the_media_type_its_schema_declares(sqlite_api: Api) -> None:
    """GET .../manifest answers with the one media type its OpenAPI entry lists: JSON Lines."""
    job_id = sqlite_api.post_job(tts(2)).json()["id"]
    sent = sqlite_api.client.get(f"/v1/jobs/{job_id}/manifest", headers=sqlite_api.auth())
    operation = sqlite_api.client.get("/openapi.json").json()["paths"]["/v1/jobs/{job_id}/manifest"]
    declared = list(operation["get"]["responses"]["200"]["content"])
    assert declared == [sent.headers["content-type"]] == ["application/x-ndjson"]


def test_the_same_bytes_give_one_source_so_a_resent_stt_job_replays(api: Api) -> None:
    """One recording uploaded twice (under two names) is one source and one object, so the
    same STT job sent again with its Idempotency-Key replays instead of a 409."""
    audio = wav_bytes()
    first, second = (api.upload(name, audio).json()["source"] for name in ("a.wav", "b.wav"))
    assert first == second
    assert api.upload("a.wav", wav_bytes(0.6)).json()["source"] != first
    assert len(list(api.resources.store.list_keys("uploads/"))) == 2
    jobs = [
        api.post_job(
            {"kind": "stt", "provider": "slng", "items": [{"id": "call", "source": source}]},
            **{"Idempotency-Key": "stt-once"},
        )
        for source in (first, second)
    ]
    assert [job.status_code for job in jobs] == [202, 202], jobs[1].text
    assert jobs[0].json()["id"] == jobs[1].json()["id"]
    assert jobs[1].headers["Idempotent-Replayed"] == "true"


def test_healthz_names_a_missing_bucket_and_the_cause(
    sqlite_url: str, redis_url: str, s3_endpoint_url: str
) -> None:
    """With a bucket that does not exist on the real S3, /healthz says which and why (503)."""
    bucket = f"sb-missing-{uuid.uuid4().hex[:12]}"
    with running_api(
        sqlite_url, redis_url, storage_url=f"s3://{bucket}", s3_endpoint_url=s3_endpoint_url
    ) as missing:
        response = missing.client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["checks"]["storage"] == (
        f"error: bucket '{bucket}' does not exist (NoSuchBucket)"
    )
