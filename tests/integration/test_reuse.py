"""Content-addressed reuse through the real pipeline: one provider call per distinct line.

Real databases (PostgreSQL and SQLite), a real store (SeaweedFS S3 where the copy itself is
under test), the offline espeak-ng engine behind a counter of the lines it speaks.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import select, update

from jobs.ledger import ItemLedger
from jobs.models import Item, Job
from jobs.status import JOB_TERMINAL
from jobs.views import item_view
from storage.keys import manifest_key
from storage.localfs import LocalObjectStore
from storage.objects import ObjectStore
from storage.s3 import S3ObjectStore
from tests.integration.helpers import migrated_ledger, published, tts_job
from tests.integration.test_pipeline import runtime
from workers.pipeline import Outcome, run_item
from workers.providers.base import Synthesis
from workers.providers.registry import build_provider
from workers.runtime import Runtime

pytestmark = pytest.mark.integration

HELLO, KENOBI = "Hello there.", "General Kenobi."


class Counting:
    """The offline engine, counting the lines it speaks (optionally slowly, so that calls
    of several threads overlap)."""

    name = "local"

    def __init__(self, delay_s: float = 0.0) -> None:
        self.engine = build_provider("local", client=None, base_url=None, api_key=None)
        self.delay_s = delay_s
        self.spoken: list[str] = []
        self._lock = threading.Lock()

    def synthesize(self, text: str, **kwargs: Any) -> Synthesis:
        with self._lock:
            self.spoken.append(text)
        time.sleep(self.delay_s)
        return self.engine.synthesize(text, **kwargs)

    def transcribe(self, audio: Any, **kwargs: Any) -> Any:
        raise NotImplementedError


def _items(ledger: ItemLedger, job_id: str) -> list[Item]:
    with ledger.db.sessions() as session:
        return list(session.scalars(select(Item).where(Item.job_id == job_id).order_by(Item.seq)))


def _run_all(rt: Runtime, ledger: ItemLedger) -> list[Outcome]:
    return [run_item(rt, i) for i in published(ledger).ids]


def test_identical_lines_of_a_job_are_spoken_once_and_copied(
    database_url: str, s3_store: S3ObjectStore
) -> None:
    """Of four lines, two distinct: two calls; the repeats are real copies at their own keys
    (same bytes, S3 CopyObject), marked reused in the item view and the manifest, and add
    nothing to the job's usage."""
    api = migrated_ledger(database_url)
    job = tts_job(api, [HELLO, KENOBI, HELLO, HELLO]).job
    counting = Counting()
    rt = runtime(database_url, s3_store, counting)
    assert _run_all(rt, api) == [Outcome.SUCCEEDED] * 4
    assert counting.spoken == [HELLO, KENOBI]
    first, _, third, fourth = _items(api, job.id)
    # Each copies the newest stored copy of its line: the original or an earlier copy.
    assert third.reused_from == first.id and fourth.reused_from in (first.id, third.id)
    assert len({first.output_key, third.output_key, fourth.output_key}) == 3
    original = s3_store.get_bytes(first.output_key or "")
    assert s3_store.get_bytes(third.output_key or "") == original
    assert s3_store.get_bytes(fourth.output_key or "") == original
    assert third.output_bytes == len(original) and third.duration_s == first.duration_s
    with api.db.sessions() as session:
        done = session.get(Job, job.id)
        assert done is not None
        assert done.usage_characters == len(HELLO) + len(KENOBI)
        assert item_view(done, third, None).reused is True
        assert item_view(done, first, None).reused is False
    lines = s3_store.get_bytes(manifest_key("", job.tenant_id, job.id)).decode().splitlines()
    assert [json.loads(line)["reused"] for line in lines] == [False, False, True, True]


