"""Job commands of the CLI: tts, stt, status, jobs, cancel, retry, download.

Exit codes (design §5): 0 every item succeeded, 1 some items failed or were canceled,
2 bad usage or input (including a request the API refused).
"""

from __future__ import annotations

import contextlib
import functools
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from jobs.errors import ApiError
from jobs.settings import get_settings
from speechbatch.client import Backend, open_backend
from speechbatch.inputs import InputError, expand_audio_paths, read_script
from speechbatch.progress import follow

F = TypeVar("F", bound=Callable[..., Any])
EXIT_OK, EXIT_ITEMS_FAILED, EXIT_BAD_INPUT = 0, 1, 2
console = Console(stderr=True)


def friendly_errors(fn: F) -> F:
    """Turn refused requests and bad input files into one sentence and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except InputError as exc:
            console.print(f"[red]error:[/red] {exc}")
            sys.exit(EXIT_BAD_INPUT)
        except ApiError as exc:
            console.print(f"[red]error ({exc.code}):[/red] {exc.message}")
            sys.exit(EXIT_BAD_INPUT if exc.status < 500 else EXIT_ITEMS_FAILED)

    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def connected(concurrency: int = 4) -> Iterator[Backend]:
    """A backend for one command, closed (local worker threads stopped) afterwards."""
    backend = open_backend(get_settings(), concurrency=concurrency)
    try:
        yield backend
    finally:
        backend.close()


def job_options(fn: F) -> F:
    for option in reversed(
        [
            click.option("--provider", default="local", show_default=True),
            click.option("--model", default=None, help="Provider model (default: its default)."),
            click.option("--language", default=None),
            click.option(
                "--out",
                "out_dir",
                type=click.Path(file_okay=False, path_type=Path),
                default=None,
                help="Download outputs here (default ./out/<job id>).",
            ),
            click.option("--no-wait", is_flag=True, help="Print the job id and return."),
            click.option("--idempotency-key", default=None),
            click.option(
                "--concurrency",
                default=4,
                show_default=True,
                type=click.IntRange(1, 64),
                help="Threads in local mode (ignored with SPEECHBATCH_API_URL).",
            ),
        ]
    ):
        fn = option(fn)
    return fn


def _run(
    body: dict[str, Any],
    backend: Backend,
    *,
    out_dir: Path | None,
    no_wait: bool,
    idempotency_key: str | None,
) -> int:
    job = backend.submit(body, idempotency_key)
    if no_wait:
        click.echo(job["id"])
        return EXIT_OK
    job = follow(lambda: backend.get_job(job["id"]), console=console)
    target = out_dir or Path("out") / job["id"]
    failed = download_outputs(backend, job["id"], target)
    print_summary(job, failed, target)
    return EXIT_OK if job["status"] == "succeeded" else EXIT_ITEMS_FAILED


@click.command()
@click.argument("script", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--voice", default=None)
@click.option(
    "--format",
    "fmt",
    default="wav",
    show_default=True,
    type=click.Choice(["wav", "flac", "mp3", "ogg", "opus"]),
)
@click.option("--sample-rate", default=None, type=click.IntRange(8000, 48000))
@click.option("--speed", default=1.0, show_default=True, type=click.FloatRange(0.5, 2.0))
@job_options
@friendly_errors
def tts(
    script: Path,
    voice: str | None,
    fmt: str,
    sample_rate: int | None,
    speed: float,
    provider: str,
    model: str | None,
    language: str | None,
    out_dir: Path | None,
    no_wait: bool,
    idempotency_key: str | None,
    concurrency: int,
) -> None:
    """Speak every line of SCRIPT (.txt, .csv with id,text[,voice], or .jsonl)."""
    items = read_script(script)
    options: dict[str, Any] = {"format": fmt, "speed": speed}
    if sample_rate:
        options["sample_rate"] = sample_rate
    if language:
        options["language"] = language
    body = {
        "kind": "tts",
        "provider": provider,
        "model": model,
        "voice": voice,
        "options": options,
        "items": items,
    }
    with connected(concurrency) as backend:
        code = _run(
            body, backend, out_dir=out_dir, no_wait=no_wait, idempotency_key=idempotency_key
        )
    sys.exit(code)


@click.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option(
    "--formats",
    default="json,txt,srt,vtt",
    show_default=True,
    help="Transcript renderings to write.",
)
@job_options
@friendly_errors
def stt(
    inputs: tuple[str, ...],
    formats: str,
    provider: str,
    model: str | None,
    language: str | None,
    out_dir: Path | None,
    no_wait: bool,
    idempotency_key: str | None,
    concurrency: int,
) -> None:
    """Transcribe audio files (paths or globs such as 'calls/*.wav')."""
    paths = expand_audio_paths(inputs)
    options: dict[str, Any] = {"transcript_formats": [f.strip() for f in formats.split(",")]}
    if language:
        options["language"] = language
    with connected(concurrency) as backend:
        items = [{"id": path.stem, "source": backend.upload(path)} for path in paths]
        body = {
            "kind": "stt",
            "provider": provider,
            "model": model,
            "options": options,
            "items": items,
        }
        code = _run(
            body, backend, out_dir=out_dir, no_wait=no_wait, idempotency_key=idempotency_key
        )
    sys.exit(code)


def download_outputs(backend: Backend, job_id: str, target: Path) -> list[dict[str, Any]]:
    """Write every output file of a job into `target`; returns the failed items."""
    target.mkdir(parents=True, exist_ok=True)
    failed = []
    for item in backend.items(job_id):
        if item["status"] == "failed":
            failed.append(item)
        output = item.get("output")
        for file in (output or {}).get("files", []):
            destination = target / file["key"].rsplit("/", 1)[-1]
            with destination.open("wb") as handle:
                for chunk in backend.fetch(file["url"] or file["key"]):
                    handle.write(chunk)
    return failed


def print_summary(job: dict[str, Any], failed: list[dict[str, Any]], target: Path) -> None:
    counts, usage = job["counts"], job["usage"]
    table = Table(title=f"job {job['id']}: {job['status']}")
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
    for item in failed[:20]:
        error = item.get("error") or {}
        console.print(
            f"[red]item {item['id']} failed ({error.get('code')}):[/red] {error.get('message')}"
        )
    if len(failed) > 20:
        console.print(f"... and {len(failed) - 20} more failed items (see the manifest)")
    console.print(f"outputs in {target}")


@click.command()
@click.argument("job_id")
@friendly_errors
def status(job_id: str) -> None:
    """Print a job's status, counts and usage as JSON."""
    with connected() as backend:
        click.echo(json.dumps(backend.get_job(job_id), indent=2))


