"""Deterministic, safe object keys (design §7).

Every key speechbatch writes is built here, so one module decides what may appear in one:

    {prefix}/{tenant}/{job_id}/{seq:06d}-{safe_name}.{ext}
    {prefix}/{tenant}/{job_id}/manifest.jsonl
    uploads/{tenant}/{upload_id}/{safe_name}

User-supplied strings (item names, upload filenames) pass through `safe_name`, which keeps only
`[A-Za-z0-9._-]`, so they can never add a path segment. The output prefix is user-supplied too;
`validate_prefix` refuses `..`, absolute paths, backslashes and control characters rather than
repairing them. Identifiers (tenant, job id, upload id) must already be single safe segments:
rewriting them could make two tenants share a folder, so they are refused instead.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import PurePosixPath

MAX_PREFIX_LEN = 200
FALLBACK_NAME = "item"

_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]")
_SEGMENT = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")
_EXTENSION = re.compile(r"[A-Za-z0-9]{1,16}")
_DRIVE = re.compile(r"[A-Za-z]:")


class UnsafeKey(ValueError):
    """A key, prefix or key part that could escape its folder or is not a valid key at all."""


def safe_name(value: str, max_len: int = 80) -> str:
    """`value` reduced to `[A-Za-z0-9._-]`: other characters become `_`, leading dots and
    underscores go, the result is cut to `max_len` and is never empty (falls back to "item")."""
    cleaned = _UNSAFE_CHARS.sub("_", value).lstrip("._")[: max(max_len, 1)]
    return cleaned or FALLBACK_NAME


def _check_path(value: str, what: str) -> None:
    """Raise UnsafeKey unless `value` is a relative path of clean, non-empty segments."""
    if len(value) > MAX_PREFIX_LEN:
        raise UnsafeKey(f"{what} is longer than {MAX_PREFIX_LEN} characters.")
    if "\\" in value:
        raise UnsafeKey(f"{what} {value!r} contains a backslash; use '/' between segments.")
    if any(unicodedata.category(char).startswith("C") for char in value):
        raise UnsafeKey(f"{what} {value!r} contains a control or invisible character.")
    if value.startswith("/") or _DRIVE.match(value):
        raise UnsafeKey(f"{what} {value!r} is absolute; give a relative path like 'team/run-1'.")
    for segment in value.split("/"):
        if segment in {"", ".", ".."}:
            raise UnsafeKey(f"{what} {value!r} has an empty, '.' or '..' segment.")


def validate_prefix(prefix: str) -> str:
    """The normalised prefix (no trailing `/`; "" stays ""), or UnsafeKey when it could escape."""
    normalised = prefix[:-1] if len(prefix) > 1 and prefix.endswith("/") else prefix
    if normalised:
        _check_path(normalised, "Prefix")
    return normalised


def validate_key(key: str) -> str:
    """`key` unchanged when it is a non-empty relative object key that cannot escape its root."""
    if not key or key.endswith("/"):
        raise UnsafeKey(f"Object key {key!r} is empty or names a folder.")
    _check_path(key, "Object key")
    return key


def _segment(value: str, what: str) -> str:
    """`value` when it is one safe path segment (an identifier), else UnsafeKey."""
    if not _SEGMENT.fullmatch(value):
        raise UnsafeKey(
            f"{what} {value!r} must be 1-128 characters of [A-Za-z0-9._-], not starting with '.'."
        )
    return value


def _join(*parts: str) -> str:
    return "/".join(part for part in parts if part)


def job_prefix(prefix: str, tenant: str, job_id: str) -> str:
    """`{prefix}/{tenant}/{job_id}`: the folder that holds everything one job writes."""
    return _join(validate_prefix(prefix), _segment(tenant, "Tenant"), _segment(job_id, "Job id"))


def output_key(prefix: str, tenant: str, job_id: str, seq: int, name: str, ext: str) -> str:
    """`{prefix}/{tenant}/{job_id}/{seq:06d}-{safe_name(name)}.{ext}` for one item's output."""
    if seq < 0:
        raise UnsafeKey(f"Item sequence number must be >= 0, got {seq}.")
    if not _EXTENSION.fullmatch(ext):
        raise UnsafeKey(f"File extension {ext!r} must be 1-16 letters or digits, without a dot.")
    return f"{job_prefix(prefix, tenant, job_id)}/{seq:06d}-{safe_name(name)}.{ext}"


def manifest_key(prefix: str, tenant: str, job_id: str) -> str:
    """`{prefix}/{tenant}/{job_id}/manifest.jsonl`."""
    return f"{job_prefix(prefix, tenant, job_id)}/manifest.jsonl"


def upload_key(tenant: str, upload_id: str, filename: str) -> str:
    """`uploads/{tenant}/{upload_id}/{safe_name(basename)}` for an uploaded recording.

    Browsers may send a full client path (`C:\\rec\\a.wav`), so only its last part is kept.
    """
    basename = PurePosixPath(filename.replace("\\", "/")).name
    return _join(
        "uploads",
        _segment(tenant, "Tenant"),
        _segment(upload_id, "Upload id"),
        safe_name(basename),
    )