def test_a_copy_waits_while_its_line_is_being_spoken(
    database_url: str, local_store: LocalObjectStore
) -> None:
    """While the first of two identical lines is held by a worker, the second makes no call:
    it goes back to the queue without spending an attempt, then copies the first's output."""
    api = migrated_ledger(database_url)
    job = tts_job(api, [HELLO, HELLO]).job
    first_id, second_id = published(api).ids
    counting = Counting()
    rt = runtime(database_url, local_store, counting)
    held = rt.ledger.claim(first_id, lease_s=60)  # another worker is speaking it
    assert held is not None
    assert run_item(rt, second_id) == Outcome.DEFERRED
    assert counting.spoken == []
    assert rt.ledger.hand_back(held, [], delay_s=0.0)
    assert run_item(rt, first_id) == Outcome.SUCCEEDED
    with api.db.engine.begin() as c:  # its short wait is over
        c.execute(update(Item).where(Item.id == second_id).values(next_attempt_at=None))
    assert run_item(rt, second_id) == Outcome.SUCCEEDED
    assert counting.spoken == [HELLO]
    second = _items(api, job.id)[1]
    assert (second.reused_from, second.attempts) == (first_id, 1)


def test_concurrent_workers_make_one_call_per_distinct_line(
    database_url: str, local_store: LocalObjectStore
) -> None:
    """Four threads run a job of six copies of one line and two of another, all at once:
    each distinct line is spoken exactly once and every item succeeds."""
    api = migrated_ledger(database_url)
    lines = ["Same line."] * 6 + ["Other line."] * 2
    job = tts_job(api, lines).job
    ids = published(api).ids
    counting = Counting(delay_s=0.3)
    rt = runtime(database_url, local_store, counting)
    deadline = time.monotonic() + 60

    def finished() -> bool:
        with api.db.sessions() as session:
            return session.scalar(select(Job.status).where(Job.id == job.id)) in JOB_TERMINAL

    def worker(offset: int) -> None:
        while not finished() and time.monotonic() < deadline:
            for item_id in ids[offset:] + ids[:offset]:
                run_item(rt, item_id)
            time.sleep(0.1)

    threads = [threading.Thread(target=worker, args=(n * 2,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert Counter(counting.spoken) == {"Same line.": 1, "Other line.": 1}
    items = _items(api, job.id)
    assert [i.status for i in items] == ["succeeded"] * 8
    assert sum(i.reused_from is not None for i in items) == 6


def test_lines_are_reused_across_a_tenants_jobs_and_never_across_tenants(
    database_url: str, local_store: LocalObjectStore
) -> None:
    """A later job of the same tenant copies an earlier job's line; another tenant, or the
    same line in another format, is spoken afresh."""
    api = migrated_ledger(database_url)
    counting = Counting()
    rt = runtime(database_url, local_store, counting)
    first = tts_job(api, [HELLO]).job
    assert _run_all(rt, api) == [Outcome.SUCCEEDED]
    published(api).published.clear()
    again = tts_job(api, [HELLO]).job
    other_tenant = tts_job(api, [HELLO], tenant="globex").job
    other_format = tts_job(api, [HELLO], options={"format": "flac"}).job
    assert _run_all(rt, api) == [Outcome.SUCCEEDED] * 3
    assert counting.spoken == [HELLO] * 3  # first job, other tenant, other format
    (original,) = _items(api, first.id)
    assert _items(api, again.id)[0].reused_from == original.id
    assert _items(api, other_tenant.id)[0].reused_from is None
    assert _items(api, other_format.id)[0].reused_from is None


def test_a_line_whose_earlier_output_is_gone_is_spoken_again(
    database_url: str, local_store: LocalObjectStore
) -> None:
    """When the earlier output was removed from the store, the line is spoken, not copied."""
    api = migrated_ledger(database_url)
    counting = Counting()
    rt = runtime(database_url, local_store, counting)
    first = tts_job(api, [HELLO]).job
    _run_all(rt, api)
    published(api).published.clear()
    store: ObjectStore = local_store
    store.delete(_items(api, first.id)[0].output_key or "")
    later = tts_job(api, [HELLO]).job
    assert _run_all(rt, api) == [Outcome.SUCCEEDED]
    assert counting.spoken == [HELLO, HELLO]
    assert _items(api, later.id)[0].reused_from is None
