"""The chaos stack: the deployed shape as processes over PRIVATE Redis, PostgreSQL and S3.

Every server here was started by this session, so a test may SIGKILL, stop or restart it
without touching the machine's own. Each test gets a fresh database, bucket and Redis
keyspace, an emulator, the API, two workers (`--concurrency 8` each, named `worker-N@<host>`)
and beat (`--interval 1`), with a 10 s lease so a killed worker's items come back quickly.

A test that also asks for `redis_proxies` gets every process talking to Redis through a
`BlackHoleProxy` (worker N through proxy N mod 2; API, beat and CLI runs through the second),
so it can turn the broker into a silent peer (half-open connections).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
import pytest
import redis

from jobs.migrate import upgrade_to_head
from jobs.tenants import create_api_key
from storage.db import open_database
from tests.chaos.blackhole import BlackHoleProxy
from tests.e2e.stack import CLI, EMULATOR_KEY, Proc, Stack, answers
from tests.services import Service, create_database, drop_database, free_port, start_postgres
from tests.services import start_redis as start_private_redis

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import ObjectIdentifierTypeDef

LEASE_S = 10
SWEEP_INTERVAL_S = 1
WORKERS = 2
WORKER_CONCURRENCY = 8
EMULATOR_LATENCY_MS = 75
READY_TIMEOUT_S = 60.0


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Remember each phase's report on the test item, so teardown knows whether it failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@dataclass(kw_only=True)
class ChaosStack(Stack):
    """A Stack plus handles on the servers and worker processes a chaos test breaks."""

    redis: Service
    postgres: Service
    seaweedfs: Service
    s3_client: S3Client
    bucket: str
    database_url: str
    worker_broker_urls: list[str] = field(default_factory=list)  # round-robin; [] = env's
    workers: list[Proc] = field(default_factory=list)
    _spawned: int = 0

    def spawn_worker(self) -> Proc:
        """Start one more `speechbatch worker --concurrency 8` and wait until Celery is ready."""
        proc = self.start_worker()
        wait_until(proc, _logged(proc, " ready."))
        return proc

    def start_worker(self) -> Proc:
        self._spawned += 1
        name = f"worker-{self._spawned}"
        args = ["worker", "--concurrency", str(WORKER_CONCURRENCY), "--name", f"{name}@%h"]
        env = self.env
        if self.worker_broker_urls:
            broker = self.worker_broker_urls[(self._spawned - 1) % len(self.worker_broker_urls)]
            env = {**env, "SPEECHBATCH_BROKER_URL": broker}
        proc = Proc(name, [CLI, *args], env, self.workdir)
        proc.start()
        self.procs.append(proc)
        self.workers.append(proc)
        return proc

    @staticmethod
    def node(worker: Proc) -> str:
        """The Celery node name of one of our workers (what `worker-check --node` takes)."""
        return f"{worker.name}@{socket.gethostname()}"

    def check_worker(self, worker: Proc, timeout: float) -> subprocess.CompletedProcess[str]:
        """`speechbatch worker-check` for one worker, through the same broker URL it uses."""
        return self.run_cli(
            "worker-check", "--node", self.node(worker), "--timeout", f"{timeout:.1f}",
            timeout=timeout + 30,
        )  # fmt: skip

    def submit_tts(self, count: int) -> str:
        """POST a TTS job of `count` distinct lines (provider slng, WAV) and return its id.

        The lines name the job's own token: identical lines of the tenant's earlier jobs
        would be copied (reuse) instead of spoken, and the checks count provider calls."""
        token = uuid.uuid4().hex[:8]
        body = {
            "kind": "tts",
            "provider": "slng",
            "model": "slng/deepgram/aura:2-en",
            "voice": "aura-2-thalia-en",
            "options": {"format": "wav"},
            "items": [
                {"id": f"line-{n:04d}", "text": f"Chaos line {n} of {token}: the batch survives."}
                for n in range(count)
            ],
        }
        with self.client() as client:
            response = client.post("/v1/jobs", json=body)
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    def job(self, job_id: str) -> dict[str, Any] | None:
        """The job as the API shows it, or None while the API cannot answer (a fault is on)."""
        try:
            with self.client() as client:
                response = client.get(f"/v1/jobs/{job_id}", timeout=5.0)
        except httpx.HTTPError:
            return None
        return response.json() if response.status_code == 200 else None

    def wait_for_progress(self, job_id: str, fraction: float, timeout: float = 60.0) -> int:
        """Block until `fraction` of the job's items succeeded; returns how many had."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if job is not None:
                done: int = job["counts"]["succeeded"]
                if done >= fraction * job["counts"]["total"]:
                    return done
                if job["status"] not in ("queued", "running"):
                    raise AssertionError(f"job ended before {fraction:.0%} succeeded: {job}")
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} never reached {fraction:.0%}:\n{self.log_tails()}")

    def wait_for_job(self, job_id: str, timeout: float = 180.0) -> dict[str, Any]:
        """Poll until the job is terminal, riding out API errors while a service is down."""
        deadline = time.monotonic() + timeout
        job: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            job = self.job(job_id) or job
            if job is not None and job["status"] not in ("queued", "running"):
                return job
            time.sleep(0.5)
        counts = job["counts"] if job else "API never answered"
        raise AssertionError(
            f"job {job_id} not terminal after {timeout:.0f}s: {counts}\n{self.log_tails()}"
        )

    def configure_emulator(self, **changes: Any) -> dict[str, Any]:
        with self.emulator() as emulator:
            response = emulator.patch("/_emulator/config", json=changes)
        assert response.status_code == 200, response.text
        config: dict[str, Any] = response.json()
        return config

    def emulator_stats(self) -> dict[str, Any]:
        with self.emulator() as emulator:
            stats: dict[str, Any] = emulator.get("/_emulator/stats").json()
        return stats

    def emulator_requests(self) -> list[dict[str, Any]]:
        with self.emulator() as emulator:
            records: list[dict[str, Any]] = emulator.get("/_emulator/requests").json()
        return records

    def worker_logs(self) -> list[Path]:
        return [proc.log_path for proc in self.workers]

    def log_tails(self, lines: int = 40) -> str:
        """The last `lines` of every process log, then of each server's own log."""
        tails = [f"--- {p.name} ({p.log_path})\n{p.tail(lines)}" for p in self.procs]
        for service in (self.redis, self.postgres, self.seaweedfs):
            if service.process is not None:
                tails.append(f"--- {service.name} server\n{service.process.log_tail(lines)}")
        return "\n".join(tails)


