"""`speechbatch top`: a live terminal view of a server, for people without a browser on it.

Each frame is three reads of the API: the queued and running jobs (`GET /v1/jobs?status=`)
and every provider credential's throttle and circuit with the queue depth
(`GET /v1/providers`). A job's rate is measured as the progress bar measures it (items done
since this command first saw the job, over the time since); until there are two frames (and
for `--once` and `--json`) it is the job's items done over the time since it started. The ETA
is what is left at that rate. `top` needs the API (SPEECHBATCH_API_URL, SPEECHBATCH_API_KEY):
local mode runs its items only inside the command that submitted them, so there is nothing
to watch from another terminal.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import click
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from jobs.error_codes import ErrorCode
from jobs.settings import get_settings
from speechbatch.client import HttpBackend
from speechbatch.failures import CliFailure

IN_FLIGHT = ("running", "queued")
MAX_JOBS = 50  # per status, per frame: a frame is bounded whatever the backlog


def items_done(job: dict[str, Any]) -> int:
    """Items that need no more work (skipped archive items were done by an earlier job)."""
    c = job["counts"]
    return int(c["succeeded"] + c["failed"] + c["canceled"] + c.get("skipped", 0))


@dataclass
class Rates:
    """Each job's first sighting by this command, to measure its rate between frames."""

    clock: Callable[[], float] = time.monotonic
    first: dict[str, tuple[float, int]] = field(default_factory=dict)

    def rate(self, job: dict[str, Any], now: datetime) -> float | None:
        """Items a second, or None when nothing has been done to measure."""
        done, at = items_done(job), self.clock()
        seen_at, seen_done = self.first.setdefault(job["id"], (at, done))
        if at - seen_at >= 1.0 and done > seen_done:
            return (done - seen_done) / (at - seen_at)
        started = job.get("started_at")
        if not started or not done:
            return None
        began = datetime.fromisoformat(started)
        began = began if began.tzinfo else began.replace(tzinfo=UTC)  # the DB's times are UTC
        elapsed = (now - began).total_seconds()
        return done / elapsed if elapsed > 0 else None


def snapshot(backend: HttpBackend, rates: Rates) -> dict[str, Any]:
    """One frame's data: jobs in flight with rate and ETA, providers, queue depth."""
    now = datetime.now(UTC)
    jobs = []
    for status in IN_FLIGHT:
        page = backend.call("GET", "/v1/jobs", params={"status": status, "limit": MAX_JOBS})
        jobs.extend(page["jobs"])
    providers = backend.call("GET", "/v1/providers")
    rows = []
    for job in jobs:
        total, done = int(job["counts"]["total"]), items_done(job)
        rate = rates.rate(job, now)
        left = max(total - done, 0)
        rows.append(
            {
                "id": job["id"],
                "kind": job["kind"],
                "provider": job["provider"],
                "status": job["status"],
                "done": done,
                "failed": int(job["counts"]["failed"]),
                "total": total,
                "rate_per_s": round(rate, 3) if rate else None,
                "eta_s": round(left / rate, 1) if rate else None,
            }
        )
    return {
        "read_at": now.isoformat(),
        "api": backend.where,
        "queue_depth": providers["queue_depth"],
        "jobs": rows,
        "providers": providers["providers"],
    }


def _bar(done: int, total: int, width: int = 20) -> str:
    filled = round(width * done / total) if total else 0
    return "█" * filled + "░" * (width - filled) + f" {100 * done / total if total else 0:3.0f}%"


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def _limit(current: float | None, configured: float | None, unit: str = "") -> str:
    if configured is None:
        return "-"
    shown = f"{current:g}{unit}" if current is not None else "?"
    return shown if current == configured else f"{shown} of {configured:g}{unit}"


def render(frame: dict[str, Any]) -> Group:
    """The frame as rich renderables: a header line, the jobs table, the providers table."""
    depth = frame["queue_depth"]
    header = Text.assemble(
        ("speechbatch top", "bold"),
        f"  {frame['api']}  {frame['read_at'][:19].replace('T', ' ')} UTC  ",
        f"queue depth {depth if depth is not None else 'unknown'}",
    )
    jobs = Table(title="jobs in flight", title_justify="left", expand=True)
    for column in ("id", "kind", "provider", "status", "progress", "done/total", "failed"):
        jobs.add_column(column, no_wrap=column == "id")
    jobs.add_column("rate", justify="right")
    jobs.add_column("ETA", justify="right")
    for job in frame["jobs"]:
        rate = job["rate_per_s"]
        jobs.add_row(
            job["id"],
            job["kind"],
            job["provider"],
            job["status"],
            _bar(job["done"], job["total"]),
            f"{job['done']}/{job['total']}",
            str(job["failed"]),
            f"{rate:.1f}/s" if rate else "-",
            _eta(job["eta_s"]),
        )
    if not frame["jobs"]:
        jobs.add_row("(none)", *[""] * 8)
    providers = Table(title="providers", title_justify="left", expand=True)
    for column in ("throttle", "credential", "key", "in flight", "cap", "rate", "circuit"):
        providers.add_column(column)
    for p in frame["providers"]:
        circuit = p["circuit"] if not p.get("error") else f"{p['circuit']} ({p['error']})"
        style = {"open": "red", "half-open": "yellow"}.get(p["circuit"], "")
        providers.add_row(
            p["limits_name"],
            p["credential"][:8],
            "set" if p["configured"] else "-",
            str(p["in_flight"]),
            _limit(p["effective_concurrency"], p["max_concurrency"]),
            _limit(p["effective_rps"], p["max_rps"], "/s"),
            Text(circuit, style=style),
        )
    return Group(header, jobs, providers)


def _stdout() -> Console:
    # A pipe or a log gets rows wide enough for whole job ids (a terminal keeps its width).
    return Console(width=None if sys.stdout.isatty() else max(Console().width, 132))


def _backend() -> HttpBackend:
    settings = get_settings()
    if not settings.api_url:
        raise CliFailure(
            ErrorCode.INVALID_CONFIGURATION,
            "`speechbatch top` watches a server: set SPEECHBATCH_API_URL and "
            "SPEECHBATCH_API_KEY (local mode runs items only inside the command that "
            "submitted them, so there is nothing to watch from here).",
        )
    key = settings.api_key.get_secret_value() if settings.api_key else None
    return HttpBackend(settings.api_url, key)


@click.command()
@click.option(
    "--interval",
    default=2.0,
    show_default=True,
    type=click.FloatRange(0.5, 3600),
    help="Seconds between refreshes.",
)
@click.option("--once", is_flag=True, help="Print one frame and exit.")
@click.option("--json", "as_json", is_flag=True, help="Print one frame as JSON and exit.")
def top(interval: float, once: bool, as_json: bool) -> None:
    """Watch a server live: jobs in flight (progress, rate, ETA), provider throttles and
    circuits, queue depth. Ctrl-C stops."""
    backend, rates = _backend(), Rates()
    try:
        if as_json or once:
            frame = snapshot(backend, rates)
            if as_json:
                click.echo(json.dumps(frame, indent=2))
            else:
                _stdout().print(render(frame))
            return
        with Live(render(snapshot(backend, rates)), auto_refresh=False) as live:
            while True:
                time.sleep(interval)
                live.update(render(snapshot(backend, rates)), refresh=True)
    except KeyboardInterrupt:
        return
    finally:
        backend.close()
