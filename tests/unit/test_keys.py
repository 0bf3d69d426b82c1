"""Object keys are deterministic and no user-supplied string can move them out of their job."""

from __future__ import annotations

import pytest

from storage.keys import (
    UnsafeKey,
    job_prefix,
    manifest_key,
    output_key,
    safe_name,
    upload_key,
    validate_key,
    validate_prefix,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("hello", "hello"),
        ("Line 01.wav", "Line_01.wav"),
        ("a-b_c.d", "a-b_c.d"),
        ("../etc/passwd", "etc_passwd"),
        ("/abs/path", "abs_path"),
        ("..\\windows\\system32", "windows_system32"),
        (".hidden", "hidden"),
        ("__init__", "init__"),
        ("héllo wörld", "h_llo_w_rld"),
        ("日本語", "item"),
        ("", "item"),
        ("..", "item"),
        ("tab\there\nnewline", "tab_here_newline"),
        ("x" * 200, "x" * 80),
    ],
)
def test_safe_name_keeps_only_portable_characters(value: str, expected: str) -> None:
    """safe_name maps any string onto [A-Za-z0-9._-], never empty, never hidden, never long."""
    assert safe_name(value) == expected


def test_safe_name_honours_max_len_and_is_deterministic() -> None:
    """The same input always gives the same name, cut to max_len."""
    assert safe_name("abcdefgh", max_len=3) == "abc"
    assert safe_name("a b/c") == safe_name("a b/c") == "a_b_c"


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("", ""),
        ("outputs", "outputs"),
        ("outputs/", "outputs"),
        ("team/run-1", "team/run-1"),
        ("équipe/été", "équipe/été"),
        ("a..b/c", "a..b/c"),
    ],
)
def test_validate_prefix_accepts_and_normalises(prefix: str, expected: str) -> None:
    """Relative prefixes pass, with a trailing slash dropped; unicode letters are allowed."""
    assert validate_prefix(prefix) == expected


@pytest.mark.parametrize(
    "prefix",
    [
        "..",
        "../x",
        "a/../../x",
        "a/..",
        "./a",
        "/",
        "/etc",
        "C:/Windows",
        "a\\b",
        "..\\x",
        "a//b",
        "a//",
        "a\x00b",
        "a\nb",
        "a\u202eb",  # right-to-left override: renders a different name than it stores
        "x" * 201,
    ],
)
def test_validate_prefix_refuses_escapes(prefix: str) -> None:
    """Traversal, absolute, backslash, control, empty-segment and overlong prefixes raise."""
    with pytest.raises(UnsafeKey):
        validate_prefix(prefix)


def test_unsafe_key_is_a_value_error() -> None:
    """Callers that already handle ValueError (e.g. request validation) catch UnsafeKey too."""
    assert issubclass(UnsafeKey, ValueError)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("out", "acme", "job1", 1, "intro", "wav"), "out/acme/job1/000001-intro.wav"),
        (("", "acme", "job1", 7, "intro", "mp3"), "acme/job1/000007-intro.mp3"),
        (("a/b/", "acme", "j", 123456, "x", "json"), "a/b/acme/j/123456-x.json"),
        (
            ("out", "acme", "job1", 2, "../../etc/passwd", "wav"),
            "out/acme/job1/000002-etc_passwd.wav",
        ),
        (("out", "acme", "job1", 3, "/abs", "srt"), "out/acme/job1/000003-abs.srt"),
        (("out", "acme", "job1", 4, "", "vtt"), "out/acme/job1/000004-item.vtt"),
        (("out", "acme", "job1", 5, "über", "txt"), "out/acme/job1/000005-ber.txt"),
        (("out", "acme", "job1", 1234567, "n", "wav"), "out/acme/job1/1234567-n.wav"),
    ],
)
def test_output_key_layout(args: tuple[str, str, str, int, str, str], expected: str) -> None:
    """output_key follows design §7 and cleans the item name."""
    assert output_key(*args) == expected


@pytest.mark.parametrize(
    "args",
    [
        ("../x", "acme", "job1", 1, "n", "wav"),
        ("/out", "acme", "job1", 1, "n", "wav"),
        ("out", "..", "job1", 1, "n", "wav"),
        ("out", "a/b", "job1", 1, "n", "wav"),
        ("out", "", "job1", 1, "n", "wav"),
        ("out", "acme", "../other", 1, "n", "wav"),
        ("out", "acme", ".job", 1, "n", "wav"),
        ("out", "acme", "job1", -1, "n", "wav"),
        ("out", "acme", "job1", 1, "n", "../wav"),
        ("out", "acme", "job1", 1, "n", "tar.gz"),
        ("out", "acme", "job1", 1, "n", ""),
    ],
)
def test_output_key_refuses_unsafe_parts(args: tuple[str, str, str, int, str, str]) -> None:
    """A bad prefix, identifier, sequence number or extension raises instead of being repaired."""
    with pytest.raises(UnsafeKey):
        output_key(*args)


def test_every_output_key_stays_under_its_job_prefix() -> None:
    """Whatever the item name, the key starts with the job's folder and adds one segment."""
    folder = job_prefix("out", "acme", "job1")
    for name in ["../../x", "/", "..", "a/../../b", "\\..\\", "\x00", "ok"]:
        key = output_key("out", "acme", "job1", 1, name, "wav")
        assert key.startswith(folder + "/")
        assert "/" not in key.removeprefix(folder + "/")
        assert validate_key(key) == key


def test_manifest_key_layout() -> None:
    """The manifest sits beside the job's outputs."""
    assert manifest_key("out", "acme", "job1") == "out/acme/job1/manifest.jsonl"
    assert manifest_key("", "acme", "job1") == "acme/job1/manifest.jsonl"


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("call 1.wav", "uploads/acme/up1/call_1.wav"),
        ("../../etc/passwd", "uploads/acme/up1/passwd"),
        ("C:\\Users\\me\\rec.flac", "uploads/acme/up1/rec.flac"),
        ("..", "uploads/acme/up1/item"),
        ("", "uploads/acme/up1/item"),
        ("запись.ogg", "uploads/acme/up1/ogg"),
    ],
)
def test_upload_key_keeps_only_a_safe_basename(filename: str, expected: str) -> None:
    """upload_key reduces any client filename to one safe segment."""
    assert upload_key("acme", "up1", filename) == expected


def test_upload_key_refuses_unsafe_identifiers() -> None:
    """Tenant and upload id must already be single safe segments."""
    with pytest.raises(UnsafeKey):
        upload_key("../acme", "up1", "a.wav")
    with pytest.raises(UnsafeKey):
        upload_key("acme", "up/1", "a.wav")


@pytest.mark.parametrize("key", ["", "a/", "/a", "../a", "a/./b", "a\\b"])
def test_validate_key_refuses_non_keys(key: str) -> None:
    """Empty, folder-like, absolute and traversing object keys raise."""
    with pytest.raises(UnsafeKey):
        validate_key(key)


@pytest.mark.parametrize("value", ["../a b.wav", "héllo", "", "x" * 300, "._.x", "ok-1.wav"])
def test_safe_name_is_idempotent(value: str) -> None:
    """Cleaning an already clean name changes nothing, so a stored name can be cleaned again."""
    once = safe_name(value)
    assert safe_name(once) == once
    assert upload_key("acme", "up1", once).endswith("/" + once)
