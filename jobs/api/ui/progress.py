"""What the dashboard says about a job's progress: done share, rate (items/s) and ETA.

Everything comes from the job row's counters and timestamps (never a scan of its items),
so the jobs list and the live endpoints cost one row per job.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from jobs.models import Job
from jobs.status import JOB_TERMINAL


def done_count(job: Job) -> int:
    return job.succeeded + job.failed + job.canceled + job.skipped


def percent(job: Job) -> float:
    """Share of items finished (any outcome), 0-100; an empty job that finished is 100."""
    if job.total <= 0:
        return 100.0 if job.status in JOB_TERMINAL else 0.0
    return round(100.0 * min(done_count(job), job.total) / job.total, 1)


def rate(job: Job, now: datetime) -> float | None:
    """Items finished per second since the job started (None before anything finished)."""
    if job.started_at is None:
        return None
    end = job.finished_at or now
    elapsed = (end - job.started_at).total_seconds()
    done = job.succeeded + job.failed
    if done <= 0 or elapsed <= 0:
        return None
    return done / elapsed


def eta_seconds(job: Job, now: datetime) -> float | None:
    """Seconds until the rest is done at the rate so far (None: finished or unknown)."""
    if job.status in JOB_TERMINAL:
        return None
    per_s = rate(job, now)
    if per_s is None:
        return None
    return max(0.0, (job.total - done_count(job)) / per_s)


def format_rate(per_s: float | None) -> str:
    if per_s is None:
        return "-"
    return f"{per_s:.1f}/s" if per_s >= 1 else f"{per_s * 60:.1f}/min"


def format_rps(per_s: float | None) -> str:
    """A throttle's request rate: `8/s`, `25/min` (a per-minute limit), or no limit."""
    if per_s is None:
        return "no limit"
    return f"{per_s:.3g}/s" if per_s >= 1 else f"{per_s * 60:.3g}/min"


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def job_progress(job: Job, now: datetime) -> dict[str, Any]:
    """The live part of a job, as the pages render it and the poll endpoints send it."""
    per_s = rate(job, now)
    eta = eta_seconds(job, now)
    return {
        "id": job.id,
        "status": str(job.status),
        "terminal": job.status in JOB_TERMINAL,
        "counts": {
            "total": job.total,
            "queued": job.queued,
            "running": job.running,
            "succeeded": job.succeeded,
            "failed": job.failed,
            "canceled": job.canceled,
            "skipped": job.skipped,
        },
        "percent": percent(job),
        "percent_text": f"{percent(job):g} %",
        "rate": per_s,
        "rate_text": format_rate(per_s),
        "eta_s": eta,
        "eta_text": format_duration(eta),
        "started_at": format_when(job.started_at),
        "finished_at": format_when(job.finished_at),
    }


def format_when(value: datetime | None) -> str:
    """A timestamp as the pages print it (UTC, to the second), or "-"."""
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "-"
