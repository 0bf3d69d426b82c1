"""The deployed shape as real processes: emulator, API, worker(s) and beat on loopback.

Each process is started through the `speechbatch` console script with the environment a
deployment would give it, logs to a file, and is stopped (or SIGKILLed by chaos tests).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

from jobs.migrate import upgrade_to_head
from jobs.status import JOB_TERMINAL
from jobs.tenants import create_api_key
from storage.db import open_database
from tests.services import create_database, drop_database, free_port

CLI = str(Path(sys.executable).parent / "speechbatch")
EMULATOR_KEY = "sk-emulator-e2e-0123456789"


class Proc:
    """A child process in its own session, logging to `log_path`."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], workdir: Path) -> None:
        self.name, self.argv, self.env = name, argv, env
        self.log_path = workdir / f"{name}.log"
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self, ready: Callable[[], bool] | None = None, timeout: float = 60.0) -> None:
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                self.argv,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if ready is not None:
            self.wait_ready(ready, timeout)

    def wait_ready(self, ready: Callable[[], bool], timeout: float = 60.0) -> None:
        assert self.popen is not None
        deadline = time.monotonic() + timeout
        while not ready():
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited while starting:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not ready after {timeout}s:\n{self.tail()}")
            time.sleep(0.1)

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def signal(self, sig: int) -> None:
        if self.popen is not None and self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, sig)

    def stop(self, grace: float = 10.0) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        self.signal(signal.SIGTERM)
        try:
            self.popen.wait(grace)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.popen.wait()


