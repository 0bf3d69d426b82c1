"""Following a job until it finishes, with a live bar: done/failed/total, rate and ETA."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from jobs.status import JOB_TERMINAL


def _done(job: dict[str, Any]) -> int:
    counts = job["counts"]
    # Skipped archive items were done by an earlier job (issue 12).
    done = counts["succeeded"] + counts["failed"] + counts["canceled"]
    return int(done + counts.get("skipped", 0))


def _counts(job: dict[str, Any]) -> str:
    counts = job["counts"]
    return f"{counts['failed']} failed"


def follow(
    get_job: Callable[[], dict[str, Any]],
    *,
    console: Console,
    interval_s: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Poll until the job is terminal, drawing progress; returns the final job body.

    The job id is printed whole on its own line; the bar below it fits 80 columns.
    """
    job = get_job()
    console.print(f"job {job['id']} ({job['kind']}, {job['provider']})", soft_wrap=True)
    columns = (
        TextColumn("{task.fields[status]:<9}"),
        BarColumn(bar_width=20),
        TextColumn("{task.completed:.0f}/{task.total:.0f}"),
        TextColumn("{task.fields[failed]}"),
        TextColumn("{task.fields[rate]:.1f}/s"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    started = time.monotonic()
    first_done = _done(job)
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("", total=job["counts"]["total"], rate=0.0, status="", failed="")
        while True:
            done = _done(job)
            elapsed = max(time.monotonic() - started, 1e-6)
            bar.update(
                task,
                total=job["counts"]["total"],  # an archive job's total grows as it expands
                completed=done,
                status=job["status"][:9],
                failed=_counts(job),
                rate=(done - first_done) / elapsed,
            )
            if job["status"] in JOB_TERMINAL:
                return job
            sleep(interval_s)
            job = get_job()
