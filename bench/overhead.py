"""Orchestration overhead: the full pipeline at provider latency 0 vs the bare work it does.

The reference (issue 7) is the work alone: the same emulator call and S3 PUT, for the same
lines, from as many threads of one process, with no queue and no database. On a small
machine the S3 server, the emulator and boto3 share the cores with everything else, so this
bounds what any orchestration could reach. speechbatch's item claims the item, calls the
emulator (0 ms), converts the audio, PUTs it to S3 and records the outcome, in one default
worker with the threads pool at the same concurrency. Goal: >= 0.6 x the bare work.

The two alternate for `--rounds` rounds (3 by default), each on lines of its own, and the
median ratio is the result: on a shared two-core machine one pair of runs moved between 0.4
and 0.7. Bare Celery no-ops (the task INCRs a counter) are printed too, as a measure of the
machine's speed in this run; CPU per item of each process shows where the time goes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import redis

from bench.noop_app import COUNTER
from bench.noop_app import app as noop_app
from bench.throughput import CLI, KEY, start, wait_http, wait_warm
from jobs.catalog import PROVIDERS
from jobs.ledger import ItemLedger
from jobs.migrate import upgrade_to_head
from jobs.schemas import JobCreate
from jobs.service import get_job, submit_job
from jobs.settings import Settings
from jobs.tenants import ensure_tenant
from storage.db import open_database
from storage.publisher import CeleryPublisher
from storage.stores import open_object_store
from tests.services import free_port
from workers.providers.registry import build_provider


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def weed_pid(endpoint_url: str | None) -> int | None:
    """The SeaweedFS server the run writes to, when it is on this machine."""
    port = f"-s3.port={urlsplit(endpoint_url or '').port}".encode()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv[0].endswith(b"weed") and port in argv:
                return int(proc.name)
    return None


class CpuMeter:
    """CPU used by some processes between `begin()` and `end()`, per item."""

    def __init__(self, **pids: int | None) -> None:
        self.pids = {name: pid for name, pid in pids.items() if pid is not None}
        self.start: dict[str, float] = {}
        self.used: dict[str, float] = {}

    def begin(self) -> None:
        self.start = {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    def end(self) -> None:
        self.used = {name: cpu_seconds(pid) - self.start[name] for name, pid in self.pids.items()}

    def per_item(self, items: int) -> str:
        return ", ".join(f"{name} {used * 1000 / items:.2f}" for name, used in self.used.items())


def bare_celery_rate(
    items: int, concurrency: int, env: dict[str, str], logs: Path
) -> tuple[float, CpuMeter]:
    client = redis.Redis.from_url(env["SPEECHBATCH_BROKER_URL"])
    client.delete(COUNTER, "bench-noop")
    with noop_app.producer_or_acquire() as producer:
        for n in range(items):
            noop_app.send_task("bench.noop", args=[n], producer=producer)
    argv = [
        str(Path(sys.executable).parent / "celery"),
        "-A",
        "bench.noop_app",
        "worker",
        "--pool=threads",
        f"--concurrency={concurrency}",
        "--loglevel=WARNING",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    worker = start(argv, env, logs / "noop-worker.log")
    meter = CpuMeter(worker=worker.pid)
    try:
        while int(client.get(COUNTER) or 0) == 0:
            time.sleep(0.005)
        began = time.perf_counter()
        meter.begin()
        while int(client.get(COUNTER) or 0) < items:
            time.sleep(0.005)
        meter.end()
        return (items - 1) / (time.perf_counter() - began), meter
    finally:
        worker.terminate()
        worker.wait(15)


def bare_work_rate(lines: list[str], concurrency: int, emulator: int) -> tuple[float, CpuMeter]:
    """The work itself with no orchestration: `concurrency` threads of this process speak the
    job's own `lines` (the emulator's audio grows with the text) through the same adapter and
    PUT each result to the same S3, nothing else."""
    settings = Settings()
    store = open_object_store(settings.storage_url, endpoint_url=settings.s3_endpoint_url)
    store.ensure_exists()
    with httpx.Client(limits=httpx.Limits(max_connections=concurrency)) as client:
        provider = build_provider(
            "slng",
            client=client,
            base_url=settings.provider_base_url("slng"),
            api_key=settings.provider_api_key("slng"),
        )

        model = PROVIDERS["slng"].default_model("tts") or ""

        def one(n: int) -> None:
            audio = provider.synthesize(lines[n], model=model, voice=None, options={})
            store.put_bytes(f"bare-work/{n}.wav", audio.audio, "audio/wav")

        meter = CpuMeter(
            bench=os.getpid(), emulator=emulator, s3=weed_pid(settings.s3_endpoint_url)
        )
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(one, range(min(len(lines), 50))))  # warm connections
            began = time.perf_counter()
            meter.begin()
            list(pool.map(one, range(len(lines))))
            meter.end()
        return len(lines) / (time.perf_counter() - began), meter


def pipeline_rate(
    lines: list[str], concurrency: int, env: dict[str, str], logs: Path, emulator: int
) -> tuple[float, CpuMeter]:
    settings = Settings()
    ledger = ItemLedger(
        open_database(settings.database_url), CeleryPublisher(str(settings.broker_url))
    )
    sessions = ledger.db.sessions
    tenant = ensure_tenant(sessions, "overhead").id
    worker = start([CLI, "worker", "--concurrency", str(concurrency)], env, logs / "worker.log")
    meter = CpuMeter(worker=worker.pid, emulator=emulator, s3=weed_pid(settings.s3_endpoint_url))
    try:
        wait_warm(logs / "worker.log")
        meter.begin()
        body = JobCreate.model_validate(
            {"kind": "tts", "provider": "slng", "items": [{"text": line} for line in lines]}
        )
        job = submit_job(ledger, tenant, body, idempotency_key=None, max_items=len(lines)).job
        while (job := get_job(sessions, tenant, job.id)).status in ("queued", "running"):
            time.sleep(0.1)
        meter.end()
        assert job.status == "succeeded" and job.started_at and job.finished_at
        return len(lines) / (job.finished_at - job.started_at).total_seconds(), meter
    finally:
        worker.terminate()
        worker.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="bare work / pipeline pairs")
    args = parser.parse_args()
    upgrade_to_head(Settings().database_url)
    logs = Path(tempfile.mkdtemp(prefix="sb-overhead-"))
    port = free_port()
    env = {
        **os.environ,
        "SLNG_API_KEY": KEY,
        "EMULATOR_API_KEYS": KEY,
        "SPEECHBATCH_SLNG_BASE_URL": f"http://127.0.0.1:{port}/slng",
        # Overhead, not throttling, is measured: the shared cap is the thread count.
        "SPEECHBATCH_PROVIDER_LIMITS": f"slng={args.concurrency}",
    }
    emulator = start([CLI, "emulator", "--port", str(port)], env, logs / "emulator.log")
    rounds: list[tuple[float, CpuMeter, float, CpuMeter]] = []
    try:
        wait_http(f"http://127.0.0.1:{port}/_emulator/health")
        bare, bare_cpu = bare_celery_rate(args.items, args.concurrency, env, logs)
        os.environ.update(env)
        for _ in range(args.rounds):
            # One set of lines for both: unique to the round, as a repeated line is reused.
            run = uuid.uuid4().hex[:8]
            lines = [f"Overhead line {n} of {run}." for n in range(args.items)]
            work, work_cpu = bare_work_rate(lines, args.concurrency, emulator.pid)
            ours, our_cpu = pipeline_rate(lines, args.concurrency, env, logs, emulator.pid)
            rounds.append((work, work_cpu, ours, our_cpu))
            httpx.delete(f"http://127.0.0.1:{port}/_emulator/requests")
    finally:
        emulator.terminate()
        emulator.wait(15)
    print(f"overhead: N={args.items}, threads pool, concurrency {args.concurrency}, latency 0")
    print(
        f"  bare Celery no-op {bare:8.1f} tasks/s, CPU ms per task: {bare_cpu.per_item(args.items)}"
    )
    for n, (work, work_cpu, ours, our_cpu) in enumerate(rounds, 1):
        ratio = ours / work
        print(f"  round {n}: bare work {work:6.1f}, speechbatch {ours:6.1f} items/s = {ratio:.2f}")
        print(f"    CPU ms per item: bare work   {work_cpu.per_item(args.items)}")
        print(f"    CPU ms per item: speechbatch {our_cpu.per_item(args.items)}")
    ratios = sorted(ours / work for work, _, ours, _ in rounds)
    print(
        f"  median ratio vs bare work {statistics.median(ratios):.2f} over {len(ratios)} rounds "
        f"({', '.join(f'{r:.2f}' for r in ratios)}; goal >= 0.6); "
        f"speechbatch vs bare Celery {statistics.median(r[2] for r in rounds) / bare:.2f}"
    )


if __name__ == "__main__":
    main()
