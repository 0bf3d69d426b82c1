"""Webhook deliveries end to end below the API: recorded once per job finish, sent signed to
a real HTTP receiver on loopback, retried on a moved clock, shared safely between senders.

The receiver verifies every request with `standardwebhooks.Webhook(secret).verify`, as a
customer's endpoint would. Both databases run every test (`database_url`).
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import func, select
from standardwebhooks import Webhook

from jobs import repository as repo
from jobs.clock import utc_now
from jobs.error_codes import ErrorCode
from jobs.ledger import ItemLedger
from jobs.models import Job
from jobs.models_webhooks import DeliveryStatus, WebhookAttempt
from jobs.netpolicy import parse_allowlist
from jobs.records import ItemError
from jobs.schemas import JobCreate
from jobs.service import submit_job
from jobs.status import ItemStatus
from jobs.tenants import ensure_tenant
from jobs.webhook_log import DeliveryLog, job_deliveries
from jobs.webhook_secrets import ROTATION_GRACE, read_secrets, rotate_secret
from jobs.webhooks import claim_due, record_finished
from tests.integration.helpers import migrated_ledger
from workers.webhook_sender import RETRY_WINDOW, WebhookSender

pytestmark = pytest.mark.integration

LOOPBACK = parse_allowlist("127.0.0.1/32")


@dataclass
class Reply:
    """What the receiver answers to one request."""

    status: int = 200
    body: bytes = b"thanks"
    delay_s: float = 0.0
    stream_bytes: int = 0  # stream this many more bytes after `body` (a huge answer)
    location: str | None = None


@dataclass
class Seen:
    """One request the receiver got, and which of its secrets verified it."""

    headers: dict[str, str]
    body: bytes
    verified_by: list[str]
    payload: Any


@dataclass
class Receiver:
    """A threaded HTTP server on loopback that checks Standard Webhooks signatures."""

    secrets: list[str] = field(default_factory=list)
    script: list[Reply] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                owner.record({k.lower(): v for k, v in self.headers.items()}, body)
                reply = owner.next_reply()
                time.sleep(reply.delay_s)
                try:
                    self.send_response(reply.status)
                    if reply.location:
                        self.send_header("location", reply.location)
                    self.send_header("content-length", str(len(reply.body) + reply.stream_bytes))
                    self.end_headers()
                    self.wfile.write(reply.body)
                    chunk, left = b"x" * 65536, reply.stream_bytes
                    while left > 0:
                        self.wfile.write(chunk[:left])
                        left -= len(chunk)
                except OSError:
                    pass  # the sender hung up (cut off at its cap or deadline)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        assert self.server is not None
        self.server.shutdown()
        self.server.server_close()

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/speechbatch"

    def record(self, headers: dict[str, str], body: bytes) -> None:
        verified, payload = [], None
        for secret in self.secrets:
            try:
                payload = Webhook(secret).verify(body, headers)
                verified.append(secret)
            except Exception:  # noqa: S112  (a secret that does not verify it)
                continue
        with self.lock:
            self.seen.append(Seen(headers, body, verified, payload))

    def next_reply(self) -> Reply:
        with self.lock:
            return self.script.pop(0) if self.script else Reply()

    def ids(self) -> list[str]:
        with self.lock:
            return [s.headers["webhook-id"] for s in self.seen]


class Clock:
    """A clock the test moves, so backoff never waits for real."""

    def __init__(self) -> None:
        self.now = utc_now()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def ledger(database_url: str) -> Iterator[ItemLedger]:
    built = migrated_ledger(database_url)
    yield built
    built.db.dispose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def senders(ledger: ItemLedger, clock: Clock) -> Iterator[list[WebhookSender]]:
    """Senders made by `new_sender`, closed after the test."""
    made: list[WebhookSender] = []
    yield made
    for sender in made:
        sender.close()


def new_sender(
    ledger: ItemLedger, clock: Clock, made: list[WebhookSender], **kw: Any
) -> WebhookSender:
    options: dict[str, Any] = {"allow": LOOPBACK, "timeout_s": 3.0, "clock": clock}
    sender = WebhookSender(ledger.db.sessions, rng=random.Random(7), **(options | kw))
    made.append(sender)
    return sender


def submit(ledger: ItemLedger, url: str, *, texts: tuple[str, ...] = ("hello",)) -> str:
    tenant_id = ensure_tenant(ledger.db.sessions, "acme").id
    body = JobCreate.model_validate(
        {
            "kind": "tts",
            "provider": "local",
            "items": [{"text": t} for t in texts],
            "webhook_url": url,
        }
    )
    return submit_job(
        ledger, tenant_id, body, idempotency_key=None, max_items=100, allow=LOOPBACK
    ).job.id


def fail_items(ledger: ItemLedger, job_id: str) -> None:
    """Claim and fail every queued item of the job (so it finishes `failed`)."""
    with ledger.db.sessions() as session:
        ids = repo.item_ids(session, job_id, status=ItemStatus.QUEUED)
    for item_id in ids:
        claimed = ledger.claim(item_id, lease_s=30)
        assert claimed is not None
        ledger.fail(claimed, ItemError(ErrorCode.INVALID_INPUT, "no"), [])


def delivery_log(ledger: ItemLedger, job_id: str) -> DeliveryLog:
    """The job's one delivery, with its attempts."""
    tenant_id = ensure_tenant(ledger.db.sessions, "acme").id
    (log,) = job_deliveries(ledger.db.sessions, tenant_id, job_id)
    return log


