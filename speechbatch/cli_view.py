"""CLI commands that look at or act on existing jobs: status, jobs, cancel, retry, download,
and `providers`, what can be asked for.

Tables go to stdout with a one-line header saying where the jobs live (local mode and its
folder, or the API's URL) on stderr; `--json` prints only the JSON on stdout.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from jobs.catalog import PROVIDERS, limits_name
from jobs.catalog_limits import provider_limits
from jobs.settings import get_settings
from speechbatch.cli_jobs import connected, json_option, print_json
from speechbatch.client import Backend
from speechbatch.outputs import download_outputs

err = Console(stderr=True)


def _header(backend: Backend) -> None:
    err.print(f"[dim]{backend.where}[/dim]", soft_wrap=True)


def _table(*columns: str) -> Table:
    table = Table()
    for column in columns:
        # Ids are what users copy into the next command: never cut, never folded.
        table.add_column(column, no_wrap=column == "id", overflow="fold")
    return table


def _stdout() -> Console:
    # Wide enough for a whole job row when stdout is a pipe or a narrow terminal.
    return Console(width=max(Console().width, 132) if not sys.stdout.isatty() else None)


@click.command()
@click.argument("job_id")
@json_option
def status(job_id: str, as_json: bool) -> None:
    """Print a job's status, counts and usage."""
    with connected() as backend:
        job = backend.get_job(job_id)
        if as_json:
            print_json(job)
            return
        _header(backend)
        counts, usage = job["counts"], job["usage"]
        table = _table("field", "value")
        table.add_row("id", job["id"])
        for field in ("kind", "provider", "model", "status", "created_at", "finished_at"):
            table.add_row(field, str(job.get(field) or "-"))
        for name in ("total", "queued", "running", "succeeded", "skipped", "failed", "canceled"):
            table.add_row(name, str(counts.get(name, 0)))
        table.add_row("characters", str(usage["characters"]))
        table.add_row("audio seconds", f"{usage['audio_seconds']:.1f}")
        cost = job.get("cost") or {}
        if cost.get("estimated") is not None:
            table.add_row("estimated cost", f"{cost['estimated']:.4f} {cost.get('currency', '')}")
        _stdout().print(table)


@click.command("jobs")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 200))
@click.option("--json", "as_json", is_flag=True, help="Print the jobs as a JSON list.")
def list_jobs(limit: int, as_json: bool) -> None:
    """List recent jobs, newest first."""
    with connected() as backend:
        jobs = backend.list_jobs(limit)
        if as_json:
            print_json(jobs)
            return
        _header(backend)
        table = _table("id", "kind", "provider", "status", "done", "failed", "total", "created")
        for job in jobs:
            c = job["counts"]
            table.add_row(
                job["id"],
                job["kind"],
                job["provider"],
                job["status"],
                str(c["succeeded"]),
                str(c["failed"]),
                str(c["total"]),
                job["created_at"],
            )
        _stdout().print(table)


@click.command()
@click.argument("job_id")
@json_option
def cancel(job_id: str, as_json: bool) -> None:
    """Cancel a job's items that have not started."""
    with connected() as backend:
        job = backend.cancel(job_id)
        if as_json:
            print_json(job)
        else:
            click.echo(f"{job['id']}: {job['status']} ({job['counts']['canceled']} canceled)")


@click.command()
@click.argument("job_id")
@json_option
def retry(job_id: str, as_json: bool) -> None:
    """Re-queue a job's failed items (then `speechbatch wait JOB_ID` follows them)."""
    with connected() as backend:
        job = backend.retry(job_id)
        if as_json:
            print_json(job)
        else:
            click.echo(f"{job['id']}: {job['status']} ({job['counts']['queued']} queued)")


@click.command()
@click.argument("job_id")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
def download(job_id: str, out_dir: Path) -> None:
    """Download every output of a finished JOB_ID into --out (exit 1 while it runs)."""
    with connected() as backend:
        job = backend.get_job(job_id)  # a missing job is refused before the folder exists
        failed = download_outputs(backend, job, out_dir)
        click.echo(f"downloaded outputs of {job_id} to {out_dir} ({len(failed)} failed items)")


def provider_rows() -> list[dict[str, Any]]:
    """Every provider the catalog knows, with its models, defaults and call limits."""
    limits = provider_limits(get_settings().provider_limits)
    rows = []
    for name, spec in PROVIDERS.items():
        rows.append(
            {
                "name": name,
                "tts_models": list(spec.tts_models),
                "stt_models": list(spec.stt_models),
                "default_tts_model": spec.default_tts_model,
                "default_stt_model": spec.default_stt_model,
                "default_voice": spec.default_voice,
                "needs_api_key": spec.needs_api_key,
                "max_concurrency": limits[name].max_concurrency,
                "max_rps": limits[name].max_rps,
                "limits": {kind: vars(limits[limits_name(name, kind)]) for kind in ("tts", "stt")},
                "tts_transports": list(spec.transports.get("tts", ())),
                "stt_transports": list(spec.transports.get("stt", ())),
            }
        )
    return rows


def rate(per_second: float) -> str:
    """A request rate as people say it: per second when at least one, else per minute."""
    return f", {per_second:g}/s" if per_second >= 1 else f", {per_second * 60:.0f}/min"


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the catalog as JSON.")
def providers(as_json: bool) -> None:
    """List the providers, models and default voices a job can ask for."""
    rows = provider_rows()
    if as_json:
        print_json(rows)
        return
    table = _table(
        "provider", "kind", "models (default first)", "default voice", "transports", "limit"
    )
    for row in rows:
        for kind in ("tts", "stt"):
            own = row["limits"][kind]
            limit = f"{own['max_concurrency']} in flight" + (
                rate(own["max_rps"]) if own["max_rps"] else ""
            )
            models = row[f"{kind}_models"]
            default = row[f"default_{kind}_model"]
            ordered = [default, *(m for m in models if m != default)] if default else models
            voice = row["default_voice"] if kind == "tts" else "-"
            transports = ", ".join(row[f"{kind}_transports"]) or "-"
            table.add_row(
                row["name"], kind, "\n".join(ordered) or "-", voice or "-", transports, limit
            )
    _stdout().print(table)


def register_view_commands(group: click.Group) -> None:
    for command in (status, list_jobs, cancel, retry, download, providers):
        group.add_command(command)
