"""What an archive listing makes of each object: the filters it passes, whether its key is
readable, its digest, its item id and its mirrored output key.

`archive_digest` is what makes re-running an archive job free: an object's URL, its ETag and
the settings that shape its transcript; an earlier succeeded item of the same tenant with the
same digest is the transcript, and the new item is inserted `skipped`, pointing at it.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import PurePosixPath
from typing import Any

from storage.keys import UnsafeKey, safe_name, validate_key

# What "any audio file" means when a source names no pattern (the CLI's directories too).
AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".webm", ".mp4"})


@dataclass(frozen=True)
class Filters:
    """Which listed objects become items: `source`'s pattern and bounds."""

    pattern: str | None = None
    min_bytes: int | None = None
    max_bytes: int | None = None
    modified_since: datetime | None = None

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> Filters:
        """From an `archive_expansions` row (as a mapping)."""
        return cls(row["pattern"], row["min_bytes"], row["max_bytes"], row["modified_since"])

    def matches(self, relative: str, size: int, modified: datetime) -> bool:
        """Whether an object (its path below the prefix) passes: the pattern (fnmatch,
        case-insensitive; none: an audio file name), the size bounds, the modification time."""
        if self.pattern is not None:
            if not fnmatch.fnmatchcase(relative.lower(), self.pattern.lower()):
                return False
        elif PurePosixPath(relative).suffix.lower() not in AUDIO_SUFFIXES:
            return False
        if self.min_bytes is not None and size < self.min_bytes:
            return False
        if self.max_bytes is not None and size > self.max_bytes:
            return False
        return self.modified_since is None or modified >= self.modified_since


def readable_key(key: str) -> bool:
    """Whether a store can read `key` under our key rules (no '..', no empty segment, no
    control character, at most 200 characters); other objects become failed items."""
    try:
        validate_key(key)
    except UnsafeKey:
        return False
    return True


def archive_digest(source_url: str, etag: str, job: dict[str, Any]) -> str:
    """What a transcript of this object depends on: the object (URL and ETag), the provider
    and model, and the options that change the transcript or its files (not the transport)."""
    options = job.get("options") or {}
    shaping = {
        "language": options.get("language"),
        "transcript_formats": sorted(options.get("transcript_formats") or []),
    }
    canonical = [source_url, etag, job["provider"], job["model"], shaping]
    return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()


def item_id_for(seq: int, relative: str) -> str:
    """An archive item's id: its sequence number and file name (`17-call_0042.wav`), which is
    unique in the job and safe as a file name; the full key is the item's `source`."""
    name = safe_name(PurePosixPath(relative).name, 100).replace("..", "_")
    return f"{seq}-{name}"


def mirror_key(prefix: str, tenant: str, relative: str, ext: str) -> str | None:
    """`{prefix}/{tenant}/{relative}.{ext}` for a mirrored output, or None when that key
    would break our key rules (a '..' segment, over 200 characters): the item then keeps the
    job layout. The tenant segment keeps one tenant's mirror out of another's files."""
    key = "/".join(part for part in (prefix, tenant, f"{relative}.{ext}") if part)
    return key if readable_key(key) else None
