"""`speechbatch stt` on an archive: an `s3://` prefix, or a folder recursed for audio files.

An `s3://bucket/prefix/` argument becomes an archive job (`source{prefix, ...}`): the server
lists it (the deployment must allow the bucket, SPEECHBATCH_ARCHIVE_BUCKETS). A folder in
local mode becomes an archive job on `file:///abs/folder/`, so a re-run skips the files
already transcribed; against an API the server cannot read this machine's disk, so the
folder's audio files are uploaded as items instead (the same filters apply).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from jobs.archive_keys import Filters
from speechbatch.inputs import InputError

F = TypeVar("F", bound=Callable[..., Any])
MAX_FOLDER_FILES = 100_000  # files one folder may put into an uploaded job


@dataclass(frozen=True)
class ArchiveChoices:
    """The archive options of `stt`."""

    pattern: str | None = None
    min_bytes: int | None = None
    max_bytes: int | None = None
    modified_since: str | None = None
    full: bool = False
    mirror_to: str | None = None

    def body(self, prefix: str) -> dict[str, Any]:
        """The `source` (and `output`) of an archive job body on `prefix`."""
        source: dict[str, Any] = {"prefix": prefix, "incremental": not self.full}
        for name in ("pattern", "min_bytes", "max_bytes", "modified_since"):
            if getattr(self, name) is not None:
                source[name] = getattr(self, name)
        body: dict[str, Any] = {"source": source}
        if self.mirror_to is not None and self.mirror_to.startswith(("s3://", "file://")):
            body["output"] = {"url": self.mirror_to, "layout": "mirror"}  # another bucket
        elif self.mirror_to is not None:
            body["output"] = {"prefix": self.mirror_to, "layout": "mirror"}
        return body


def archive_options(fn: F) -> F:
    """`stt`'s archive options, handed to the command gathered as `archive`."""

    @functools.wraps(fn)
    def gathered(*args: Any, **kwargs: Any) -> Any:
        names = ("pattern", "min_bytes", "max_bytes", "modified_since", "full", "mirror_to")
        choices = ArchiveChoices(**{name: kwargs.pop(name) for name in names})
        return fn(*args, archive=choices, **kwargs)

    command: Any = gathered
    for option in reversed(
        [
            click.option(
                "--pattern",
                default=None,
                help="Prefixes and folders: which files, e.g. '*.wav' (matched on the path "
                "below the prefix, any case; default: audio files).",
            ),
            click.option("--min-bytes", type=click.IntRange(0), default=None),
            click.option("--max-bytes", type=click.IntRange(1), default=None),
            click.option(
                "--modified-since",
                default=None,
                help="Only objects modified at or after this ISO 8601 time (no offset: UTC).",
            ),
            click.option(
                "--full",
                is_flag=True,
                help="Transcribe every object, also those a job transcribed before.",
            ),
            click.option(
                "--mirror-to",
                default=None,
                help="Write transcripts mirroring the archive's folders: under this prefix "
                "of the service's storage, or at an s3://bucket/prefix/ URL the deployment "
                "lets you write (a write: SPEECHBATCH_ARCHIVE_BUCKETS entry).",
            ),
        ]
    ):
        command = option(command)
    return command  # type: ignore[no-any-return]


def archive_prefix(inputs: tuple[str, ...], *, local_mode: bool) -> str | None:
    """The archive an `stt` argument list names (an s3:// prefix, or in local mode one
    folder), or None when it names files to upload."""
    prefixes = [i for i in inputs if i.startswith("s3://")]
    if prefixes:
        if len(inputs) > 1:
            raise InputError("Give one s3:// prefix per command, without other inputs.")
        return prefixes[0]
    if local_mode and len(inputs) == 1 and Path(inputs[0]).is_dir():
        return f"file://{Path(inputs[0]).resolve().as_posix().rstrip('/')}/"
    return None


def with_folders_expanded(inputs: tuple[str, ...], choices: ArchiveChoices) -> tuple[str, ...]:
    """`inputs` with each folder replaced by the files below it that pass the filters
    (recursively, in path order); files and globs stay as given."""
    since = _since(choices.modified_since)
    filters = Filters(choices.pattern, choices.min_bytes, choices.max_bytes, since)
    found: list[str] = []
    for given in inputs:
        folder = Path(given)
        if not folder.is_dir():
            found.append(given)
            continue
        matched = []
        for root, dirs, files in os.walk(folder):
            dirs.sort()
            for name in sorted(files):
                path = Path(root) / name
                relative = path.relative_to(folder).as_posix()
                stat = path.stat()
                modified = datetime.fromtimestamp(stat.st_mtime, UTC)
                if path.is_file() and filters.matches(relative, stat.st_size, modified):
                    matched.append(str(path))
                if len(found) + len(matched) > MAX_FOLDER_FILES:
                    raise InputError(
                        f"{given}: more than {MAX_FOLDER_FILES} audio files; submit an s3:// "
                        "archive instead, or a narrower folder or --pattern."
                    )
        matched.sort()  # path order, as an archive's listing is
        if not matched:
            raise InputError(f"{given}: no audio files in this folder (or below it).")
        found.extend(matched)
    return tuple(found)


def _since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        since = datetime.fromisoformat(value)
    except ValueError:
        raise InputError(f"--modified-since {value!r} is not an ISO 8601 time.") from None
    return since if since.tzinfo else since.replace(tzinfo=UTC)
