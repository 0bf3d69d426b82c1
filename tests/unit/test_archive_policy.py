"""Archive sources without services: what a prefix and an allowlist entry mean, which
objects pass the filters, the keys and ids items get, and the job status they imply."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from jobs.archive_keys import Filters, archive_digest, item_id_for, mirror_key, readable_key
from jobs.archives import ArchivePolicy, parse_archive_buckets, parse_location, storage_location
from jobs.errors import ApiError
from jobs.settings import Settings
from jobs.status import JobStatus, job_status_from_counts
from speechbatch.archive_inputs import ArchiveChoices, archive_prefix, with_folders_expanded
from speechbatch.inputs import InputError

NOW = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
JOB = {"provider": "local", "model": "pocketsphinx", "options": {"transcript_formats": ["json"]}}


def test_prefixes_parse_into_bucket_and_key_prefix_and_refuse_escapes() -> None:
    """s3:// and file:/// prefixes parse; '..', '.', empty segments, control characters,
    bad bucket names and other schemes are refused with a sentence."""
    assert parse_location("s3://archive/calls/2026/").prefix == "calls/2026/"
    assert parse_location("file:///srv/rec/").prefix == "srv/rec/"
    for bad in (
        "s3://archive/calls/../x/",
        "s3://archive/./x",
        "s3://archive/a//b",
        "s3://archive/a\x00b",
        "s3://Bad_Bucket/x",
        "s3://a/x",
        "http://archive/x",
        "file://relative/x",
    ):
        with pytest.raises(ValueError, match=r"\S"):
            parse_location(bad)


def test_an_entry_covers_its_folders_only_and_tenant_entries_are_their_tenants() -> None:
    """`calls` covers calls/2026/ but not callsx/; `globex=` is globex's alone; a prefix that
    overlaps the service's storage is refused even when an entry covers it."""
    policy = ArchivePolicy(
        parse_archive_buckets("archive/calls, globex=s3://shared/globex, s3://ours"),
        storage_location("s3://ours/sb"),
    )
    policy.check(parse_location("s3://archive/calls/2026/"), "acme")
    policy.check(parse_location("s3://shared/globex/x/"), "globex")
    policy.check(parse_location("s3://ours/other/"), "acme")  # outside the storage prefix
    for place, tenant in (
        ("s3://archive/callsx/", "acme"),
        ("s3://archive/", "acme"),
        ("s3://shared/globex/x/", "acme"),
        ("s3://ours/sb/uploads/", "acme"),
        ("s3://ours/", "acme"),
        ("s3://ours/s", "acme"),  # a string prefix of the storage's keys
        ("file:///srv/", "acme"),
    ):
        with pytest.raises(ApiError) as refused:
            policy.check(parse_location(place), tenant)
        assert refused.value.code == "archive_forbidden", place


def test_a_bad_archive_buckets_setting_is_refused_at_start_up() -> None:
    """SPEECHBATCH_ARCHIVE_BUCKETS with an unusable entry fails when settings load."""
    with pytest.raises(ValidationError, match="SPEECHBATCH_ARCHIVE_BUCKETS entry"):
        Settings(archive_buckets="ok-bucket, s3://x/../y")
    assert Settings(archive_buckets="a-bucket/calls,t=file:///srv").archive_buckets


def test_filters_pick_by_pattern_size_and_time_and_default_to_audio_files() -> None:
    """Pattern (any case, across folders), size bounds and modified_since each exclude; no
    pattern means audio file names only."""
    since = Filters(pattern="*.wav", min_bytes=10, max_bytes=100, modified_since=NOW)
    assert since.matches("a/b/c.WAV", 50, NOW)
    assert not since.matches("a/b/c.mp3", 50, NOW)
    assert not since.matches("c.wav", 5, NOW)
    assert not since.matches("c.wav", 500, NOW)
    assert not since.matches("c.wav", 50, NOW - timedelta(seconds=1))
    audio = Filters()
    assert audio.matches("x/y.flac", 1, NOW) and not audio.matches("x/notes.txt", 1, NOW)