def tenant_secret(ledger: ItemLedger) -> str:
    tenant_id = ensure_tenant(ledger.db.sessions, "acme").id
    return read_secrets(ledger.db.sessions, tenant_id).secret


def test_receiver_answering_500_twice_sees_three_verified_tries_of_one_id(
    ledger: ItemLedger, clock: Clock, receiver: Receiver, senders: list[WebhookSender]
) -> None:
    """Two 500s then a 200: three signed POSTs with one webhook-id, spaced by the backoff,
    and the log shows the three attempts with their statuses and latencies."""
    receiver.secrets = [tenant_secret(ledger)]
    receiver.script = [Reply(500, b"down"), Reply(500, b"still down"), Reply(200, b"ok")]
    job_id = submit(ledger, receiver.url)
    ledger.cancel_job(job_id)
    sender = new_sender(ledger, clock, senders)
    assert sender.run_pass() == 1
    assert sender.run_pass() == 0  # not due again before its backoff
    clock.advance(timedelta(seconds=25))
    assert sender.run_pass() == 0  # 30 s minus the 10% jitter has not passed
    clock.advance(timedelta(seconds=10))
    assert sender.run_pass() == 1
    clock.advance(timedelta(minutes=3))
    assert sender.run_pass() == 1
    clock.advance(timedelta(hours=30))
    assert sender.run_pass() == 0  # delivered: nothing more, and no second event recorded

    ids = receiver.ids()
    assert len(ids) == 3 and len(set(ids)) == 1
    assert all(s.verified_by == receiver.secrets for s in receiver.seen)
    event = receiver.seen[0].payload
    assert event["type"] == "job.finished"
    assert event["data"]["id"] == job_id and event["data"]["status"] == "canceled"
    assert event["data"]["counts"]["canceled"] == 1
    assert event["data"]["webhook_url"] == receiver.url
    (log,) = job_deliveries(
        ledger.db.sessions, ensure_tenant(ledger.db.sessions, "acme").id, job_id
    )
    assert log.delivery.id == ids[0]
    assert log.delivery.status == DeliveryStatus.DELIVERED
    assert [a.status_code for a in log.attempts] == [500, 500, 200]
    assert [a.response_excerpt for a in log.attempts] == ["down", "still down", "ok"]
    assert all(a.latency_ms > 0 for a in log.attempts)


def test_a_finish_after_retry_gets_a_new_event_with_a_new_id(
    ledger: ItemLedger, clock: Clock, receiver: Receiver, senders: list[WebhookSender]
) -> None:
    """A job failed, retried and failed again finished twice: two deliveries, two ids."""
    receiver.secrets = [tenant_secret(ledger)]
    job_id = submit(ledger, receiver.url)
    fail_items(ledger, job_id)
    sender = new_sender(ledger, clock, senders)
    assert sender.run_pass() == 1
    ledger.retry_failed(job_id)
    assert sender.run_pass() == 0  # running again: no event until it finishes
    fail_items(ledger, job_id)
    assert sender.run_pass() == 1
    assert sender.run_pass() == 0
    ids = receiver.ids()
    assert len(ids) == 2 and ids[0] != ids[1]
    assert [s.payload["data"]["status"] for s in receiver.seen] == ["failed", "failed"]


def test_a_new_sender_picks_up_what_a_dead_one_left(
    ledger: ItemLedger, clock: Clock, receiver: Receiver, senders: list[WebhookSender]
) -> None:
    """A delivery retried by a sender that is gone, and one leased by a sender that died
    mid-send, are both sent by a fresh sender (a beat restart) once they are due."""
    receiver.secrets = [tenant_secret(ledger)]
    receiver.script = [Reply(503)]
    first = submit(ledger, receiver.url)
    ledger.cancel_job(first)
    old = new_sender(ledger, clock, senders)
    assert old.run_pass() == 1  # 503: due again in ~30 s
    old.close()
    second = submit(ledger, receiver.url)
    ledger.cancel_job(second)
    old_again = new_sender(ledger, clock, senders)
    assert record_finished(ledger.db.sessions, now=clock()) == 1
    # A sender that claimed it and died before sending: its lease must run out first.
    (held,) = claim_due(ledger.db.sessions, now=clock(), limit=5, lease=old_again.lease)
    fresh = new_sender(ledger, clock, senders)
    assert fresh.run_pass() == 0
    clock.advance(old_again.lease + timedelta(seconds=1))
    assert fresh.run_pass() == 2
    assert len(receiver.ids()) == 3
    assert receiver.ids().count(held.id) == 1


