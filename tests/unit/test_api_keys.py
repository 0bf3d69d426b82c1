"""API keys: typed, random, looked up by prefix, compared by digest."""

from jobs.keys import digest_key, generate_key, matches, split_prefix


def test_new_keys_are_unique_and_prefixed() -> None:
    """Keys carry the `sb_` tag and a 12-hex lookup prefix, and never repeat."""
    keys = {generate_key().plaintext for _ in range(200)}
    assert len(keys) == 200
    assert all(k.startswith("sb_") and split_prefix(k) for k in keys)


def test_digest_not_plaintext_is_what_matches() -> None:
    """Only the exact key matches its stored digest; the digest is not the key."""
    key = generate_key()
    assert key.digest == digest_key(key.plaintext) != key.plaintext
    assert matches(key.plaintext, key.digest)
    assert not matches(key.plaintext + "x", key.digest)


def test_foreign_shapes_have_no_prefix() -> None:
    """Strings that are not our keys are rejected before any lookup."""
    for value in ("", "sb_", "sk_live_abc", "sb_short_secret", "Bearer sb_x"):
        assert split_prefix(value) is None
