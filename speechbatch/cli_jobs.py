"""Job commands of the CLI: tts, stt and wait (status, jobs, ... are in `cli_view.py`).

Exit codes (design §5): 0 every item succeeded, 1 some items failed or were canceled,
2 bad usage or input (including a request the API refused). Expected failures are turned
into one sentence by `speechbatch.failures`, applied to every command by the group.
"""

from __future__ import annotations

import contextlib
import functools
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console

from jobs.settings import get_settings
from speechbatch.archive_inputs import (
    ArchiveChoices,
    archive_options,
    archive_prefix,
    with_folders_expanded,
)
from speechbatch.client import Backend, HttpBackend, open_backend
from speechbatch.failures import EXIT_ITEMS_FAILED, EXIT_OK
from speechbatch.inputs import expand_audio_paths, read_script, stt_item_ids
from speechbatch.outputs import download_outputs, print_summary
from speechbatch.progress import follow

F = TypeVar("F", bound=Callable[..., Any])
console = Console(stderr=True)


@contextlib.contextmanager
def connected(concurrency: int = 4) -> Iterator[Backend]:
    """A backend for one command, closed (local worker threads stopped) afterwards."""
    backend = open_backend(get_settings(), concurrency=concurrency)
    try:
        yield backend
    finally:
        backend.close()


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2))


def concurrency_option(fn: F) -> F:
    return click.option(
        "--concurrency",
        default=4,
        show_default=True,
        type=click.IntRange(1, 64),
        help="Threads in local mode (ignored with SPEECHBATCH_API_URL).",
    )(fn)


json_option = click.option("--json", "as_json", is_flag=True, help="Print the job as JSON.")


@dataclass(frozen=True)
class RunOptions:
    """How `tts`/`stt` run their job: the options both commands share."""

    out_dir: Path | None
    no_wait: bool
    idempotency_key: str | None
    concurrency: int
    as_json: bool
    webhook_url: str | None = None  # sent as the job's webhook_url (API mode only)
    dry_run: bool = False  # print the item count, usage and cost estimate; create nothing


def job_options(fn: F) -> F:
    """The shared options; the command receives the run ones gathered as `run`."""

    @functools.wraps(fn)
    def gathered(
        *args: Any,
        out_dir: Path | None,
        no_wait: bool,
        idempotency_key: str | None,
        concurrency: int,
        as_json: bool,
        webhook_url: str | None = None,
        dry_run: bool = False,
        **kwargs: Any,
    ) -> Any:
        run = RunOptions(
            out_dir, no_wait, idempotency_key, concurrency, as_json, webhook_url, dry_run
        )
        return fn(*args, run=run, **kwargs)

    command: Any = gathered
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
            click.option(
                "--no-wait",
                is_flag=True,
                help="Print the job id and return (local mode: a background process runs it; "
                "`speechbatch wait JOB` follows it).",
            ),
            click.option("--idempotency-key", default=None),
            click.option(
                "--dry-run",
                is_flag=True,
                help="Check the job as a submit would and print its item count, usage and "
                "estimated cost; nothing is created and no provider is called.",
            ),
            click.option(
                "--webhook-url",
                default=None,
                help="POST a signed job.finished event here when the job ends (needs "
                "SPEECHBATCH_API_URL: beat sends it).",
            ),
            concurrency_option,
            json_option,
        ]
    ):
        command = option(command)
    return command  # type: ignore[no-any-return]


def _run(body: dict[str, Any], run: RunOptions) -> int:
    """Submit `body` and follow it to its end (or hand it off with --no-wait); exit code."""
    with connected(run.concurrency) as backend:
        return _submit(body, backend, run)


def _submit(body: dict[str, Any], backend: Backend, run: RunOptions) -> int:
    if run.dry_run:
        print_estimate(backend.dry_run(body), as_json=run.as_json)
        return EXIT_OK
    if run.webhook_url is not None:
        if not isinstance(backend, HttpBackend):  # no beat runs in local mode to send it
            raise click.UsageError(
                "--webhook-url needs a server: set SPEECHBATCH_API_URL (local mode sends "
                "no webhooks)."
            )
        body = {**body, "webhook_url": run.webhook_url}
    job = backend.submit(body, run.idempotency_key)
    if run.no_wait:
        backend.detach(job["id"])
        if run.as_json:
            print_json(job)
        else:
            click.echo(job["id"])
        return EXIT_OK
    backend.start_work(job["id"], resume=False)
    target = run.out_dir or Path("out") / job["id"]
    return _finish(backend, job["id"], target, as_json=run.as_json)


