"""Archive outputs in another bucket (issue 12): `output{url, layout: mirror}`.

An archive job's transcripts may go to a bucket (or, in local mode, a folder) other than
the service's own storage, laid out as the archive is: the object `calls/2026/01/a.wav`
below `source.prefix` `s3://archive/calls/` becomes `s3://out/transcripts/2026/01/a.wav.json`
for `output.url` `s3://out/transcripts/`, with each rendering beside it. Rules:

- a destination is allowed only by a `write:` entry of SPEECHBATCH_ARCHIVE_BUCKETS that
  covers it (`write:s3://out/transcripts`, `acme=write:s3://acme-out`); a plain entry lets
  tenants read a place, never write to it;
- a destination overlapping the service's own storage is refused, as a source is: it holds
  every tenant's uploads, outputs and manifests, and a mirror at a chosen prefix could
  overwrite them (`output.prefix` with `layout: mirror` is how outputs are mirrored there,
  below the tenant's own folder);
- keys below the destination carry no tenant segment (they mirror the archive exactly), so
  an entry without `tenant=` is a place every tenant of the deployment shares: name the
  tenant in the entry to keep it one tenant's.

Where it is kept: the job's options (`OUTPUT_URL_OPTION`), so no column is needed; the API
shows it as `output.url` and leaves it out of `options`. Each item's `output_key` is then the
object's full URL (`s3://out/transcripts/2026/01/a.wav.json`): the item records where its
files are, so views, streaming, manifests and a later job's `skipped` pointer resolve the
store from the key itself (`OutputStores`), whatever that later job's own destination is.
The manifest stays in the service's storage, under `output.prefix`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from jobs.archive_keys import readable_key
from jobs.archives import ArchivePolicy, Location, parse_location
from jobs.error_codes import ErrorCode
from jobs.errors import invalid
from jobs.schemas import JobCreate
from storage.objects import ObjectStore, StorageUnavailable
from storage.s3 import BucketMissing
from storage.stores import BucketStores

OUTPUT_URL_OPTION = "output_url"  # the job options' key for the destination URL
URL_SCHEMES = ("s3://", "file:///")


def destination_of(options: Mapping[str, Any] | None) -> str | None:
    """The destination URL a job's options record (None: the service's own storage)."""
    value = (options or {}).get(OUTPUT_URL_OPTION)
    return value if isinstance(value, str) else None


def public_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """A job's options as clients sent them (the destination shows as `output.url`)."""
    return {k: v for k, v in (options or {}).items() if k != OUTPUT_URL_OPTION}


def check_layout(body: JobCreate) -> None:
    """`output.layout: mirror` needs an archive source to mirror; `output.url` is a mirror."""
    if body.output.url is not None:
        if body.source is None:
            raise invalid(
                ErrorCode.INVALID_ARCHIVE,
                "output.url mirrors an archive's folders into another bucket; it needs a "
                "`source` prefix.",
            )
        if "layout" in body.output.model_fields_set and body.output.layout != "mirror":
            raise invalid(
                ErrorCode.INVALID_ARCHIVE,
                "output.url lays outputs out as the archive is; use layout 'mirror' with it "
                "(or leave layout out).",
            )
    if body.output.layout == "mirror" and body.source is None:
        raise invalid(
            ErrorCode.INVALID_ARCHIVE,
            "output.layout 'mirror' mirrors an archive's folders; it needs a `source` prefix.",
        )


def plan_destination(
    body: JobCreate, policy: ArchivePolicy, tenant_name: str | None
) -> Location | None:
    """The checked `output.url` as a folder-like Location (its prefix ends with `/`), or
    None; ApiError 422 `invalid_archive` (malformed) or `output_forbidden` (not allowed)."""
    url = body.output.url
    if url is None:
        return None
    try:
        place = parse_location(url, "output.url")
    except ValueError as exc:
        raise invalid(ErrorCode.INVALID_ARCHIVE, str(exc)) from None
    if place.prefix and not place.prefix.endswith("/"):
        place = Location(place.scheme, place.bucket, place.prefix + "/")
    if policy.storage is not None and place.overlaps(policy.storage):
        raise invalid(
            ErrorCode.OUTPUT_FORBIDDEN,
            f"output.url {place.url!r} overlaps this service's own storage, which holds every "
            "tenant's uploads and outputs; mirror there with output.prefix and layout "
            "'mirror' instead, or name another bucket.",
        )
    if place.scheme == "file" and policy.any_local_dir:
        return place
    for entry in policy.entries:
        if not entry.write or entry.tenant not in (None, tenant_name):
            continue
        if entry.location.covers(place) or entry.location == place:
            return place
    raise invalid(
        ErrorCode.OUTPUT_FORBIDDEN,
        f"output.url {place.url!r} is not a place this deployment lets you write; its "
        "operator lists those in SPEECHBATCH_ARCHIVE_BUCKETS as write: entries (e.g. "
        "write:s3://transcripts/2026).",
    )


def probe_destination(stores: BucketStores, place: Location | None) -> None:
    """Refuse (422 `output_unavailable`) a destination bucket that does not exist, so its
    items do not wait for it forever; a refusal or an outage of the probe is let through
    (write-only credentials may not see the bucket; the write itself then says)."""
    if place is None or place.scheme != "s3":
        return
    try:
        stores.bucket(place.bucket).check()
    except BucketMissing:
        raise invalid(
            ErrorCode.OUTPUT_UNAVAILABLE,
            f"output.url {place.url!r} names the bucket {place.bucket!r}, which does not "
            "exist; create it (or name another) and submit again.",
        ) from None
    except StorageUnavailable:
        return


def destination_key(destination: str, relative: str, ext: str) -> str | None:
    """The URL of a mirrored output below `destination` (`{destination}{relative}.{ext}`),
    or None when its key would break our key rules (the item keeps the job layout then)."""
    place = parse_location(destination, "output.url")
    key = f"{place.prefix}{relative}.{ext}"
    return place.object_url(key) if readable_key(key) else None


def is_destination_url(key: str) -> bool:
    return key.startswith(URL_SCHEMES)


class OutputStores:
    """Outputs wherever their key says: a plain key in the service's store (`base`), an
    `s3://bucket/key` or `file:///path` URL (an `output.url` destination) in that bucket or
    folder. The URLs come from the database, written by workers after a submit-time check,
    never from a request."""

    def __init__(self, base: ObjectStore, others: BucketStores) -> None:
        self.base, self.others = base, others

    def locate(self, key: str) -> tuple[ObjectStore, str]:
        """The store that holds `key` and the key inside it (ValueError: a malformed URL)."""
        if not is_destination_url(key):
            return self.base, key
        place = parse_location(key, "output key")
        if place.scheme == "s3":
            return self.others.bucket(place.bucket), place.prefix
        return self.others.folders(), place.prefix

    def put_bytes(self, key: str, data: bytes, content_type: str) -> int:
        store, inner = self.locate(key)
        return store.put_bytes(inner, data, content_type)

    def delete(self, key: str) -> None:
        store, inner = self.locate(key)
        store.delete(inner)

    def size(self, key: str) -> int | None:
        store, inner = self.locate(key)
        return store.size(inner)

    def iter_chunks(self, key: str, chunk_size: int = 65536) -> Iterator[bytes]:
        store, inner = self.locate(key)
        return store.iter_chunks(inner, chunk_size)

    def presigned_url(self, key: str, expires_s: int) -> str | None:
        store, inner = self.locate(key)
        return store.presigned_url(inner, expires_s)
