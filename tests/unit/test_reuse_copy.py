"""`ObjectStore.copy`, which reuse relies on, in the stores that need no server."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage.keys import UnsafeKey
from storage.localfs import LocalObjectStore
from storage.memory import MemoryObjectStore
from storage.objects import ObjectNotFound, ObjectStore


@pytest.fixture(params=["memory", "local"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "memory":
        return MemoryObjectStore()
    return LocalObjectStore(tmp_path / "objects")


def test_a_copy_is_an_independent_object_with_the_same_bytes(store: ObjectStore) -> None:
    """The copy has the source's bytes at its own key, and outlives the source's deletion."""
    store.put_bytes("t/job/000001-1.wav", b"RIFF-audio", "audio/wav")
    assert store.copy("t/job/000001-1.wav", "t/other/000003-3.wav") == len(b"RIFF-audio")
    store.delete("t/job/000001-1.wav")
    assert store.get_bytes("t/other/000003-3.wav") == b"RIFF-audio"


def test_copying_a_missing_object_says_so(store: ObjectStore) -> None:
    """A source that is gone raises ObjectNotFound, and nothing appears at the target."""
    with pytest.raises(ObjectNotFound):
        store.copy("t/job/gone.wav", "t/job/target.wav")
    assert store.size("t/job/target.wav") is None


def test_copy_refuses_keys_that_escape_the_store(store: ObjectStore) -> None:
    """Both keys are checked like every other key."""
    store.put_bytes("t/a.wav", b"x", "audio/wav")
    with pytest.raises(UnsafeKey):
        store.copy("t/a.wav", "../escape.wav")