def test_keys_ids_and_mirrors_never_escape() -> None:
    """Item ids are unique by their seq and safe as names; mirror keys keep the tenant
    segment and are refused (None) when they would hold '..' or run over 200 characters."""
    assert item_id_for(7, "calls/2026/a b..c.wav") == "7-a_b_c.wav"
    assert mirror_key("out", "t_1", "2026/01/a.wav", "json") == "out/t_1/2026/01/a.wav.json"
    assert mirror_key("", "t_1", "a.wav", "json") == "t_1/a.wav.json"
    assert mirror_key("out", "t_1", "x/../../t_2/a.wav", "json") is None
    assert mirror_key("out", "t_1", "d" * 200 + ".wav", "json") is None
    assert readable_key("calls/a.wav") and not readable_key("calls/\x01.wav")


def test_the_digest_changes_with_the_object_or_the_transcript_settings_only() -> None:
    """Same URL, ETag and shaping options: same digest; a new ETag, model, language or
    rendering changes it; the transport does not."""
    base = archive_digest("s3://a/k.wav", "e1", JOB)
    assert base == archive_digest(
        "s3://a/k.wav",
        "e1",
        JOB | {"options": {"transcript_formats": ["json"], "transport": "http"}},
    )
    assert base != archive_digest("s3://a/k.wav", "e2", JOB)
    assert base != archive_digest("s3://a/other.wav", "e1", JOB)
    assert base != archive_digest("s3://a/k.wav", "e1", JOB | {"model": "other"})
    assert base != archive_digest("s3://a/k.wav", "e1", JOB | {"options": {"language": "de"}})


@pytest.mark.parametrize(
    ("counts", "expanding", "expected"),
    [
        ({"skipped": 3}, False, JobStatus.SUCCEEDED),
        ({"skipped": 2, "succeeded": 1}, False, JobStatus.SUCCEEDED),
        ({"skipped": 2, "failed": 1}, False, JobStatus.COMPLETED_WITH_ERRORS),
        ({"succeeded": 3}, True, JobStatus.EXPANDING),
        ({}, True, JobStatus.EXPANDING),
        ({}, False, JobStatus.SUCCEEDED),
    ],
)
def test_skipped_items_count_as_done_and_an_expanding_job_is_never_finished(
    counts: dict[str, int], expanding: bool, expected: JobStatus
) -> None:
    """A job of skipped (and succeeded) items succeeded; while expanding it is `expanding`."""
    full = {
        k: counts.get(k, 0)
        for k in ("queued", "running", "succeeded", "failed", "canceled", "skipped")
    }
    assert job_status_from_counts(total=sum(full.values()), expanding=expanding, **full) == expected


def test_the_cli_turns_prefixes_and_folders_into_archive_jobs_or_uploads(tmp_path: Path) -> None:
    """An s3:// argument is an archive; a folder is one in local mode and its audio files
    (recursively, filtered) against an API; mixing a prefix with files is refused."""
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/one.wav", "a/b/two.WAV", "a/notes.txt"):
        (tmp_path / name).write_bytes(b"RIFF")
    assert archive_prefix(("s3://bucket/calls/",), local_mode=False) == "s3://bucket/calls/"
    assert archive_prefix((str(tmp_path / "a"),), local_mode=True) == f"file://{tmp_path}/a/"
    assert archive_prefix((str(tmp_path / "a"),), local_mode=False) is None
    with pytest.raises(InputError):
        archive_prefix(("s3://bucket/x/", "f.wav"), local_mode=True)
    files = with_folders_expanded((str(tmp_path / "a"),), ArchiveChoices())
    assert files == (str(tmp_path / "a/b/two.WAV"), str(tmp_path / "a/one.wav"))
    body = ArchiveChoices(pattern="*.wav", full=True, mirror_to="out").body("s3://b/p/")
    assert body == {
        "source": {"prefix": "s3://b/p/", "incremental": False, "pattern": "*.wav"},
        "output": {"prefix": "out", "layout": "mirror"},
    }
