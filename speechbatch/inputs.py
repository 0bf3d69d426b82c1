"""Reading the CLI's inputs: TTS scripts (.txt, .csv, .jsonl) and STT file lists/globs.

Problems are reported as InputError with the file and line, so `speechbatch tts` can exit 2
with a sentence instead of a traceback.
"""

from __future__ import annotations

import csv
import glob
import json
import os
from pathlib import Path
from typing import Any


class InputError(ValueError):
    """The input file or arguments cannot be turned into job items."""


def read_script(path: Path) -> list[dict[str, Any]]:
    """TTS items from a script: .txt (one line each), .csv (id,text[,voice...]) or .jsonl."""
    if not path.is_file():
        raise InputError(f"{path}: no such file.")
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text.") from None
    if suffix == ".csv":
        items = _from_csv(path, text)
    elif suffix == ".jsonl":
        items = _from_jsonl(path, text)
    else:
        # Blank lines in a plain script are spacing, not items.
        items = [{"text": line.strip()} for line in text.splitlines() if line.strip()]
    if not items:
        raise InputError(f"{path}: no lines to speak.")
    return items


def _from_csv(path: Path, text: str) -> list[dict[str, Any]]:
    reader = csv.DictReader(text.splitlines())
    if not reader.fieldnames or "text" not in reader.fieldnames:
        raise InputError(f"{path}: a CSV script needs a header row with a `text` column.")
    items = []
    for line, row in enumerate(reader, start=2):
        if not (row.get("text") or "").strip():
            raise InputError(f"{path}:{line}: the text is empty.")
        item: dict[str, Any] = {"text": row["text"]}
        if row.get("id"):
            item["id"] = row["id"]
        if row.get("voice"):
            item["voice"] = row["voice"]
        items.append(item)
    return items


def _from_jsonl(path: Path, text: str) -> list[dict[str, Any]]:
    items = []
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}:{line}: not valid JSON ({exc.msg}).") from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise InputError(f'{path}:{line}: each line must be an object with a "text" string.')
        item = {"text": record["text"]}
        if record.get("id") is not None:
            item["id"] = str(record["id"])
        if isinstance(record.get("voice"), str):
            item["voice"] = record["voice"]
        items.append(item)
    return items


def expand_audio_paths(patterns: tuple[str, ...]) -> list[Path]:
    """Local files for STT from paths and globs, in a stable order, without duplicates."""
    found: dict[Path, None] = {}
    for pattern in patterns:
        matches = (
            sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]
        )
        if not matches:
            raise InputError(f"{pattern}: matched no files.")
        for match in matches:
            path = Path(match)
            if not path.is_file():
                raise InputError(f"{match}: no such file.")
            found[path] = None
    if not found:
        raise InputError("No audio files given.")
    return list(found)


def stt_item_ids(paths: list[Path]) -> list[str]:
    """An item id per file: its path below the files' common folder, without the suffix.

    `calls/a/recording.wav` and `calls/b/recording.wav` become `a-recording` and
    `b-recording` (ids name output files, so they hold no `/`). Two files that would share
    an id are refused here, before anything is uploaded.
    """
    folders = [path.resolve().parent for path in paths]
    root = Path(os.path.commonpath(folders))
    ids: dict[str, Path] = {}
    for path in paths:
        relative = path.resolve().relative_to(root).with_suffix("")
        item_id = "-".join(relative.parts)
        if item_id in ids:
            raise InputError(
                f"{ids[item_id]} and {path} would both be item {item_id!r}; rename one."
            )
        ids[item_id] = path
    return list(ids)
