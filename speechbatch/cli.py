"""The `speechbatch` console script: server processes and admin commands.

Job commands (tts, stt, status, ...) live in `speechbatch/cli_jobs.py`; the processes these
commands start are wired in `speechbatch/processes.py`.
"""

from __future__ import annotations

import os
from typing import Any

import click

from emulator.config import config_from_options
from jobs.error_codes import ErrorCode
from jobs.migrate import upgrade_to_head
from jobs.settings import Settings, get_settings
from jobs.tenants import create_api_key
from speechbatch import processes
from speechbatch.cli_jobs import register_job_commands
from speechbatch.cli_schedules import register_schedule_commands
from speechbatch.cli_top import top
from speechbatch.cli_view import register_view_commands
from speechbatch.client import describe_mode
from speechbatch.failures import CliFailure, explain
from storage.db import open_database
from storage.publisher import CeleryPublisher
from storage.stores import open_object_store
from workers.canary import check_worker, default_node


class Speechbatch(click.Group):
    """The command group: expected failures end in one sentence with a code, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            failure = explain(exc)
            if failure is None:
                raise
            click.echo(str(failure), err=True)
            ctx.exit(failure.exit_code)

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        try:
            mode = describe_mode(get_settings())
        except Exception as exc:  # --help must work with broken settings, and say so
            failure = explain(exc)
            mode = str(failure) if failure else f"settings unreadable ({exc})"
        formatter.write_paragraph()
        formatter.write_text(
            f"Jobs go to: {mode}. Set SPEECHBATCH_API_URL (environment or ./.env) to use a "
            "server; SPEECHBATCH_HOME moves local mode's state."
        )


def require_broker(settings: Settings, why: str) -> str:
    """The broker URL, or the one-sentence failure saying why this command needs it."""
    if not settings.broker_url:
        raise CliFailure(ErrorCode.BROKER_UNAVAILABLE, f"SPEECHBATCH_BROKER_URL is not set; {why}.")
    return settings.broker_url


@click.group(cls=Speechbatch)
@click.version_option(package_name="speechbatch")
def main() -> None:
    """speechbatch: batch text-to-speech and speech-to-text over hosted providers."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
def api(host: str, port: int) -> None:
    """Serve the REST API."""
    settings = get_settings()
    require_broker(settings, "the API hands work to workers through Redis")
    processes.run_api(settings, host=host, port=port)


@main.command()
@click.option(
    "--concurrency",
    default=None,
    type=click.IntRange(1, 512),
    help="Worker threads  [default: the largest provider concurrency cap plus half again, at "
    "least 4 more, e.g. 24 for 16; the shared throttle keeps provider calls at the cap]",
)
@click.option(
    "--name",
    default="celery@%h",
    show_default=True,
    help="Celery node name, unique per worker (%h = host name); `worker-check --node` uses it.",
)
@click.option(
    "--events/--no-events",
    default=None,
    help="Send Celery task events (Celery's -E), for Flower and `celery events`  "
    "[default: SPEECHBATCH_TASK_EVENTS, off]",
)
@click.option(
    "--beat",
    "with_beat",
    is_flag=True,
    help="Also run beat (sweeps, schedules, webhooks) in this process, for small deployments; "
    "several may run, a lease lets one work at a time.",
)
@click.option(
    "--beat-interval",
    default=5.0,
    show_default=True,
    type=click.FloatRange(0.1, 600),
    help="Seconds between beat's ticks with --beat.",
)
@click.option(
    "--metrics-port",
    default=None,
    type=click.IntRange(0, 65535),
    help="Serve this worker's Prometheus metrics on this port, one per worker process  "
    "[default: SPEECHBATCH_WORKER_METRICS_PORT, 0 = off]",
)
def worker(
    concurrency: int | None,
    name: str,
    events: bool | None,
    with_beat: bool,
    beat_interval: float,
    metrics_port: int | None,
) -> None:
    """Run a Celery worker that processes items."""
    settings = get_settings()
    require_broker(settings, "workers need a Redis broker")
    threads = processes.worker_threads(settings, concurrency)
    processes.run_worker(
        settings,
        threads=threads,
        name=name,
        events=settings.task_events if events is None else events,
        beat_interval_s=beat_interval if with_beat else 0.0,
        metrics_port=settings.worker_metrics_port if metrics_port is None else metrics_port,
    )


