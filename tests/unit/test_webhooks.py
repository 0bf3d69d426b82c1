"""Webhook pieces without services: secrets, signatures, the backoff schedule, URL checks."""

from __future__ import annotations

import base64
import itertools
import random
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from jobs.clock import utc_now
from jobs.error_codes import ErrorCode
from jobs.errors import ApiError
from jobs.netpolicy import parse_allowlist
from jobs.webhook_secrets import ROTATION_GRACE, TenantSecrets, new_secret
from jobs.webhooks import check_webhook_url
from workers.webhook_sender import BACKOFF, JITTER, RETRY_WINDOW, next_attempt_at, sign

START = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)


def test_a_new_secret_is_whsec_and_32_random_bytes_the_library_accepts() -> None:
    """Secrets have the Standard Webhooks form, decode to 32 bytes, and never repeat."""
    made = {new_secret() for _ in range(50)}
    assert len(made) == 50
    for secret in made:
        assert secret.startswith("whsec_")
        assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
        Webhook(secret)  # raises on a malformed secret


def test_a_signature_verifies_with_each_signing_secret_and_no_other() -> None:
    """A header signed with two secrets verifies with either; a third secret is refused."""
    old, new, stranger = new_secret(), new_secret(), new_secret()
    body, now = '{"type":"job.finished"}', utc_now()
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": sign([new, old], "msg_1", now, body),
    }
    assert headers["webhook-signature"].count("v1,") == 2
    for secret in (old, new):
        assert Webhook(secret).verify(body, headers) == {"type": "job.finished"}
    with pytest.raises(WebhookVerificationError):
        Webhook(stranger).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new).verify(body + " ", headers)  # the body is part of what is signed


def test_the_previous_secret_signs_only_during_the_grace_period() -> None:
    """After a rotation both secrets sign until the grace ends, then only the new one."""
    secrets = TenantSecrets("whsec_new", "whsec_old", rotated_at=START)
    assert secrets.signing(START + timedelta(hours=1)) == ["whsec_new", "whsec_old"]
    assert secrets.previous_valid_until(START) == START + ROTATION_GRACE
    assert secrets.signing(START + ROTATION_GRACE) == ["whsec_new"]
    assert secrets.previous_valid_until(START + ROTATION_GRACE) is None
    assert TenantSecrets("whsec_only", None, None).signing(START) == ["whsec_only"]


def test_backoff_grows_within_jitter_and_ends_at_the_windows_end() -> None:
    """Each wait is its BACKOFF step ±10%, the last try lands on the window's end, and
    after it there is no next try."""
    rng, now, failures = random.Random(3), START, 0
    tries = [START]
    while True:
        failures += 1
        following = next_attempt_at(START, failures, now, rng)
        if following is None:
            break
        tries.append(following)
        now = following
    waits = [b - a for a, b in itertools.pairwise(tries)]
    for index, wait in enumerate(waits[:-1]):
        step = BACKOFF[min(index, len(BACKOFF) - 1)]
        assert step * (1 - JITTER) <= wait <= step * (1 + JITTER), index
    assert tries[-1] == START + RETRY_WINDOW
    assert 9 <= len(tries) <= 12


def test_the_schedule_is_thirty_seconds_two_minutes_ten_minutes_then_longer() -> None:
    """The documented steps: 30 s, 2 min, 10 min, 30 min, 1 h, ... never over 6 h."""
    assert BACKOFF[:5] == tuple(timedelta(seconds=s) for s in (30, 120, 600, 1800, 3600))
    assert max(BACKOFF) == timedelta(hours=6)
    assert list(BACKOFF) == sorted(BACKOFF)


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("http://127.0.0.1:8080/hook", ErrorCode.FORBIDDEN_WEBHOOK_URL),
        ("http://10.1.2.3/hook", ErrorCode.FORBIDDEN_WEBHOOK_URL),
        ("http://[::1]/hook", ErrorCode.FORBIDDEN_WEBHOOK_URL),
        ("http://169.254.169.254/latest", ErrorCode.FORBIDDEN_WEBHOOK_URL),
        ("http://2130706433/", ErrorCode.FORBIDDEN_WEBHOOK_URL),
        ("ftp://example.com/hook", ErrorCode.INVALID_WEBHOOK_URL),
        ("https://user:pw@example.com/hook", ErrorCode.INVALID_WEBHOOK_URL),
        ("https://example.com:99999/hook", ErrorCode.INVALID_WEBHOOK_URL),
        ("https://exa mple.com/", ErrorCode.INVALID_WEBHOOK_URL),
        ("https://example.com/" + "a" * 2100, ErrorCode.INVALID_WEBHOOK_URL),
    ],
)
def test_unsafe_webhook_urls_are_refused_with_a_422_and_a_code(url: str, code: ErrorCode) -> None:
    """The source URLs' SSRF rules refuse the webhook URL at submit, each with its code."""
    with pytest.raises(ApiError) as refused:
        check_webhook_url(url, ())
    assert refused.value.status == 422
    assert refused.value.code == code
    assert refused.value.message.startswith("webhook_url: ")


def test_public_and_allowlisted_webhook_urls_are_accepted() -> None:
    """A public https URL passes as is, and loopback passes once it is allowlisted."""
    assert check_webhook_url("https://hooks.example.com/in?x=1", ()) == (
        "https://hooks.example.com/in?x=1"
    )
    loopback = "http://127.0.0.1:9000/hook"
    assert check_webhook_url(loopback, parse_allowlist("127.0.0.1")) == loopback
