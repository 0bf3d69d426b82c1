"""Writing a finished job's outputs to a folder, and the summary printed after a job."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from rich.console import Console
from rich.table import Table

from jobs.error_codes import ErrorCode
from jobs.errors import ApiError
from jobs.status import JOB_TERMINAL
from speechbatch.client import Backend
from speechbatch.failures import EXIT_ITEMS_FAILED, CliFailure

SHOWN_FAILURES = 20


def require_finished(job: dict[str, Any]) -> None:
    """Refuse to download a job that is still running (its outputs are not all there)."""
    if job["status"] not in JOB_TERMINAL:
        counts = job["counts"]
        raise CliFailure(
            ErrorCode.JOB_NOT_FINISHED,
            f"job {job['id']} is {job['status']} ({counts['succeeded']} of {counts['total']} "
            f"items done); run `speechbatch wait {job['id']}` first.",
            EXIT_ITEMS_FAILED,
        )


def download_outputs(backend: Backend, job: dict[str, Any], target: Path) -> list[dict[str, Any]]:
    """Write every output file of a finished job into `target`; returns the failed items."""
    require_finished(job)
    target.mkdir(parents=True, exist_ok=True)
    failed = []
    for item in backend.items(job["id"]):
        if item["status"] == "failed":
            failed.append(item)
        for file in (item.get("output") or {}).get("files", []):
            name = file["key"].rsplit("/", 1)[-1]
            _save(backend, target / name, file["url"] or file["key"], _api_route(job, item, name))
    return failed


def _api_route(job: dict[str, Any], item: dict[str, Any], name: str) -> str:
    """The API's own output route for one file: used when a presigned URL does not work."""
    fmt = name.rsplit(".", 1)[-1]
    return f"/v1/jobs/{job['id']}/items/{quote(item['id'], safe='')}/output?format={fmt}"


def _save(backend: Backend, destination: Path, location: str, fallback: str) -> None:
    try:
        _write(backend, destination, location)
    except (ApiError, httpx.TransportError):
        # A presigned URL signed for an address this machine cannot reach (an in-network
        # S3 endpoint) or refused by the store: the API streams the same object.
        if not location.startswith(("http://", "https://")):
            raise
        _write(backend, destination, fallback)


def _write(backend: Backend, destination: Path, location: str) -> None:
    with destination.open("wb") as handle:
        for chunk in backend.fetch(location):
            handle.write(chunk)


def print_summary(
    console: Console, job: dict[str, Any], failed: list[dict[str, Any]], target: Path | None
) -> None:
    counts, usage = job["counts"], job["usage"]
    console.print(f"job {job['id']}: {job['status']}", soft_wrap=True)
    table = Table()
    for column in ("total", "succeeded", "failed", "canceled", "characters", "audio s"):
        table.add_column(column, justify="right")
    table.add_row(
        str(counts["total"]),
        str(counts["succeeded"]),
        str(counts["failed"]),
        str(counts["canceled"]),
        str(usage["characters"]),
        f"{usage['audio_seconds']:.1f}",
    )
    console.print(table)
    for item in failed[:SHOWN_FAILURES]:
        error = item.get("error") or {}
        console.print(
            f"[red]item {item['id']} failed ({error.get('code')}):[/red] {error.get('message')}",
            soft_wrap=True,
        )
    if len(failed) > SHOWN_FAILURES:
        console.print(
            f"... and {len(failed) - SHOWN_FAILURES} more failed items (see the manifest)"
        )
    if target is not None:
        console.print(f"outputs in {target}", soft_wrap=True)
