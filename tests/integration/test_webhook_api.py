"""The webhook endpoints in-process over real SQLite/PostgreSQL and Redis: `webhook_url` at
submit, the signing secret, the delivery log and redelivery (sent by a real sender pass to
a real receiver on loopback)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from jobs.clock import utc_now
from storage.db import make_engine, make_session_factory
from tests.integration.test_api import Api, running_api
from tests.integration.test_webhook_delivery import Receiver
from workers.webhook_sender import WebhookSender

pytestmark = pytest.mark.integration

TTS = {"kind": "tts", "provider": "local", "items": [{"text": "hello"}]}


@pytest.fixture
def api(database_url: str, redis_url: str, tmp_path: Path) -> Iterator[Api]:
    with running_api(
        database_url,
        redis_url,
        storage_url=f"file://{tmp_path / 'objects'}",
        allow_private_networks="127.0.0.1/32",
    ) as running:
        yield running


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    server.start()
    yield server
    server.stop()


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("http://10.0.0.7/hook", "forbidden_webhook_url"),
        ("http://[::1]:9000/hook", "forbidden_webhook_url"),
        ("gopher://example.com/", "invalid_webhook_url"),
        ("https://a:b@example.com/", "invalid_webhook_url"),
        ("https://example.com/" + "p" * 2100, "invalid_request"),
        ("https://example.com/\x00", "invalid_characters"),
        (12345, "invalid_request"),
    ],
)
def test_a_bad_webhook_url_is_a_422_with_its_code(api: Api, url: object, code: str) -> None:
    """Each unsafe or malformed webhook_url is refused at submit with a stable code."""
    response = api.post_job({**TTS, "webhook_url": url})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == code


def test_an_allowed_webhook_url_is_stored_and_shown(api: Api) -> None:
    """A webhook_url the network policy allows is kept and shown in the job view."""
    url = "http://127.0.0.1:9/hooks?team=voice"
    created = api.post_job({**TTS, "webhook_url": url})
    assert created.status_code == 202, created.text
    shown = api.client.get(f"/v1/jobs/{created.json()['id']}", headers=api.auth()).json()
    assert shown["webhook_url"] == url
    plain = api.post_job(TTS).json()
    assert plain["webhook_url"] is None


def test_the_secret_is_made_once_per_tenant_and_rotation_replaces_it(api: Api) -> None:
    """GET makes the secret on first use and returns it again; tenants differ; rotate
    returns a new one that GET then shows, with the old one's grace period."""
    first = api.client.get("/v1/webhook-secret", headers=api.auth())
    assert first.status_code == 200
    assert first.headers["cache-control"] == "no-store"
    secret = first.json()["secret"]
    assert secret.startswith("whsec_") and first.json()["previous_secret_valid_until"] is None
    assert api.client.get("/v1/webhook-secret", headers=api.auth()).json()["secret"] == secret
    other = api.client.get("/v1/webhook-secret", headers=api.auth(api.other_key)).json()
    assert other["secret"] != secret
    rotated = api.client.post("/v1/webhook-secret/rotate", headers=api.auth())
    assert rotated.status_code == 200
    new = rotated.json()
    assert new["secret"] not in (secret, other["secret"])
    assert new["previous_secret_valid_until"] is not None
    assert (
        api.client.get("/v1/webhook-secret", headers=api.auth()).json()["secret"] == new["secret"]
    )
    assert api.client.get("/v1/webhook-secret").status_code == 401
    assert api.client.post("/v1/webhook-secret/rotate").status_code == 401


def test_the_delivery_log_shows_attempts_and_redeliver_replays_the_same_id(
    api: Api, receiver: Receiver, database_url: str
) -> None:
    """After a job finishes, beat's pass sends one verified event; the log shows it; a
    redeliver (202) sends it again under the same webhook-id; other tenants get 404s."""
    receiver.secrets = [api.client.get("/v1/webhook-secret", headers=api.auth()).json()["secret"]]
    job = api.post_job({**TTS, "webhook_url": receiver.url}).json()
    api.client.post(f"/v1/jobs/{job['id']}/cancel", headers=api.auth())
    sessions = make_session_factory(make_engine(database_url))
    sender = WebhookSender(sessions, allow=api.resources.source_allow, timeout_s=3.0)
    try:
        assert sender.run_pass() == 1
        log = api.client.get(f"/v1/jobs/{job['id']}/webhooks", headers=api.auth())
        assert log.status_code == 200
        (delivery,) = log.json()["deliveries"]
        assert delivery["status"] == "delivered" and delivery["attempt_count"] == 1
        assert delivery["payload"]["data"]["status"] == "canceled"
        (attempt,) = delivery["attempts"]
        assert attempt["status_code"] == 200 and attempt["response_excerpt"] == "thanks"
        assert attempt["latency_ms"] > 0 and attempt["error"] is None

        path = f"/v1/jobs/{job['id']}/webhooks/{delivery['id']}/redeliver"
        assert api.client.post(path, headers=api.auth(api.other_key)).status_code == 404
        other_log = api.client.get(
            f"/v1/jobs/{job['id']}/webhooks", headers=api.auth(api.other_key)
        )
        assert other_log.status_code == 404
        assert other_log.json()["error"]["code"] == "not_found"
        missing = f"/v1/jobs/{job['id']}/webhooks/msg_nope/redeliver"
        assert api.client.post(missing, headers=api.auth()).status_code == 404
        replay = api.client.post(path, headers=api.auth())
        assert replay.status_code == 202
        assert replay.json()["status"] == "pending"
        assert sender.run_pass() == 1
    finally:
        sender.close()
    assert receiver.ids() == [delivery["id"], delivery["id"]]
    assert all(seen.verified_by == receiver.secrets for seen in receiver.seen)
    (after,) = api.client.get(f"/v1/jobs/{job['id']}/webhooks", headers=api.auth()).json()[
        "deliveries"
    ]
    assert after["status"] == "delivered" and len(after["attempts"]) == 2
    assert after["next_attempt_at"] is None
    assert utc_now() - timedelta(minutes=1) < datetime.fromisoformat(after["delivered_at"])
