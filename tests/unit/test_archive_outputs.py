"""`output.url` destinations without services: which SPEECHBATCH_ARCHIVE_BUCKETS entries
allow writing, the mirrored key a destination gives, and how output keys find their store."""

from __future__ import annotations

import pytest

from jobs.archive_outputs import OutputStores, destination_key, plan_destination
from jobs.archives import ArchivePolicy, parse_archive_buckets, parse_location, storage_location
from jobs.errors import ApiError
from jobs.schemas import JobCreate
from storage.memory import MemoryObjectStore
from storage.stores import BucketStores


def body(url: str) -> JobCreate:
    return JobCreate.model_validate(
        {
            "kind": "stt",
            "provider": "local",
            "source": {"prefix": "s3://arc/x/"},
            "output": {"url": url},
        }
    )


POLICY = ArchivePolicy(
    parse_archive_buckets("arc, write:out/t, acme=write:s3://acme-out"),
    storage_location("s3://own/sb"),
)


def test_write_entries_allow_writing_and_plain_ones_only_reading() -> None:
    """`write:` entries are parsed as write places (a tenant's too); a plain entry is not
    one, and a write entry is not listable."""
    entries = {(e.location.url, e.tenant, e.write) for e in POLICY.entries}
    assert entries == {
        ("s3://arc/", None, False),
        ("s3://out/t", None, True),
        ("s3://acme-out/", "acme", True),
    }
    place = plan_destination(body("s3://out/t/2026"), POLICY, None)
    assert place is not None and place.url == "s3://out/t/2026/"
    assert plan_destination(body("s3://acme-out/"), POLICY, "acme") is not None
    for url, tenant in (("s3://arc/x/", None), ("s3://out/tx/", None), ("s3://acme-out/", "b")):
        with pytest.raises(ApiError) as refused:
            plan_destination(body(url), POLICY, tenant)
        assert refused.value.code == "output_forbidden", url
    with pytest.raises(ApiError) as listed:
        POLICY.check(parse_location("s3://out/t/"), None)
    assert listed.value.code == "archive_forbidden"


def test_a_destination_key_mirrors_the_relative_path_or_gives_up_past_our_key_rules() -> None:
    """`{destination}{relative}.{ext}` as a URL; None when the key would be over 200
    characters (the item then keeps the job layout in the service's store)."""
    assert destination_key("s3://out/t/", "2026/a.wav", "json") == "s3://out/t/2026/a.wav.json"
    assert destination_key("s3://out/", "a" * 200 + ".wav", "json") is None


def test_output_keys_find_their_store_by_their_own_shape() -> None:
    """A plain key is the service store's; an s3:// URL is that bucket's key; a malformed
    URL is a ValueError, never a read of the service store."""
    base = MemoryObjectStore()
    outputs = OutputStores(base, BucketStores(base))
    assert outputs.locate("t/job/1.json") == (base, "t/job/1.json")
    store, key = outputs.locate("s3://out/t/2026/a.wav.json")
    assert (getattr(store, "bucket", None), key) == ("out", "t/2026/a.wav.json")
    with pytest.raises(ValueError, match="S3 bucket"):
        outputs.locate("s3://../x")