@main.command("worker-check")
@click.option(
    "--node",
    default=None,
    help="Worker node name to check  [default: celery@<this host>, the local worker]",
)
@click.option(
    "--timeout",
    default=10.0,
    show_default=True,
    type=click.FloatRange(0.1, 3600),
    help="Seconds to wait for the worker to run the canary.",
)
def worker_check(node: str | None, timeout: float) -> None:
    """Run a canary task on one worker: exit 0 if it ran within --timeout, else 1."""
    settings = get_settings()
    publisher = CeleryPublisher(require_broker(settings, "workers listen on Redis"))
    try:
        result = check_worker(publisher.app, publisher.redis, node or default_node(), timeout)
    finally:
        publisher.close()
    click.echo(result.message, err=not result.ok)
    raise SystemExit(0 if result.ok else 1)


@main.command()
@click.option(
    "--interval",
    default=5.0,
    show_default=True,
    type=click.FloatRange(0.1, 600),
    help="Seconds between sweeps.",
)
@click.option(
    "--metrics-port",
    default=None,
    type=click.IntRange(0, 65535),
    help="Serve beat's Prometheus metrics on this port  "
    "[default: SPEECHBATCH_BEAT_METRICS_PORT, 0 = off]",
)
def beat(interval: float, metrics_port: int | None) -> None:
    """Run beat: sweeps (re-publish due and stale items, recover expired leases), schedules,
    webhooks and upload retention. Two may run: a lease lets one work at a time."""
    settings = get_settings()
    require_broker(settings, "beat publishes to Redis")
    processes.run_beat(
        settings,
        interval_s=interval,
        metrics_port=settings.beat_metrics_port if metrics_port is None else metrics_port,
    )


@main.command()
def migrate() -> None:
    """Upgrade the database schema to the newest version and create the bucket if missing."""
    settings = get_settings()
    upgrade_to_head(settings.database_url)
    click.echo("database is at the newest schema version")
    store = open_object_store(settings.storage_url, endpoint_url=settings.s3_endpoint_url)
    try:
        store.ensure_exists()
        store.check()
    finally:
        store.close()
    click.echo(f"storage is ready: {settings.storage_url}")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=9100, show_default=True, type=int)
@click.option("--latency-ms", default=0.0, show_default=True, type=float)
@click.option("--latency-jitter-ms", default=0.0, show_default=True, type=float)
@click.option(
    "--ttfb-ms",
    default=0.0,
    show_default=True,
    type=float,
    help="When a streamed answer's first audio chunk goes out; the rest is paced to the latency.",
)
@click.option(
    "--realtime-factor",
    default=0.0,
    show_default=True,
    type=float,
    help="Stream audio no faster than this many seconds of it per second (0 = no pacing).",
)
@click.option(
    "--concurrency",
    default=0,
    show_default=True,
    type=int,
    help="In-flight requests allowed per API key (0 = unlimited); more get 429.",
)
@click.option(
    "--rate-limit-rps",
    default=0.0,
    show_default=True,
    type=float,
    help="Requests per second allowed per API key (0 = unlimited); more get 429.",
)
@click.option("--fault-rate", default=0.0, show_default=True, type=click.FloatRange(0, 1))
@click.option("--fault-kinds", default="500,503,429,timeout", show_default=True)
@click.option("--retry-after-s", default=1.0, show_default=True, type=float)
@click.option(
    "--timeout-s",
    default=30.0,
    show_default=True,
    type=float,
    help="How long a 'timeout' fault holds the request.",
)
@click.option("--max-text-chars", default=2000, show_default=True, type=int)
@click.option("--seed", default=None, type=int)
@click.option(
    "--api-key",
    "api_keys",
    multiple=True,
    help="Accepted key (repeatable; or EMULATOR_API_KEYS); none = any non-empty key.",
)
def emulator(
    host: str, port: int, fault_kinds: str, api_keys: tuple[str, ...], **values: Any
) -> None:
    """Serve the provider emulator (SLNG under /slng, Smallest under /smallest)."""
    config = config_from_options(
        fault_kinds=fault_kinds, api_keys=api_keys, environ=dict(os.environ), **values
    )
    processes.run_emulator(host, port, config)


@main.group()
def keys() -> None:
    """Manage API keys."""


@keys.command("create")
@click.option("--tenant", required=True, help="Tenant name; created when new.")
def keys_create(tenant: str) -> None:
    """Create an API key for TENANT and print it (it is shown only once)."""
    settings = get_settings()
    if settings.database_url.startswith("sqlite"):
        upgrade_to_head(settings.database_url)  # embedded default: make the file usable
    db = open_database(settings.database_url)
    try:
        click.echo(create_api_key(db.sessions, tenant))
    finally:
        db.dispose()


register_job_commands(main)
register_view_commands(main)
main.add_command(top)
register_schedule_commands(main)
