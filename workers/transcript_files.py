"""An STT item's objects: all rendered and checked before the first write, removed on failure.

A failed STT item used to leave its `.json` (with a literal `NaN`) and `.txt` behind (issue 9):
the JSON was written, then a later step failed. Now every provider's transcript passes
`check_transcript` (finite, non-negative, ordered times), every body is rendered (JSON with
`allow_nan=False`) before anything is stored, and if one write fails the ones already made
are deleted, so the item's keys hold either all of its files or none.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from workers.providers.answers import bad_output, check_transcript
from workers.providers.base import Transcript
from workers.render import RENDERERS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutputFile:
    key: str
    body: bytes
    content_type: str


def transcript_files(
    transcript: Transcript, json_key: str, formats: Iterable[str]
) -> list[OutputFile]:
    """The transcript's JSON at `json_key`, then one file per known rendering format."""
    checked = check_transcript(transcript, request_id=transcript.request_id)
    try:
        body = json.dumps(checked.to_json(), ensure_ascii=False, indent=2, allow_nan=False)
    except ValueError:  # a NaN the checks missed (e.g. a confidence): never store it
        raise bad_output(checked.provider, "a transcript holding NaN or infinity") from None
    files = [OutputFile(json_key, body.encode(), "application/json")]
    base = json_key.removesuffix(".json")
    for fmt in formats:
        if fmt in RENDERERS:
            render, content_type = RENDERERS[fmt]
            files.append(OutputFile(f"{base}.{fmt}", render(checked).encode(), content_type))
    return files


def write_all(
    files: Sequence[OutputFile],
    *,
    put: Callable[[OutputFile], int],
    delete: Callable[[str], None],
) -> list[int]:
    """Store every file (their sizes, in order); if one fails, delete those stored first."""
    sizes: list[int] = []
    try:
        for output in files:
            sizes.append(put(output))
    except BaseException:
        for output in files[: len(sizes)]:
            try:
                delete(output.key)
            except Exception:  # storage is failing already; a re-run overwrites the key
                log.warning("could not remove %s after a failed write", output.key, exc_info=True)
        raise
    return sizes
