"""A TTS line longer than its model's limit, through the real pipeline, database and store:
split, spoken piece by piece, stitched, with pieces already stored never asked for twice."""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from typing import Any

import pytest
import soundfile as sf
from sqlalchemy import select

from emulator.audio import render_speech
from jobs.models import Item
from storage.keys import manifest_key
from storage.objects import ObjectStore
from tests.integration.helpers import migrated_ledger, published
from tests.integration.test_pipeline import runtime, submitted
from workers.long_tts import PAUSE_S
from workers.pipeline import Outcome, run_item
from workers.providers.base import Synthesis
from workers.providers.errors import ProviderUnavailable
from workers.stitched_job import JOIN_PAUSE_S

pytestmark = pytest.mark.integration

RATE = 24000
SENTENCE = "The river bends past the old mill, and the town wakes up slowly. "
LINE = (SENTENCE * 12).strip()  # 791 characters: four pieces under Lightning's 250


class Pieces:
    """Speaks each text at 15 characters a second (as the emulator does) and counts the calls
    per text; the texts in `fail_once` fail on their first call (past in-call retries)."""

    name = "smallest"

    def __init__(self, fail_once: set[int] | None = None) -> None:
        self.calls: list[str] = []
        self.fail_once = fail_once or set()

    def synthesize(self, text: str, **_: Any) -> Synthesis:
        self.calls.append(text)
        if len(self.calls) - 1 in self.fail_once:
            raise ProviderUnavailable("503 from the provider", status_code=503)
        audio = render_speech(len(text) / 15, "linear16", RATE, "wav")[0]
        return Synthesis(audio, "audio/wav")

    def transcribe(self, audio: Any, *, model: str, options: Mapping[str, Any]) -> Any:
        raise NotImplementedError


def item_row(database_url: str, item_id: int) -> Item:
    with migrated_ledger(database_url).db.sessions() as session:
        return session.scalars(select(Item).where(Item.id == item_id)).one()


@pytest.fixture(params=["s3", "local"])
def store(request: pytest.FixtureRequest) -> ObjectStore:
    found: ObjectStore = request.getfixturevalue(f"{request.param}_store")
    return found


def test_a_long_line_is_spoken_in_pieces_and_stored_as_one_file(
    database_url: str, store: ObjectStore
) -> None:
    """A 791-character line for a 250-character model takes four calls, none over the limit,
    and becomes one WAV as long as its pieces plus the pauses; the item records 4 pieces and
    no piece object is left behind."""
    api, job = submitted(database_url, [LINE], provider="smallest")
    provider = Pieces()
    rt = runtime(database_url, store, provider)
    (item_id,) = published(api).ids
    assert run_item(rt, item_id) == Outcome.SUCCEEDED
    assert len(provider.calls) == 4 and all(len(text) <= 250 for text in provider.calls)
    assert " ".join(provider.calls) == LINE
    item = item_row(database_url, item_id)
    assert item.pieces == 4
    audio, rate = sf.read(io.BytesIO(store.get_bytes(item.output_key or "")))
    spoken = sum(len(text) / 15 for text in provider.calls) + 3 * PAUSE_S
    assert len(audio) / rate == pytest.approx(spoken, abs=0.02)
    left = set(store.list_keys(f"{job.tenant_id}/{job.id}/"))
    assert left == {item.output_key, manifest_key("", job.tenant_id, job.id)}  # no pieces


def test_a_failed_piece_is_retried_alone_and_stored_pieces_are_not_paid_for_again(
    database_url: str, store: ObjectStore
) -> None:
    """When the third piece fails past its in-call retries the item retries later; the next
    delivery asks only for pieces three and four, and the output is whole."""
    api, _ = submitted(database_url, [LINE], provider="smallest")
    provider = Pieces(fail_once={2})
    rt = runtime(database_url, store, provider, call_attempts=1)
    (item_id,) = published(api).ids
    assert run_item(rt, item_id) == Outcome.RETRYING
    assert len(provider.calls) == 3
    with migrated_ledger(database_url).db.sessions.begin() as session:  # due now
        session.get(Item, item_id).next_attempt_at = None  # type: ignore[union-attr]
    assert run_item(rt, item_id) == Outcome.SUCCEEDED
    # Calls: pieces 1, 2, 3 (failed); then 3 again and 4. Pieces 1 and 2 were not redone.
    assert len(provider.calls) == 5
    assert provider.calls[3] == provider.calls[2]
    assert " ".join(provider.calls[:2] + provider.calls[3:]) == LINE
    item = item_row(database_url, item_id)
    assert item.pieces == 4
    audio, rate = sf.read(io.BytesIO(store.get_bytes(item.output_key or "")))
    pieces = provider.calls[:2] + provider.calls[3:]
    assert len(audio) / rate == pytest.approx(
        sum(len(t) / 15 for t in pieces) + 3 * PAUSE_S, abs=0.02
    )


def test_a_stitched_job_gets_one_track_and_a_cue_sheet_when_it_ends(
    database_url: str, store: ObjectStore
) -> None:
    """With output.stitched, the job's end writes stitched.wav (its items in order, with
    pauses) and cues.json giving each item's start and end in it; a failed item is left out
    and listed."""
    texts = ["First line of the story.", "[[fail]] second line.", "Third and last line."]
    api, job = submitted(database_url, texts, provider="smallest", output={"stitched": True})
    provider = Pieces(fail_once={1})  # the second call fails for good (one attempt)
    rt = runtime(database_url, store, provider, call_attempts=1, item_attempts=1)
    outcomes = [run_item(rt, i) for i in published(api).ids]
    assert outcomes == [Outcome.SUCCEEDED, Outcome.FAILED, Outcome.SUCCEEDED]
    folder = f"{job.tenant_id}/{job.id}"
    cues = json.loads(store.get_bytes(f"{folder}/cues.json"))
    assert [c["id"] for c in cues["cues"]] == ["1", "3"] and cues["left_out"] == ["2"]
    audio, rate = sf.read(io.BytesIO(store.get_bytes(f"{folder}/stitched.wav")))
    first, last = (len(texts[n]) / 15 for n in (0, 2))
    assert cues["cues"][0] == {
        "id": "1",
        "seq": 1,
        "start_s": 0.0,
        "end_s": pytest.approx(first, abs=0.01),
    }
    assert cues["cues"][1]["start_s"] == pytest.approx(first + JOIN_PAUSE_S, abs=0.01)
    assert len(audio) / rate == pytest.approx(first + JOIN_PAUSE_S + last, abs=0.02)
