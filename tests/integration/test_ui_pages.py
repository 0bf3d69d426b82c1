"""The dashboard's pages and live endpoints over the real API app (SQLite and PostgreSQL):
the item table's keyset pages and filters, the JSON the pages poll, outputs streamed
through the API, retry, schedules and providers, and bad filters or cursors as 4xx pages."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from jobs.api.ui import routes_pages
from jobs.models import Job
from jobs.provider_states import ProviderState
from tests.integration.test_api import Api, running_api, wav_bytes
from tests.integration.ui_helpers import csrf_of, login, press, set_items, submit

pytestmark = pytest.mark.integration
ROW = re.compile(r'<tr data-item="([^"]+)">')


@pytest.fixture
def api(database_url: str, redis_url: str, tmp_path: Path) -> Iterator[Api]:
    with running_api(database_url, redis_url, storage_url=f"file://{tmp_path / 'objects'}") as a:
        login(a)
        yield a


@pytest.fixture
def sqlite_api(sqlite_url: str, redis_url: str, tmp_path: Path) -> Iterator[Api]:
    with running_api(sqlite_url, redis_url, storage_url=f"file://{tmp_path / 'objects'}") as a:
        login(a)
        yield a


def rows(html: str) -> list[str]:
    return ROW.findall(html)


def next_link(html: str) -> str | None:
    found = re.search(r'<a rel="next" href="([^"]+)"', html)
    return found.group(1).replace("&amp;", "&") if found else None


def test_the_item_table_pages_by_cursor_and_filters(api: Api) -> None:
    """120 items page as 50, 50, 20 in seq order; status and error-code filters keep only
    matching items, across pages too; the live endpoint answers the same rows."""
    job_id = submit(api, 120)
    set_items(api, job_id, range(1, 121, 2), status="failed", error_code="invalid_input")
    set_items(api, job_id, range(2, 121, 4), status="failed", error_code="provider_timeout")
    seen: list[str] = []
    url: str | None = f"/ui/jobs/{job_id}"
    sizes = []
    while url:
        page = api.client.get(url)
        assert page.status_code == 200
        sizes.append(len(rows(page.text)))
        seen += rows(page.text)
        url = next_link(page.text)
    assert sizes == [50, 50, 20]
    assert seen == [f"line-{n:03d}" for n in range(1, 121)]
    timeouts = api.client.get(f"/ui/jobs/{job_id}?status=failed&error_code=provider_timeout")
    assert rows(timeouts.text) == [f"line-{n:03d}" for n in range(2, 121, 4)]
    failed = api.client.get(f"/ui/jobs/{job_id}?status=failed")
    assert len(rows(failed.text)) == 50 and next_link(failed.text)
    queued = api.client.get(f"/ui/api/jobs/{job_id}/items", params={"status": "queued"})
    assert [r["id"] for r in queued.json()["items"]] == [f"line-{n:03d}" for n in range(4, 121, 4)]
    assert queued.json()["next_cursor"] is None


def test_live_endpoints_send_counts_progress_and_the_jobs_of_a_page(api: Api) -> None:
    """The job poll has counts, percent, status and usage; the list poll has each job."""
    job_id = submit(api, 4)
    with api.resources.sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None
        job.queued, job.succeeded, job.failed, job.status = 1, 2, 1, "running"  # type: ignore[assignment]
        job.started_at = datetime(2026, 1, 1, tzinfo=UTC)
        session.commit()
    body = api.client.get(f"/ui/api/jobs/{job_id}").json()
    assert body["status"] == "running" and body["terminal"] is False
    assert body["counts"]["succeeded"] == 2 and body["counts"]["total"] == 4
    assert body["percent"] == 75.0 and body["rate"] > 0 and body["eta_s"] is not None
    assert body["usage"]["characters"] == 0 and "estimated" in body["cost"]
    listed = api.client.get("/ui/api/jobs").json()["jobs"]
    assert [j["id"] for j in listed] == [job_id] and listed[0]["percent"] == 75.0
    page = api.client.get("/ui/")
    assert 'value="75.0"' in page.text and job_id in page.text


@pytest.mark.parametrize(
    "path",
    [
        "/ui/?status=bogus",
        "/ui/?kind=video",
        "/ui/?cursor=not-a-cursor",
        "/ui/?cursor=" + base64.urlsafe_b64encode(json.dumps([1, "x"]).encode()).decode(),
        "/ui/?cursor=" + "A" * 5000,
        "/ui/schedules?cursor=%%%",
        "/ui/jobs/{job}?status=done",
        "/ui/jobs/{job}?error_code=not_a_code",
        "/ui/jobs/{job}?cursor=WzEsMl0=",
        "/ui/jobs/{job}?cursor=" + base64.urlsafe_b64encode(b"[true]").decode(),
        "/ui/api/jobs?status=bogus",
        "/ui/api/jobs/{job}/items?cursor=zzz",
        "/ui/api/jobs/{job}/items?error_code=" + "x" * 3000,
    ],
)
def test_a_bad_filter_or_cursor_is_a_400_that_says_so(sqlite_api: Api, path: str) -> None:
    """Filter values that are no such value and cursors this dashboard did not issue are a
    400 naming the problem (a page, or the error envelope for live endpoints), never a 500."""
    job_id = submit(sqlite_api, 1)
    response = sqlite_api.client.get(path.replace("{job}", job_id))
    assert response.status_code == 400, response.text
    if path.startswith("/ui/api/"):
        assert response.json()["error"]["code"] in {"invalid_request", "invalid_cursor"}
    else:
        assert "Bad request" in response.text
        assert (
            "is not one of" in response.text
            or "cursor" in response.text.lower()
            or ("not an error code" in response.text)
        )


@pytest.mark.parametrize("path", ["/ui/jobs/job_nope", "/ui/jobs/" + "x" * 500, "/ui/schedules/s"])
def test_an_unknown_job_or_schedule_is_a_404_page(sqlite_api: Api, path: str) -> None:
    """An id that names nothing of this tenant is a 404 page, not an error body or a 500."""
    response = sqlite_api.client.get(path)
    assert response.status_code == 404 and "Not found" in response.text
    assert response.headers["content-type"].startswith("text/html")


def test_a_tts_output_streams_through_the_api_and_the_page_plays_it(sqlite_api: Api) -> None:
    """A succeeded TTS item's row has an <audio> whose source is a /ui/ route that streams
    the stored bytes with their media type."""
    job_id = submit(sqlite_api, 2)
    audio = wav_bytes()
    key = f"out/{job_id}/000001-line-001.wav"
    sqlite_api.resources.store.put_bytes(key, audio, "audio/wav")
    set_items(
        sqlite_api, job_id, [1], status="succeeded", output_key=key, output_content_type="audio/wav"
    )
    page = sqlite_api.client.get(f"/ui/jobs/{job_id}")
    src = f"/ui/jobs/{job_id}/items/line-001/output"
    assert f'<audio controls preload="none" src="{src}">' in page.text
    assert page.text.count("<audio") == 1  # the queued item has nothing to play
    served = sqlite_api.client.get(src)
    assert served.status_code == 200 and served.content == audio
    assert served.headers["content-type"] == "audio/wav"
    missing = sqlite_api.client.get(f"/ui/jobs/{job_id}/items/line-002/output")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_an_stt_item_shows_its_transcript_text(sqlite_api: Api) -> None:
    """A succeeded STT item's row links its transcript, served as the JSON's text."""
    upload = sqlite_api.upload("a.wav", wav_bytes())
    job_id = submit(sqlite_api, 1, sources=[upload.json()["source"]])
    key = f"out/{job_id}/000001-rec-001.json"
    body = {"text": "hello <b>world</b>", "segments": []}
    sqlite_api.resources.store.put_bytes(key, json.dumps(body).encode(), "application/json")
    set_items(sqlite_api, job_id, [1], status="succeeded", output_key=key)
    page = sqlite_api.client.get(f"/ui/jobs/{job_id}")
    url = f"/ui/jobs/{job_id}/items/rec-001/transcript"
    assert f'data-transcript="{url}"' in page.text
    text = sqlite_api.client.get(url)
    assert text.status_code == 200 and text.text == "hello <b>world</b>"
    assert text.headers["content-type"].startswith("text/plain")


def test_retry_failed_requeues_only_the_failed_items(api: Api) -> None:
    """The retry button re-queues the job's failed items and leaves the others alone."""
    job_id = submit(api, 3)
    set_items(api, job_id, [2], status="failed", error_code="invalid_input")
    with api.resources.sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None
        job.queued, job.failed = 2, 1
        session.commit()
    page = api.client.get(f"/ui/jobs/{job_id}")
    assert 'id="retry"' in page.text
    response = press(api, f"/ui/jobs/{job_id}/retry", csrf_of(api, f"/ui/jobs/{job_id}"))
    assert response.status_code == 303
    items = api.client.get(f"/ui/api/jobs/{job_id}/items").json()["items"]
    assert [i["status"] for i in items] == ["queued", "queued", "queued"]


