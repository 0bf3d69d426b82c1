"""`speechbatch schedules add|list|show|remove|run`: cron schedules, through the API.

Schedules live in the server's database and beat fires them, so these commands need
SPEECHBATCH_API_URL (and SPEECHBATCH_API_KEY); in local mode they stop with `api_required`
(exit 2) instead of keeping a schedule nothing would ever fire. A schedule is named by its
id (`sch_…`) or its name. `--json` prints the API's answer as it is.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from jobs.error_codes import ErrorCode
from jobs.settings import get_settings
from speechbatch.cli_jobs import print_json
from speechbatch.client import HttpBackend
from speechbatch.failures import CliFailure

MAX_JOB_FILE_BYTES = 4 * 1024 * 1024  # the API caps a template at 1 MiB; this stops a runaway
err = Console(stderr=True)
as_json_option = click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")


@contextlib.contextmanager
def api() -> Iterator[HttpBackend]:
    settings = get_settings()
    if not settings.api_url:
        raise CliFailure(
            ErrorCode.API_REQUIRED,
            "schedules live on a speechbatch server and its beat fires them; set "
            "SPEECHBATCH_API_URL and SPEECHBATCH_API_KEY (local mode keeps no schedules).",
        )
    key = settings.api_key.get_secret_value() if settings.api_key else None
    backend = HttpBackend(settings.api_url, key)
    try:
        yield backend
    finally:
        backend.close()


def read_job(path: Path) -> dict[str, Any]:
    """The job template in `path`: a JSON object (a POST /v1/jobs body with placeholders)."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_JOB_FILE_BYTES + 1)
    except OSError as exc:
        raise CliFailure(
            ErrorCode.INVALID_REQUEST, f"cannot read {path}: {exc.strerror}."
        ) from None
    if len(raw) > MAX_JOB_FILE_BYTES:
        raise CliFailure(
            ErrorCode.TEMPLATE_TOO_LARGE, f"{path} is over {MAX_JOB_FILE_BYTES} bytes."
        )
    try:
        job = json.loads(raw)
    except (ValueError, RecursionError):
        raise CliFailure(ErrorCode.INVALID_REQUEST, f"{path} is not JSON.") from None
    if not isinstance(job, dict):
        raise CliFailure(ErrorCode.INVALID_REQUEST, f"{path} must hold a JSON object (a job).")
    return job


def resolve(backend: HttpBackend, ref: str) -> str:
    """The id of the schedule named `ref` (an id is taken as it is)."""
    if ref.startswith("sch_"):
        return ref
    cursor = None
    while True:
        params = {"limit": 200, **({"cursor": cursor} if cursor else {})}
        page = backend.call("GET", "/v1/schedules", params=params)
        for schedule in page["schedules"]:
            if schedule["name"] == ref:
                return str(schedule["id"])
        cursor = page["next_cursor"]
        if not cursor:
            raise CliFailure(ErrorCode.NOT_FOUND, f"no schedule named {ref!r} for this API key.")


@click.group()
def schedules() -> None:
    """Cron schedules that submit a job at each fire time (needs the API and beat)."""


@schedules.command("add")
@click.argument("name")
@click.option("--cron", required=True, help="Five fields, e.g. '0 2 * * *'.")
@click.option("--timezone", default="UTC", show_default=True, help="IANA name: Europe/Berlin.")
@click.option(
    "--job",
    "job_file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="A JSON job body; strings may use {fire_time}, {fire_date}, {fire_time - 1 day}.",
)
@click.option("--overlap", type=click.Choice(["skip", "allow"]), default="skip", show_default=True)
@click.option("--catch-up", type=click.Choice(["once", "skip"]), default="once", show_default=True)
@click.option("--disabled", is_flag=True, help="Create it switched off.")
@as_json_option
def add(
    name: str, cron: str, timezone: str, job_file: Path, overlap: str, catch_up: str,
    disabled: bool, as_json: bool,
) -> None:  # fmt: skip
    """Create schedule NAME."""
    body = {
        "name": name, "cron": cron, "timezone": timezone, "job": read_job(job_file),
        "overlap": overlap, "catch_up": catch_up, "enabled": not disabled,
    }  # fmt: skip
    with api() as backend:
        created = backend.call("POST", "/v1/schedules", json=body)
    if as_json:
        print_json(created)
        return
    nxt = created["next_fire_at"] or "never (disabled)"
    click.echo(f"{created['id']}: schedule {created['name']!r} created; next fire {nxt}")


@schedules.command("list")
@as_json_option
def list_schedules(as_json: bool) -> None:
    """List this key's schedules by name."""
    with api() as backend:
        found: list[dict[str, Any]] = []
        cursor = None
        while True:
            params = {"limit": 200, **({"cursor": cursor} if cursor else {})}
            page = backend.call("GET", "/v1/schedules", params=params)
            found += page["schedules"]
            cursor = page["next_cursor"]
            if not cursor:
                break
        where = backend.where
    if as_json:
        print_json(found)
        return
    err.print(f"[dim]{where}[/dim]", soft_wrap=True)
    table = Table()
    for column in ("id", "name", "cron", "timezone", "enabled", "next fire"):
        table.add_column(column, no_wrap=column == "id", overflow="fold")
    for s in found:
        table.add_row(s["id"], s["name"], s["cron"], s["timezone"], str(s["enabled"]).lower(),
                      s["next_fire_at"] or "-")  # fmt: skip
    Console(width=160).print(table)


@schedules.command("show")
@click.argument("schedule")
@as_json_option
def show(schedule: str, as_json: bool) -> None:
    """Show SCHEDULE (id or name): settings, next fire times and recent runs."""
    with api() as backend:
        shown = backend.call("GET", f"/v1/schedules/{resolve(backend, schedule)}")
    if as_json:
        print_json(shown)
        return
    for field in ("id", "name", "cron", "timezone", "enabled", "overlap", "catch_up"):
        click.echo(f"{field}: {shown[field]}")
    click.echo("next fire times: " + (", ".join(shown["next_fire_times"]) or "none (disabled)"))
    table = Table(title="runs (newest first)")
    for column in ("fire time", "trigger", "status", "job", "reason"):
        table.add_column(column, overflow="fold")
    for run in shown["runs"]:
        table.add_row(run["fire_time"], run["trigger"], run["status"], run["job_id"] or "-",
                      run["reason"] or "")  # fmt: skip
    Console(width=160).print(table)


@schedules.command("remove")
@click.argument("schedule")
@as_json_option
def remove(schedule: str, as_json: bool) -> None:
    """Delete SCHEDULE (id or name) and its run history; the jobs it made stay."""
    with api() as backend:
        schedule_id = resolve(backend, schedule)
        backend.call("DELETE", f"/v1/schedules/{schedule_id}")
    if as_json:
        print_json({"id": schedule_id, "removed": True})
    else:
        click.echo(f"{schedule_id}: removed")


@schedules.command("run")
@click.argument("schedule")
@as_json_option
def run(schedule: str, as_json: bool) -> None:
    """Fire SCHEDULE (id or name) now; prints the job it submitted."""
    with api() as backend:
        fired = backend.call("POST", f"/v1/schedules/{resolve(backend, schedule)}/run")
    if as_json:
        print_json(fired)
        return
    if fired["job"] is None:
        raise CliFailure(
            ErrorCode.INVALID_REQUEST, f"the run made no job: {fired['run']['reason']}"
        )
    click.echo(
        f"{fired['job']['id']}: fired at {fired['run']['fire_time']} ({fired['job']['status']})"
    )


def register_schedule_commands(group: click.Group) -> None:
    group.add_command(schedules)
