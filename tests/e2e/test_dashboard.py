"""The dashboard in a real browser (Debian's Chromium driven by Playwright) against the real
stack: emulator, API, worker and beat processes on PostgreSQL, Redis and SeaweedFS.

It logs in through the form, watches a job submitted through the REST API reach 100 %
without a reload, plays a TTS output, cancels a running job and retries failed items from
their pages, sees the webhook log, and writes a screenshot of each page to out/dashboard/.
Every request any page makes is recorded: all of them must go to the API itself.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.e2e.stack import Stack, running_postgres_stack
from tests.integration.test_webhook_delivery import Receiver

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
SHOTS = Path(__file__).resolve().parents[2] / "out" / "dashboard"
TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stack(
    redis_url: str,
    s3_endpoint_url: str,
    s3_client: Any,
    postgres_admin_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    """One stack for the module, on PostgreSQL, with loopback allowed for the webhook."""
    workdir = tmp_path_factory.mktemp("dashboard")
    allow = {"SPEECHBATCH_ALLOW_PRIVATE_NETWORKS": "127.0.0.1/32"}
    with running_postgres_stack(
        postgres_admin_url, redis_url, s3_endpoint_url, s3_client, workdir, extra_env=allow
    ) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if shutil.which("chromium") is None and not Path(CHROMIUM).exists():
        pytest.fail(
            "Chromium is not installed: `make test-deps` installs it (Debian's chromium "
            "package); the dashboard's browser tests need it and never download one."
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def requested() -> list[str]:
    """Every URL any dashboard page asked for, over the whole module."""
    return []


@pytest.fixture(scope="module")
def page(browser: Any, stack: Stack, requested: list[str]) -> Iterator[Any]:
    """A browser tab logged in through the form (the test of the form is below)."""
    # The pages' CSP (`default-src 'self'`) would block a foreign load before it is a
    # request; bypassing it here lets `requested` see everything the pages ask for.
    context = browser.new_context(viewport={"width": 1400, "height": 900}, bypass_csp=True)
    context.on("request", lambda request: requested.append(request.url))
    tab = context.new_page()
    tab.set_default_timeout(TIMEOUT_MS)
    SHOTS.mkdir(parents=True, exist_ok=True)
    yield tab
    context.close()


def submit(stack: Stack, texts: list[str], **extra: Any) -> str:
    body = {
        "kind": "tts",
        "provider": "slng",
        "model": "slng/deepgram/aura:2-en",
        "voice": "aura-2-thalia-en",
        "options": {"format": "wav"},
        "items": [{"id": f"line-{n:03d}", "text": t} for n, t in enumerate(texts, 1)],
        **extra,
    }
    with stack.client() as client:
        response = client.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def wait_for_status(page: Any, selector: str, wanted: set[str]) -> str:
    """The text of `selector` once the page's own polling shows one of `wanted`."""
    page.wait_for_function(
        "([sel, wanted]) => wanted.includes(document.querySelector(sel)?.textContent.trim())",
        arg=[selector, sorted(wanted)],
    )
    return str(page.text_content(selector)).strip()


def test_login_form_refuses_a_bad_key_then_logs_in(page: Any, stack: Stack) -> None:
    """A page without a session lands on the login form; a wrong key says so; the right
    key opens the jobs list."""
    page.goto(f"{stack.api_url}/ui/")
    assert urlsplit(page.url).path == "/ui/login"
    page.fill("#key", "sb_000000000000_wrong")
    page.click("button[type=submit]")
    assert "That key is not valid" in page.text_content("#login-error")
    shot(page, "login")
    page.fill("#key", stack.api_key)
    page.click("button[type=submit]")
    page.wait_for_url(f"{stack.api_url}/ui/")
    assert page.text_content("h1") == "Jobs"


