"""Local mode: the whole system in the CLI's process, on the embedded defaults.

SQLite, a local directory and the offline `local` engine, kept under SPEECHBATCH_HOME (by
default the per-user data directory); items go through the same ledger, pipeline and
sweeper as in a deployment, run by `workers.local.LocalRunner` in this process. A command
that returns before its job is done (`--no-wait`) hands the job to a detached
`speechbatch wait JOB --quiet` process, which runs it to the end.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from jobs import repository as repo
from jobs import service
from jobs.archive_count import CountLimits
from jobs.archives import ArchivePolicy
from jobs.errors import refused_upload
from jobs.media import AudioRejected, check_audio
from jobs.migrate import upgrade_to_head
from jobs.models import Job
from jobs.netpolicy import parse_allowlist
from jobs.schemas import JobCreate
from jobs.settings import Settings
from jobs.status import ItemStatus
from jobs.tenants import ensure_tenant
from jobs.uploads import store_upload
from jobs.usage import RouteUsage, by_job
from jobs.views import item_view, job_view
from storage.publisher import InMemoryPublisher
from workers.expand import ArchiveResumer, expand_to_end, expander_for
from workers.local import LocalRunner
from workers.runtime import build_runtime
from workers.sweeper import UploadRetention

LOCAL_TENANT = "local"


def local_mode_description(settings: Settings) -> str:
    default_db = f"sqlite:///{settings.home.expanduser().resolve() / 'speechbatch.db'}"
    if settings.database_url == default_db:
        return f"local mode, state in {settings.home}"
    return f"local mode, database {settings.database_url}"


class LocalBackend:
    """Runs everything in this process on the embedded defaults; no server needed."""

    def __init__(self, settings: Settings, *, concurrency: int = 4) -> None:
        upgrade_to_head(settings.database_url)
        self.settings, self.concurrency = settings, concurrency
        self.where = local_mode_description(settings)
        self.publisher = InMemoryPublisher()
        self.runtime = build_runtime(settings, self.publisher, threads=concurrency)
        self.ledger, self.store = self.runtime.ledger, self.runtime.store
        self.store.check()  # a missing bucket or folder is said now, not item by item
        self.sessions = self.ledger.db.sessions
        # Old uploads no job names are deleted, as beat does (the store is the runtime's).
        uploads = UploadRetention(
            self.store, self.sessions, max_age=timedelta(hours=settings.upload_retention_hours)
        )
        # One person's machine: any local folder may be an archive (S3 ones per the setting).
        self.archives = ArchivePolicy.from_settings(
            settings.archive_buckets,
            settings.storage_url,
            max_items=settings.archive_max_items,
            local=True,
        )
        self.expander = expander_for(self.runtime)
        self.runner = LocalRunner(
            self.runtime,
            self.publisher,
            threads=concurrency,
            chores=[uploads.chore(), ArchiveResumer(self.expander).chore()],
        )
        self.running = False
        self.tenant_id = ensure_tenant(self.sessions, LOCAL_TENANT).id

    def _view(self, job_id: str) -> dict[str, Any]:
        return self._job_view(service.get_job(self.sessions, self.tenant_id, job_id))

    def _job_view(self, job: Job) -> dict[str, Any]:
        """The API's view of `job`, its per-provider usage and cost included."""
        rerouted: list[RouteUsage] = []
        if job.fallback:
            with self.sessions() as session:
                rerouted = by_job(repo.rerouted_usage(session, [job.id])).get(job.id, [])
        view = job_view(job, rerouted=rerouted, prices=self.settings.price_table())
        return view.model_dump(mode="json")

    def dry_run(self, body: dict[str, Any]) -> dict[str, Any]:
        """What the job would use and cost, checked as a submit is; nothing created or run."""
        estimate = service.dry_run_job(
            self.sessions,
            self.store,
            self.tenant_id,
            JobCreate.model_validate(body),
            max_items=self.settings.max_items_per_job,
            allow=parse_allowlist(self.settings.allow_private_networks),
            prices=self.settings.price_table(),
            archives=self.archives,
            buckets=self.runtime.archives.buckets,
            count_limits=CountLimits(
                budget_s=self.settings.archive_dry_run_seconds,
                max_objects=self.settings.archive_dry_run_objects,
                max_items=self.settings.archive_max_items,
            ),
        )
        return estimate.model_dump(mode="json")

    def submit(self, body: dict[str, Any], idempotency_key: str | None) -> dict[str, Any]:
        submitted = service.submit_job(
            self.ledger,
            self.tenant_id,
            JobCreate.model_validate(body),
            idempotency_key=idempotency_key,
            max_items=self.settings.max_items_per_job,
            allow=parse_allowlist(self.settings.allow_private_networks),
            prices=self.settings.price_table(),
            archives=self.archives,
        )
        return self._view(submitted.job.id)

    def start_work(self, job_id: str, *, resume: bool) -> None:
        """Start this process's runner; `resume` also queues what an earlier run left undone.

        Items a killed run held come back once their lease expires (the runner's sweeper).
        """
        if resume:
            with self.sessions() as session:
                queued = repo.item_ids(session, job_id, status=ItemStatus.QUEUED)
            self.ledger.publish(queued)
        if not self.running:
            self.runner.start()
            self.running = True
        # An archive job's listing (a no-op for other jobs): its items run as it goes.
        threading.Thread(
            target=expand_to_end, args=(self.expander, job_id), name="local-expand", daemon=True
        ).start()

    def detach(self, job_id: str) -> None:
        """Run the job to its end in a detached `speechbatch wait --quiet` process."""
        log = self.settings.home.expanduser() / f"runner-{job_id}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "speechbatch", "wait", job_id, "--quiet"]
        argv += ["--concurrency", str(self.concurrency)]
        with log.open("ab") as out:
            subprocess.Popen(  # our own console script, fixed arguments
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # outlives this command and its terminal
            )

    def upload(self, path: Path) -> str:
        with path.open("rb") as handle:
            try:
                content_type = check_audio(handle.read(64), str(path))
            except AudioRejected as rejected:
                raise refused_upload(rejected) from None
            handle.seek(0)
            source, _ = store_upload(self.store, self.tenant_id, handle, content_type)
        return source

    def get_job(self, job_id: str) -> dict[str, Any]:
        return self._view(job_id)

    def list_jobs(self, limit: int) -> list[dict[str, Any]]:
        with self.sessions() as session:
            jobs = repo.list_jobs(
                session, self.tenant_id, status=None, kind=None, limit=limit, before=None
            )
        return [self._job_view(j) for j in jobs]

    def items(self, job_id: str) -> Iterator[dict[str, Any]]:
        job = service.get_job(self.sessions, self.tenant_id, job_id)
        with self.sessions() as session:
            for item in repo.iter_items(session, job_id):
                yield item_view(job, item, lambda key, _item: key).model_dump(mode="json")

    def cancel(self, job_id: str) -> dict[str, Any]:
        service.cancel_job(self.ledger, self.store, self.tenant_id, job_id)
        return self._view(job_id)

    def retry(self, job_id: str) -> dict[str, Any]:
        service.retry_job(self.ledger, self.tenant_id, job_id)
        return self._view(job_id)

    def fetch(self, url_or_key: str) -> Iterator[bytes]:
        # An `output.url` job's outputs are URLs of another bucket, not keys of this store.
        yield from self.runtime.archives.outputs(self.store).iter_chunks(url_or_key)

    def close(self) -> None:
        if self.running:
            self.runner.stop()
        with contextlib.suppress(Exception):
            self.runtime.close()