def print_estimate(estimate: dict[str, Any], *, as_json: bool) -> None:
    """A dry run's answer: as JSON, or one line of figures and its notes."""
    if as_json:
        print_json(estimate)
        return
    usage, cost = estimate["usage"], estimate["cost"]
    items, archive = estimate["items"], estimate.get("archive")
    if items is None and estimate.get("items_at_least") is not None:
        parts = [f"at least {estimate['items_at_least']:,} items (listing stopped early)"]
    else:
        parts = ["items unknown" if items is None else f"{items:,} items"]
    if archive:  # an archive source, listed (jobs.archive_count)
        parts.append(f"{archive['bytes']:,} bytes")
        if archive["skipped"]:
            parts.append(f"{archive['skipped']:,} skipped as transcribed before")
    if usage["characters"]:
        parts.append(f"{usage['characters']:,} characters")
    if usage["audio_seconds"] is not None:
        about = "~" if archive and archive["audio_seconds_basis"] == "extrapolated" else ""
        parts.append(f"{about}{usage['audio_seconds']:,.1f} s of audio")
    money = "unknown" if cost["estimated"] is None else f"{cost['estimated']:.4f}"
    parts.append(f"estimated cost {money} {cost['currency']}")
    if estimate.get("within_budget") is not None:
        parts.append("within budget" if estimate["within_budget"] else "OVER BUDGET")
    click.echo("Dry run: " + ", ".join(parts) + ".")
    for note in estimate.get("notes", []):
        click.echo(f"  note: {note}")


def _finish(
    backend: Backend,
    job_id: str,
    target: Path | None,
    *,
    as_json: bool,
    out: Console = console,
) -> int:
    """Follow the job to its end, download its outputs into `target` (if any), summarise."""
    job = follow(lambda: backend.get_job(job_id), console=out)
    failed = download_outputs(backend, job, target) if target else []
    if as_json:
        print_json(job)
    else:
        print_summary(out, job, failed, target)
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
def tts(
    script: Path,
    voice: str | None,
    fmt: str,
    sample_rate: int | None,
    speed: float,
    provider: str,
    model: str | None,
    language: str | None,
    run: RunOptions,
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
    sys.exit(_run(body, run))


@click.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option(
    "--formats",
    default="json,txt,srt,vtt",
    show_default=True,
    help="Transcript renderings to write.",
)
@archive_options
@job_options
def stt(
    inputs: tuple[str, ...],
    formats: str,
    provider: str,
    model: str | None,
    language: str | None,
    run: RunOptions,
    archive: ArchiveChoices,
) -> None:
    """Transcribe audio files (paths or globs such as 'calls/*.wav'), a folder (recursed), or
    an archive prefix (s3://bucket/calls/2026/, listed by the server)."""
    options: dict[str, Any] = {"transcript_formats": [f.strip() for f in formats.split(",")]}
    if language:
        options["language"] = language
    body: dict[str, Any] = {"kind": "stt", "provider": provider, "model": model, "options": options}
    with connected(run.concurrency) as backend:  # uploads and job on one backend
        prefix = archive_prefix(inputs, local_mode=not isinstance(backend, HttpBackend))
        if prefix is not None:
            code = _submit(body | archive.body(prefix), backend, run)
            sys.exit(code)
        paths = expand_audio_paths(with_folders_expanded(inputs, archive))
        ids = stt_item_ids(paths)  # a collision is refused before anything is uploaded
        items = [
            {"id": item_id, "source": backend.upload(path)}
            for item_id, path in zip(ids, paths, strict=True)
        ]
        code = _submit(body | {"items": items}, backend, run)
    sys.exit(code)


@click.command()
@click.argument("job_id")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Download the outputs here once the job has finished.",
)
@click.option("--quiet", is_flag=True, help="No progress bar or summary (for background runs).")
@concurrency_option
@json_option
def wait(job_id: str, out_dir: Path | None, quiet: bool, concurrency: int, as_json: bool) -> None:
    """Follow JOB_ID until it finishes: exit 0 if every item succeeded, else 1.

    In local mode this also runs the job's remaining items, so a job whose command was
    interrupted picks up where it stopped.
    """
    with connected(concurrency) as backend:
        backend.get_job(job_id)  # a missing job fails here, before any work starts
        backend.start_work(job_id, resume=True)
        out = Console(stderr=True, quiet=True) if quiet else console
        code = _finish(backend, job_id, out_dir, as_json=as_json, out=out)
    sys.exit(code)


def register_job_commands(group: click.Group) -> None:
    for command in (tts, stt, wait):
        group.add_command(command)