def test_progress_reaches_100_live_and_an_output_plays(
    page: Any, stack: Stack, receiver: Receiver
) -> None:
    """A job submitted through the REST API appears on the open jobs list, and its page
    fills its progress bar to 100 % from its own polling (neither page reloads); then an
    item's <audio> loads through the API and plays, the webhook log shows the delivery, and
    Redeliver sends it again."""
    page.goto(f"{stack.api_url}/ui/")
    page.evaluate("window.__listNotReloaded = true")
    texts = [f"Dashboard line {n}. [[latency:700]]" for n in range(1, 25)]
    job_id = submit(stack, texts, webhook_url=receiver.url)
    page.wait_for_selector(f'tr[data-job="{job_id}"] progress')  # the list's own polling
    assert page.evaluate("window.__listNotReloaded === true"), "the jobs list was reloaded"
    shot(page, "jobs")
    page.goto(f"{stack.api_url}/ui/jobs/{job_id}")
    first = float(page.get_attribute('progress[data-field="bar"]', "value") or 0)
    assert first < 100, "the job finished before its page opened; the test saw no progress"
    page.evaluate("window.__notReloaded = true")
    page.wait_for_function(
        "() => document.querySelector('progress[data-field=\"bar\"]').value >= 100",
        timeout=60_000,
    )
    assert page.evaluate("window.__notReloaded === true"), "the page was reloaded"
    assert wait_for_status(page, "#job [data-field=status]", {"succeeded"}) == "succeeded"
    assert page.text_content('[data-count="succeeded"]') == "24"
    page.wait_for_selector('tr[data-item="line-001"] audio')
    played = page.evaluate(
        """async () => {
            const audio = document.querySelector('tr[data-item="line-001"] audio');
            audio.muted = true;  // headless has no speaker; playing is what is checked
            await audio.play();  // resolves once the bytes load and playback starts
            await new Promise((ok) => setTimeout(ok, 300));
            return {duration: audio.duration, error: audio.error, time: audio.currentTime,
                    src: audio.currentSrc};
        }"""
    )
    assert played["error"] is None and played["duration"] > 0 and played["time"] > 0
    assert urlsplit(played["src"]).path == f"/ui/jobs/{job_id}/items/line-001/output"
    deadline = time.monotonic() + 20
    while not receiver.seen and time.monotonic() < deadline:
        time.sleep(0.2)
    assert receiver.seen, "beat delivered no webhook"
    page.reload()
    page.wait_for_selector("#deliveries tr[data-delivery] .status-delivered")
    sent = len(receiver.seen)
    page.click("#deliveries button[type=submit]")
    page.wait_for_url(f"{stack.api_url}/ui/jobs/{job_id}")
    deadline = time.monotonic() + 20
    while len(receiver.seen) == sent and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(receiver.seen) == sent + 1, "Redeliver sent nothing"
    assert receiver.seen[-1].headers["webhook-id"] == receiver.seen[0].headers["webhook-id"]
    shot(page, "job")


def test_cancel_a_running_job_from_its_page(page: Any, stack: Stack) -> None:
    """The Cancel button stops a running job; the page then shows it canceled."""
    job_id = submit(stack, [f"Slow line {n}. [[latency:2000]]" for n in range(1, 41)])
    page.goto(f"{stack.api_url}/ui/jobs/{job_id}")
    wait_for_status(page, "#job [data-field=status]", {"running"})
    page.click("#cancel")
    page.wait_for_url(f"{stack.api_url}/ui/jobs/{job_id}")
    wait_for_status(page, "#job [data-field=status]", {"canceled"})
    assert int(page.text_content('[data-count="canceled"]') or 0) > 0
    assert page.is_hidden("#cancel")
    job = stack.wait_for_job(job_id, timeout=30)
    assert job["status"] == "canceled" and job["counts"]["succeeded"] < 40


def test_retry_failed_items_from_the_job_page(page: Any, stack: Stack) -> None:
    """On a job with a failed item, Retry re-runs only that item: the button redirects back
    to the job page, which shows the job finished again with that item failed again, and
    the provider refused the rejected line twice, while the others ran once."""
    with stack.emulator() as emulator:
        emulator.delete("/_emulator/requests")
    texts = ["Fine line one.", "This line is rejected [[status:400]]", "Fine line three."]
    job_id = submit(stack, texts)
    assert stack.wait_for_job(job_id, timeout=30)["status"] == "completed_with_errors"
    page.goto(f"{stack.api_url}/ui/jobs/{job_id}?status=failed")
    error = page.text_content('tr[data-item="line-002"] [data-field=error]') or ""
    assert error.strip().startswith("invalid_input")
    page.click("#retry")
    page.wait_for_url(f"{stack.api_url}/ui/jobs/{job_id}")
    wait_for_status(page, "#job [data-field=status]", {"completed_with_errors"})
    assert page.text_content('tr[data-item="line-002"] [data-field=status]') == "failed"
    with stack.emulator() as emulator:
        calls = emulator.get("/_emulator/requests").json()
    # Only this test's rejected line is answered 400 (other tests' calls may still land).
    assert [c["status"] for c in calls].count(400) == 2
    attempts = {i["id"]: i["attempts"] for i in stack.items(job_id)}
    assert attempts["line-001"] == attempts["line-003"] == 1  # not run again


def test_schedules_and_providers_pages(page: Any, stack: Stack) -> None:
    """The schedules list, one schedule with its next fire times, and the providers page
    render from the live stack."""
    job = {"kind": "tts", "provider": "slng", "items": [{"text": "Good night, {fire_date}."}]}
    body = {"name": "nightly", "cron": "0 2 * * *", "timezone": "Europe/Berlin", "job": job}
    with stack.client() as client:
        created = client.post("/v1/schedules", json=body)
    assert created.status_code == 201, created.text
    page.goto(f"{stack.api_url}/ui/schedules")
    shot(page, "schedules")
    page.click("text=nightly")
    assert page.locator("ol.fires li").count() == 5
    shot(page, "schedule")
    page.goto(f"{stack.api_url}/ui/providers")
    assert page.text_content("h1") == "Providers"
    shot(page, "providers")


def test_no_page_loaded_anything_from_outside_the_api(stack: Stack, requested: list[str]) -> None:
    """Every request the pages above made (documents, scripts, styles, polls, audio) went
    to the API's own origin."""
    assert len(requested) > 20, "the browser tests above made too few requests to judge"
    api = urlsplit(stack.api_url)
    foreign = [u for u in requested if urlsplit(u)[:2] != (api.scheme, api.netloc)]
    assert not foreign, foreign