def _logged(proc: Proc, text: str) -> Callable[[], bool]:
    def probe() -> bool:
        try:
            return text in proc.log_path.read_text(errors="replace")
        except OSError:
            return False

    return probe


def wait_until(proc: Proc, ready: Callable[[], bool], timeout: float = READY_TIMEOUT_S) -> None:
    """Wait for `ready()`; RuntimeError with the log tail if `proc` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.popen is not None
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited while starting:\n{proc.tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{proc.name} not ready after {timeout:.0f}s:\n{proc.tail()}")
        time.sleep(0.1)


def stop_all(procs: list[Proc], grace: float = 10.0) -> None:
    """SIGTERM every process group at once, then SIGKILL whatever is left after `grace`."""
    for proc in procs:
        proc.signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in procs:
        if proc.popen is None:
            continue
        try:
            proc.popen.wait(max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            proc.signal(signal.SIGKILL)
            proc.popen.wait()


@pytest.fixture(scope="session")
def chaos_redis() -> Iterator[Service]:
    """A private redis-server (nothing on disk: a restart comes back empty)."""
    service = start_private_redis()
    yield service
    service.stop()


@pytest.fixture(scope="session")
def chaos_postgres() -> Iterator[Service]:
    """A private PostgreSQL cluster that tests may restart."""
    service = start_postgres()
    yield service
    service.stop()


@pytest.fixture
def redis_proxy(chaos_redis: Service) -> Iterator[BlackHoleProxy]:
    """A forwarding BlackHoleProxy in front of the private Redis (black-holed by the test)."""
    upstream = urlsplit(chaos_redis.url)
    assert upstream.hostname is not None and upstream.port is not None
    proxy = BlackHoleProxy(upstream.hostname, upstream.port).start()
    yield proxy
    proxy.stop()


@pytest.fixture
def redis_proxies(chaos_redis: Service) -> Iterator[list[BlackHoleProxy]]:
    """Two forwarding proxies in front of the private Redis, so one outage can end two ways."""
    upstream = urlsplit(chaos_redis.url)
    assert upstream.hostname is not None and upstream.port is not None
    proxies = [BlackHoleProxy(upstream.hostname, upstream.port).start() for _ in range(2)]
    yield proxies
    for proxy in proxies:
        proxy.stop()


@pytest.fixture
def chaos_stack(
    request: pytest.FixtureRequest,
    chaos_redis: Service,
    chaos_postgres: Service,
    seaweedfs_service: Service,
    s3_client: S3Client,
    tmp_path: Path,
) -> Iterator[ChaosStack]:
    """Emulator, API, 2 workers and beat over private Redis, PostgreSQL and SeaweedFS.

    Parametrize it indirectly with a dict to give every process extra environment. With the
    `redis_proxies` fixture in the test, every process reaches Redis through one of those.
    """
    for service in (chaos_redis, chaos_postgres, seaweedfs_service):
        service.start()  # a no-op unless an earlier test left it down
    with redis.Redis.from_url(chaos_redis.url) as client:
        client.flushall()
    database_url = create_database(chaos_postgres.url)
    bucket = f"chaos-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=bucket)
    api_port, emulator_port = free_port(), free_port()
    broker_url = chaos_redis.url
    worker_broker_urls: list[str] = []
    if "redis_proxies" in request.fixturenames:
        proxies: list[BlackHoleProxy] = request.getfixturevalue("redis_proxies")
        worker_broker_urls = [p.url(path=urlsplit(chaos_redis.url).path) for p in proxies]
        broker_url = worker_broker_urls[-1]
    env = {
        **os.environ,
        "SPEECHBATCH_DATABASE_URL": database_url,
        "SPEECHBATCH_BROKER_URL": broker_url,
        "SPEECHBATCH_STORAGE_URL": f"s3://{bucket}/out",
        "SPEECHBATCH_S3_ENDPOINT_URL": seaweedfs_service.url,
        "SPEECHBATCH_SLNG_BASE_URL": f"http://127.0.0.1:{emulator_port}/slng",
        "SLNG_API_KEY": EMULATOR_KEY,
        "EMULATOR_API_KEYS": EMULATOR_KEY,
        "SPEECHBATCH_PROVIDER_TIMEOUT_SECONDS": "3",
        "SPEECHBATCH_LEASE_SECONDS": str(LEASE_S),
        **getattr(request, "param", {}),
    }
    env.pop("SPEECHBATCH_API_URL", None)
    env.pop("SPEECHBATCH_API_KEY", None)
    stack = ChaosStack(
        env=env,
        workdir=tmp_path,
        api_url=f"http://127.0.0.1:{api_port}",
        emulator_url=f"http://127.0.0.1:{emulator_port}",
        redis=chaos_redis,
        postgres=chaos_postgres,
        seaweedfs=seaweedfs_service,
        s3_client=s3_client,
        bucket=bucket,
        database_url=database_url,
        worker_broker_urls=worker_broker_urls,
    )
    try:
        emulator = Proc(
            "emulator",
            [CLI, "emulator", "--port", str(emulator_port), "--seed", "7",
             "--latency-ms", str(EMULATOR_LATENCY_MS)],
            env,
            tmp_path,
        )  # fmt: skip
        emulator.start()
        stack.procs.append(emulator)
        # Migrated and keyed in this process (the CLI's `migrate` and `keys create` have their
        # own tests): two CLI starts less per chaos test, ~4 s each on a slow machine.
        upgrade_to_head(database_url)
        db = open_database(database_url)
        try:
            stack.api_key = create_api_key(db.sessions, "chaos")
        finally:
            db.dispose()
        api = Proc("api", [CLI, "api", "--port", str(api_port)], env, tmp_path)
        api.start()
        stack.procs.append(api)
        workers = [stack.start_worker() for _ in range(WORKERS)]
        beat = Proc("beat", [CLI, "beat", "--interval", str(SWEEP_INTERVAL_S)], env, tmp_path)
        beat.start()
        stack.procs.append(beat)
        wait_until(emulator, answers(f"{stack.emulator_url}/_emulator/health"))
        wait_until(api, answers(f"{stack.api_url}/healthz"))
        for worker in workers:
            wait_until(worker, _logged(worker, " ready."))
        yield stack
    finally:
        stop_all(stack.procs)
        if any(
            getattr(getattr(request.node, f"report_{phase}", None), "failed", False)
            for phase in ("setup", "call")
        ):
            print(f"\n===== process logs (tails) in {tmp_path}\n{stack.log_tails(60)}")
        for service in (chaos_redis, chaos_postgres, seaweedfs_service):
            with contextlib.suppress(RuntimeError):
                service.start()
        drop_database(database_url)
        _remove_bucket(s3_client, bucket)


def _remove_bucket(client: S3Client, bucket: str) -> None:
    with contextlib.suppress(Exception):  # best effort: the whole SeaweedFS goes at session end
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            keys: list[ObjectIdentifierTypeDef] = [
                {"Key": item["Key"]} for item in page.get("Contents", [])
            ]
            if keys:
                client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
        client.delete_bucket(Bucket=bucket)