def answers(url: str) -> Callable[[], bool]:
    def probe() -> bool:
        try:
            return httpx.get(url, timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    return probe


@dataclass
class Stack:
    env: dict[str, str]
    workdir: Path
    api_url: str
    emulator_url: str
    api_key: str = ""
    procs: list[Proc] = field(default_factory=list)

    def run_cli(
        self, *args: str, extra_env: dict[str, str] | None = None, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [CLI, *args],
            env={**self.env, **(extra_env or {})},
            text=True,
            capture_output=True,
            timeout=timeout,
            check=False,
        )

    def spawn(self, name: str, *args: str, ready: Callable[[], bool] | None = None) -> Proc:
        proc = Proc(name, [CLI, *args], self.env, self.workdir)
        proc.start(ready)
        self.procs.append(proc)
        return proc

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.api_url, timeout=30.0, headers={"Authorization": f"Bearer {self.api_key}"}
        )

    def upload(self, filename: str, data: bytes) -> str:
        """POST /v1/uploads one recording; its `source` for an STT item."""
        with self.client() as client:
            response = client.post("/v1/uploads", files={"file": (filename, data)})
        assert response.status_code == 201, response.text
        return str(response.json()["source"])

    def emulator(self) -> httpx.Client:
        return httpx.Client(base_url=self.emulator_url, timeout=30.0)

    def wait_for_job(self, job_id: str, timeout: float = 180.0) -> dict[str, Any]:
        """Poll like a client until the job is terminal (AssertionError with logs if not)."""
        deadline = time.monotonic() + timeout
        with self.client() as client:
            while True:
                job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
                if job["status"] in JOB_TERMINAL:
                    return job
                if time.monotonic() > deadline:
                    logs = "\n".join(f"--- {p.name}\n{p.tail()}" for p in self.procs)
                    raise AssertionError(f"job still {job['status']}: {job['counts']}\n{logs}")
                time.sleep(0.5)

    def items(self, job_id: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        cursor = None
        with self.client() as client:
            while True:
                params = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
                page = client.get(f"/v1/jobs/{job_id}/items", params=params).json()
                found += page["items"]
                cursor = page["next_cursor"]
                if not cursor:
                    return found

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()


@contextlib.contextmanager
def api_process(database_url: str, redis_url: str, workdir: Path) -> Iterator[str]:
    """A real `speechbatch api` on `database_url` (already migrated), the given Redis and a
    local object folder under `workdir`; yields its base URL and stops it afterwards."""
    port = free_port()
    env = {
        **os.environ,
        "SPEECHBATCH_DATABASE_URL": database_url,
        "SPEECHBATCH_BROKER_URL": redis_url,
        "SPEECHBATCH_STORAGE_URL": f"file://{workdir / 'objects'}",
    }
    proc = Proc("api", [CLI, "api", "--port", str(port)], env, workdir)
    url = f"http://127.0.0.1:{port}"
    proc.start(ready=answers(f"{url}/healthz"))
    try:
        yield url
    finally:
        proc.stop()


@contextlib.contextmanager
def running_stack(
    database_url: str,
    redis_url: str,
    s3_endpoint_url: str,
    s3_client: Any,
    workdir: Path,
    extra_env: dict[str, str] | None = None,
) -> Iterator[Stack]:
    """Emulator, API, one worker (8 threads) and beat over the given database, an emptied
    Redis and a new bucket, every vendor pointed at the emulator; stopped on exit."""
    bucket = f"e2e-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=bucket)
    redis.Redis.from_url(redis_url).flushdb()
    api_port, emulator_port = free_port(), free_port()
    emulator_url = f"http://127.0.0.1:{emulator_port}"
    env = {
        **os.environ,
        "SPEECHBATCH_DATABASE_URL": database_url,
        "SPEECHBATCH_BROKER_URL": redis_url,
        "SPEECHBATCH_STORAGE_URL": f"s3://{bucket}/out",
        "SPEECHBATCH_S3_ENDPOINT_URL": s3_endpoint_url,
        "SPEECHBATCH_SLNG_BASE_URL": f"{emulator_url}/slng",
        "SPEECHBATCH_SLNG_BATCH_BASE_URL": f"{emulator_url}/slng-batch",
        "SLNG_API_KEY": EMULATOR_KEY,
        "SPEECHBATCH_SMALLEST_BASE_URL": f"{emulator_url}/smallest",
        "SMALLEST_API_KEY": EMULATOR_KEY,
        **{
            f"SPEECHBATCH_{vendor.upper()}_BASE_URL": f"{emulator_url}/{vendor}"
            for vendor in ("deepgram", "openai", "elevenlabs")
        },
        "DEEPGRAM_API_KEY": EMULATOR_KEY,
        "OPENAI_API_KEY": EMULATOR_KEY,
        "ELEVENLABS_API_KEY": EMULATOR_KEY,
        "EMULATOR_API_KEYS": EMULATOR_KEY,
        "SPEECHBATCH_PROVIDER_TIMEOUT_SECONDS": "3",
        "SPEECHBATCH_LEASE_SECONDS": "30",
        **(extra_env or {}),
    }
    env.pop("SPEECHBATCH_API_URL", None)
    stack = Stack(
        env=env, workdir=workdir, api_url=f"http://127.0.0.1:{api_port}", emulator_url=emulator_url
    )
    try:
        # Migrated and keyed in this process (the CLI's own `migrate` and `keys create` have
        # their tests); the four processes then start side by side, ~3 s less per test.
        upgrade_to_head(database_url)
        db = open_database(database_url)
        try:
            stack.api_key = create_api_key(db.sessions, "e2e")
        finally:
            db.dispose()
        emulator = stack.spawn("emulator", "emulator", "--port", str(emulator_port), "--seed", "7")
        api = stack.spawn("api", "api", "--port", str(api_port))
        stack.spawn("worker", "worker", "--concurrency", "8")
        stack.spawn("beat", "beat", "--interval", "1")
        emulator.wait_ready(answers(f"{stack.emulator_url}/_emulator/health"))
        api.wait_ready(answers(f"{stack.api_url}/healthz"))
        yield stack
    finally:
        stack.stop()


@contextlib.contextmanager
def running_postgres_stack(
    postgres_admin_url: str,
    redis_url: str,
    s3_endpoint_url: str,
    s3_client: Any,
    workdir: Path,
    extra_env: dict[str, str] | None = None,
) -> Iterator[Stack]:
    """`running_stack` on a new PostgreSQL database of its own, dropped on exit."""
    database_url = create_database(postgres_admin_url)
    try:
        with running_stack(
            database_url, redis_url, s3_endpoint_url, s3_client, workdir, extra_env
        ) as running:
            yield running
    finally:
        drop_database(database_url)