def test_two_senders_racing_send_each_attempt_once(
    ledger: ItemLedger, clock: Clock, receiver: Receiver, senders: list[WebhookSender]
) -> None:
    """Two beats passing at the same moment record one event per job finish and send each
    delivery exactly once between them."""
    receiver.secrets = [tenant_secret(ledger)]
    jobs = [submit(ledger, receiver.url) for _ in range(8)]
    for job_id in jobs:
        ledger.cancel_job(job_id)
    racers = [new_sender(ledger, clock, senders, threads=2) for _ in range(2)]
    start = threading.Barrier(2)
    sent: list[int] = []

    def race(sender: WebhookSender) -> None:
        start.wait()
        sent.append(sender.run_pass())

    threads = [threading.Thread(target=race, args=(s,)) for s in racers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sum(sent) == 8
    ids = receiver.ids()
    assert len(ids) == 8 and len(set(ids)) == 8
    assert {s.payload["data"]["id"] for s in receiver.seen} == set(jobs)
    with ledger.db.sessions() as session:
        assert session.scalar(select(func.count()).select_from(WebhookAttempt)) == 8


def test_a_receiver_that_never_answers_2xx_is_given_up_after_a_day(
    ledger: ItemLedger, clock: Clock, receiver: Receiver, senders: list[WebhookSender]
) -> None:
    """Tries follow the backoff over the 24 h window, the last one at its end, then the
    delivery is failed and no more requests go out."""
    receiver.script = [Reply(500)] * 50
    job_id = submit(ledger, receiver.url)
    ledger.cancel_job(job_id)
    sender = new_sender(ledger, clock, senders)
    started = clock()
    tenant_id = ensure_tenant(ledger.db.sessions, "acme").id
    for _ in range(30):
        sender.run_pass()
        (log,) = job_deliveries(ledger.db.sessions, tenant_id, job_id)
        if log.delivery.next_attempt_at is None:
            break
        clock.now = log.delivery.next_attempt_at
    assert log.delivery.status == DeliveryStatus.FAILED
    times = [a.started_at for a in log.attempts]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert 9 <= len(times) <= 12
    assert gaps[0] < timedelta(seconds=34) and gaps[1] > timedelta(seconds=100)
    assert all(b >= a * 0.8 for a, b in itertools.pairwise(gaps))  # never shrinking
    assert times[-1] - started <= RETRY_WINDOW + timedelta(seconds=1)
    assert times[-1] - started >= RETRY_WINDOW - timedelta(hours=1)
    clock.advance(timedelta(days=3))
    assert sender.run_pass() == 0
    assert len(receiver.ids()) == len(times)


def test_during_a_rotations_grace_both_secrets_sign_then_only_the_new(
    ledger: ItemLedger, clock: Clock, receiver: Receiver, senders: list[WebhookSender]
) -> None:
    """After a rotation a request verifies with the old and the new secret; once the grace
    period is over, only with the new one."""
    old = tenant_secret(ledger)
    tenant_id = ensure_tenant(ledger.db.sessions, "acme").id
    new = rotate_secret(ledger.db.sessions, tenant_id, clock()).secret
    assert new != old and new.startswith("whsec_")
    receiver.secrets = [old, new]
    receiver.script = [Reply(500), Reply(500)]
    job_id = submit(ledger, receiver.url)
    ledger.cancel_job(job_id)
    sender = new_sender(ledger, clock, senders)
    sender.run_pass()
    clock.advance(ROTATION_GRACE + timedelta(minutes=1))
    sender.run_pass()
    first, second = receiver.seen
    assert first.verified_by == [old, new]
    assert second.verified_by == [new]
    assert len(second.headers["webhook-signature"].split(" ")) == 1


def test_private_addresses_are_refused_at_send_without_the_allowlist(
    ledger: ItemLedger, clock: Clock, receiver: Receiver, senders: list[WebhookSender]
) -> None:
    """A sender without the allowlist connects neither to a loopback literal nor to a name
    resolving to loopback; with it, the name is reached at the vetted address (Host kept)."""
    receiver.secrets = [tenant_secret(ledger)]
    named = f"http://hooks.example.test:{receiver.port}/in"
    for url in (receiver.url, named):
        ledger.cancel_job(submit(ledger, url))

    def loopback(host: str, port: int) -> list[tuple[Any, ...]]:
        assert host == "hooks.example.test"
        return [(2, 1, 6, "", ("127.0.0.1", port))]

    strict = new_sender(ledger, clock, senders, allow=(), resolver=loopback)
    assert strict.run_pass() == 2
    assert receiver.ids() == []
    with ledger.db.sessions() as session:
        job_ids = list(session.scalars(select(Job.id).order_by(Job.created_at)))
    errors = [delivery_log(ledger, j).attempts[0].error for j in job_ids]
    assert all(e and e.startswith("refused:") and "loopback" in e for e in errors), errors
    clock.advance(timedelta(minutes=1))
    allowed = new_sender(ledger, clock, senders, resolver=loopback)
    assert allowed.run_pass() == 2
    hosts = sorted(s.headers["host"] for s in receiver.seen)
    assert hosts == sorted([f"127.0.0.1:{receiver.port}", f"hooks.example.test:{receiver.port}"])


def test_a_slow_receiver_is_cut_off_at_the_timeout(
    ledger: ItemLedger, clock: Clock, receiver: Receiver, senders: list[WebhookSender]
) -> None:
    """A receiver that takes 5 s is abandoned at the 1 s deadline and retried later."""
    receiver.script = [Reply(200, delay_s=5.0)]
    job_id = submit(ledger, receiver.url)
    ledger.cancel_job(job_id)
    sender = new_sender(ledger, clock, senders, timeout_s=1.0)
    began = time.monotonic()
    assert sender.run_pass() == 1
    assert time.monotonic() - began < 3.0
    log = delivery_log(ledger, job_id)
    (attempt,) = log.attempts
    assert attempt.status_code is None and attempt.error == "no answer within 1 s"
    assert 900 <= attempt.latency_ms < 3000
    assert log.delivery.status == DeliveryStatus.PENDING and log.delivery.next_attempt_at


def test_a_huge_answer_is_read_only_up_to_the_excerpt_cap(
    ledger: ItemLedger, clock: Clock, receiver: Receiver, senders: list[WebhookSender]
) -> None:
    """A 200 with a 50 MB body counts as delivered and only its first 512 bytes are kept."""
    receiver.script = [Reply(200, body=b"y" * 100, stream_bytes=50 * 1024 * 1024)]
    job_id = submit(ledger, receiver.url)
    ledger.cancel_job(job_id)
    sender = new_sender(ledger, clock, senders)
    began = time.monotonic()
    assert sender.run_pass() == 1
    assert time.monotonic() - began < 3.0
    log = delivery_log(ledger, job_id)
    (attempt,) = log.attempts
    assert attempt.status_code == 200 and log.delivery.status == DeliveryStatus.DELIVERED
    assert attempt.response_excerpt == "y" * 100 + "x" * 412


def test_a_redirect_is_not_followed(
    ledger: ItemLedger, clock: Clock, receiver: Receiver, senders: list[WebhookSender]
) -> None:
    """A 302 is an attempt that failed: the Location is never requested."""
    elsewhere = Receiver()
    elsewhere.start()
    try:
        receiver.script = [Reply(302, location=elsewhere.url)]
        job_id = submit(ledger, receiver.url)
        ledger.cancel_job(job_id)
        assert new_sender(ledger, clock, senders).run_pass() == 1
        assert elsewhere.ids() == []
    finally:
        elsewhere.stop()
    log = delivery_log(ledger, job_id)
    assert [a.status_code for a in log.attempts] == [302]
    assert log.delivery.status == DeliveryStatus.PENDING


def test_a_pass_stops_at_its_batch_and_at_its_time_budget(
    ledger: ItemLedger, clock: Clock, receiver: Receiver, senders: list[WebhookSender]
) -> None:
    """With many due deliveries a pass sends at most `batch`, and behind a slow receiver
    it stops claiming once `pass_budget_s` is spent; the rest wait for the next pass."""
    receiver.script = [Reply(200, delay_s=1.5)] * 2
    for _ in range(6):
        ledger.cancel_job(submit(ledger, receiver.url))
    slow = new_sender(ledger, clock, senders, threads=2, timeout_s=1.0, pass_budget_s=0.5)
    began = time.monotonic()
    assert slow.run_pass() == 2  # one round of two threads, then the budget is spent
    assert time.monotonic() - began < 2.5
    capped = new_sender(ledger, clock, senders, threads=2, batch=3)
    assert capped.run_pass() == 3
    assert capped.run_pass() == 1
    assert len(receiver.ids()) == 6