def test_redelivering_an_unknown_delivery_is_a_404_page(sqlite_api: Api) -> None:
    """Redeliver names a delivery of the job; one that is not there is a 404, not a 500."""
    job_id = submit(sqlite_api, 1)
    csrf = csrf_of(sqlite_api)
    response = press(sqlite_api, f"/ui/jobs/{job_id}/webhooks/whd_nope/redeliver", csrf)
    assert response.status_code == 404 and "webhook delivery" in response.text


def test_schedules_show_next_fires_and_a_run_now_adds_a_run(api: Api) -> None:
    """The schedules list names the schedule; its page shows five next fire times, and the
    Run now button fires it, after which its run (and job) is listed."""
    job = {"kind": "tts", "provider": "slng", "items": [{"text": "Night {fire_date}."}]}
    body = {"name": "nightly", "cron": "0 2 * * *", "timezone": "Europe/Berlin", "job": job}
    created = api.client.post("/v1/schedules", json=body, headers=api.auth())
    assert created.status_code == 201, created.text
    schedule_id = created.json()["id"]
    listed = api.client.get("/ui/schedules")
    assert f'href="/ui/schedules/{schedule_id}">nightly</a>' in listed.text
    page = api.client.get(f"/ui/schedules/{schedule_id}")
    assert page.text.count("<li>") == 5 and "It has not run yet" in page.text
    ran = press(api, f"/ui/schedules/{schedule_id}/run", csrf_of(api, "/ui/schedules"))
    assert ran.status_code == 303
    page = api.client.get(f"/ui/schedules/{schedule_id}")
    assert "manual" in page.text and 'href="/ui/jobs/job_' in page.text


