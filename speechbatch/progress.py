"""Following a job until it finishes, with a live bar: done/failed/total, rate and ETA."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from jobs.status import JOB_TERMINAL


def _done(job: dict[str, Any]) -> int:
    counts = job["counts"]
    return int(counts["succeeded"] + counts["failed"] + counts["canceled"])


def _describe(job: dict[str, Any]) -> str:
    counts = job["counts"]
    return (
        f"{job['id'][:16]} {job['status']}: {counts['succeeded']} ok, "
        f"{counts['failed']} failed, {counts['queued'] + counts['running']} to go"
    )


def follow(
    get_job: Callable[[], dict[str, Any]],
    *,
    console: Console,
    interval_s: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Poll until the job is terminal, drawing progress; returns the final job body."""
    job = get_job()
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.completed:.0f}/{task.total:.0f}"),
        TextColumn("{task.fields[rate]:.1f} items/s"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    started = time.monotonic()
    first_done = _done(job)
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(_describe(job), total=job["counts"]["total"], rate=0.0)
        while True:
            done = _done(job)
            elapsed = max(time.monotonic() - started, 1e-6)
            bar.update(
                task, completed=done, description=_describe(job), rate=(done - first_done) / elapsed
            )
            if job["status"] in JOB_TERMINAL:
                return job
            sleep(interval_s)
            job = get_job()
