"""API keys: `sb_<prefix>_<secret>`, shown once, stored only as a SHA-256 digest.

The prefix is a public handle used to find the row; the digest of the whole key is
compared in constant time, so lookups never leak timing about the secret.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

KEY_TAG = "sb"


@dataclass(frozen=True)
class NewKey:
    plaintext: str
    prefix: str
    digest: str


def digest_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def generate_key() -> NewKey:
    """A fresh random key (160 bits of secret) with its lookup prefix and digest."""
    prefix = secrets.token_hex(6)
    plaintext = f"{KEY_TAG}_{prefix}_{secrets.token_urlsafe(20)}"
    return NewKey(plaintext=plaintext, prefix=prefix, digest=digest_key(plaintext))


def split_prefix(plaintext: str) -> str | None:
    """The lookup prefix of a presented key, or None when it is not shaped like ours."""
    parts = plaintext.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_TAG or len(parts[1]) != 12:
        return None
    return parts[1]


def matches(plaintext: str, digest: str) -> bool:
    return hmac.compare_digest(digest_key(plaintext), digest)