@click.command("jobs")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 200))
@friendly_errors
def list_jobs(limit: int) -> None:
    """List recent jobs, newest first."""
    with connected() as backend:
        table = Table()
        for column in ("id", "kind", "provider", "status", "done", "failed", "total", "created"):
            table.add_column(column)
        for job in backend.list_jobs(limit):
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
        Console().print(table)


@click.command()
@click.argument("job_id")
@friendly_errors
def cancel(job_id: str) -> None:
    """Cancel a job's items that have not started."""
    with connected() as backend:
        job = backend.cancel(job_id)
        click.echo(f"{job['id']}: {job['status']} ({job['counts']['canceled']} canceled)")


@click.command()
@click.argument("job_id")
@friendly_errors
def retry(job_id: str) -> None:
    """Re-queue a job's failed items."""
    with connected() as backend:
        job = backend.retry(job_id)
        click.echo(f"{job['id']}: {job['status']} ({job['counts']['queued']} queued)")


@click.command()
@click.argument("job_id")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@friendly_errors
def download(job_id: str, out_dir: Path) -> None:
    """Download every output of JOB_ID into --out."""
    with connected() as backend:
        failed = download_outputs(backend, job_id, out_dir)
        click.echo(f"downloaded outputs of {job_id} to {out_dir} ({len(failed)} failed items)")


def register_job_commands(group: click.Group) -> None:
    for command in (tts, stt, status, list_jobs, cancel, retry, download):
        group.add_command(command)