def test_the_providers_page_renders_whatever_state_is_read(sqlite_api: Api) -> None:
    """With the real reader the page renders (rows or the empty state), never a 500."""
    page = sqlite_api.client.get("/ui/providers")
    assert page.status_code == 200
    assert 'id="providers"' in page.text or 'id="no-providers"' in page.text


def test_provider_rows_show_throttle_circuit_and_error(
    sqlite_api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A row shows its throttle (a kind's own, e.g. smallest-stt), effective limits, an
    open circuit with its end, a half-open one being probed, and its `error`; the live
    endpoint sends the same rows."""
    until = datetime(2026, 12, 2, 3, 0, tzinfo=UTC)
    common = {"configured": True, "max_rps": None, "effective_rps": None}
    states = [
        ProviderState(
            **{**common, "max_rps": 50.0, "effective_rps": 25.0},
            provider="slng", credential="0123456789abcdef", max_concurrency=16,
            effective_concurrency=8, in_flight=3, circuit="open", circuit_open_until=until,
        ),
        ProviderState(
            **common, provider="openai", credential="fedcba9876543210", max_concurrency=8,
            effective_concurrency=8, in_flight=0, circuit="unknown", circuit_open_until=None,
            error="redis unavailable",
        ),
        ProviderState(
            **common, provider="smallest", credential="00000000000000ff", max_concurrency=4,
            effective_concurrency=2, in_flight=1, circuit="half-open", circuit_open_until=until,
            limits_name="smallest-stt", kinds=("stt",), probing=True,
        ),
    ]  # fmt: skip

    def read(_: Any) -> list[ProviderState]:
        return states

    monkeypatch.setattr(routes_pages, "read_provider_states", read)
    monkeypatch.setattr("jobs.api.ui.routes_live.read_provider_states", read)
    page = sqlite_api.client.get("/ui/providers").text
    assert "8 / 16" in page and "25/s / 50/s" in page and "no limit / no limit" in page
    assert "open until 2026-12-02 03:00:00 UTC" in page and "redis unavailable" in page
    assert 'data-provider="smallest-stt:00000000000000ff"' in page
    assert "half-open (probing)" in page and "circuit-unknown" in page
    live = sqlite_api.client.get("/ui/api/providers").json()
    assert live["providers"][0]["circuit_open_until"] == until.isoformat()
    assert live["providers"][1]["error"] == "redis unavailable"
    assert live["providers"][2]["kinds"] == ["stt"]
