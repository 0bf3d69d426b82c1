"""POST → queue → worker → provider (emulator) → S3 → poll, with every part a real process."""

from __future__ import annotations

import io
import json
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf

from tests.e2e.stack import Stack

pytestmark = pytest.mark.e2e


def submit(stack: Stack, body: dict[str, Any]) -> str:
    with stack.client() as client:
        response = client.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def tts_body(texts: list[str]) -> dict[str, Any]:
    return {
        "kind": "tts",
        "provider": "slng",
        "model": "slng/deepgram/aura:2-en",
        "voice": "aura-2-thalia-en",
        "options": {"format": "wav"},
        "items": [{"id": f"line-{n:03d}", "text": t} for n, t in enumerate(texts)],
    }


def fetch(url: str) -> bytes:
    response = httpx.get(url, timeout=30)
    assert response.status_code == 200, (url, response.status_code)
    return response.content


def tone_wav(seconds: float, freq: float) -> bytes:
    t = np.arange(int(16000 * seconds)) / 16000
    buffer = io.BytesIO()
    sf.write(
        buffer,
        (0.3 * np.sin(2 * np.pi * freq * t)).astype("float32"),
        16000,
        format="WAV",
        subtype="PCM_16",
    )
    return buffer.getvalue()


def test_50_line_tts_job_succeeds_with_decodable_audio(stack: Stack) -> None:
    """Every line of a 50-line script becomes a WAV in S3 that soundfile decodes."""
    texts = [f"Line number {n} of the bulk voiceover script." for n in range(50)]
    job = stack.wait_for_job(submit(stack, tts_body(texts)))
    assert job["status"] == "succeeded", job
    assert job["counts"]["succeeded"] == 50
    assert job["usage"]["characters"] == sum(len(t) for t in texts)
    items = stack.items(job["id"])
    assert len(items) == 50
    for item in items:
        audio, rate = sf.read(io.BytesIO(fetch(item["output"]["url"])))
        assert rate == 24000 and len(audio) / rate == pytest.approx(
            item["output"]["duration_s"], rel=0.01
        )
        assert item["output"]["key"].endswith(f"-{item['id']}.wav")
        assert item["attempts"] == 1


def test_10_file_stt_job_writes_parseable_transcripts(stack: Stack) -> None:
    """Ten uploaded recordings come back as JSON transcripts plus SRT/VTT/TXT renderings."""
    sources = [
        stack.upload(f"call-{n}.wav", tone_wav(1.0 + n * 0.2, 220 + 40 * n)) for n in range(10)
    ]
    body = {
        "kind": "stt",
        "provider": "slng",
        "model": "slng/deepgram/nova:3-en",
        "items": [{"id": f"call-{n}", "source": s} for n, s in enumerate(sources)],
    }
    job = stack.wait_for_job(submit(stack, body))
    assert job["status"] == "succeeded", job
    for n, item in enumerate(stack.items(job["id"])):
        files = {f["format"]: f["url"] for f in item["output"]["files"]}
        assert set(files) == {"json", "txt", "srt", "vtt"}
        transcript = json.loads(fetch(files["json"]))
        assert transcript["text"] and transcript["provider"] == "slng"
        assert transcript["duration_s"] == pytest.approx(1.0 + n * 0.2, abs=0.05)
        assert all(
            w["start"] <= w["end"] <= transcript["duration_s"] + 0.01 for w in transcript["words"]
        )
        assert fetch(files["srt"]).startswith(b"1\n")
        assert fetch(files["vtt"]).startswith(b"WEBVTT")


def test_job_survives_a_provider_failing_30_percent_of_calls(stack: Stack) -> None:
    """With 30 % of calls failing (5xx, 429, timeouts) every item still succeeds, via retries."""
    dials = {"fault_rate": 0.3, "timeout_s": 5, "fault_kinds": ["500", "503", "429", "timeout"]}
    with stack.emulator() as emulator:
        before = emulator.get("/_emulator/config").json()
        emulator.patch("/_emulator/config", json=dials)
        try:
            emulator.delete("/_emulator/requests")
            job = stack.wait_for_job(
                submit(stack, tts_body([f"Flaky line {n}." for n in range(40)])), timeout=240
            )
            records = emulator.get("/_emulator/requests").json()
        finally:  # the module's later tests share this stack
            emulator.patch("/_emulator/config", json={k: before[k] for k in dials})
    assert job["status"] == "succeeded", job
    assert job["counts"]["succeeded"] == 40
    faults = [r for r in records if r["status"] != 200]
    assert faults, "the emulator injected no faults, so this test proved nothing"
    assert len(records) >= 40 + len(faults) - 5  # timeouts may be cut short by the client
    assert sum(i["attempts"] for i in stack.items(job["id"])) >= 40


def test_one_bad_item_fails_alone_with_its_reason(stack: Stack) -> None:
    """A line the provider rejects fails with the provider's reason; the rest succeed."""
    texts = ["Fine line one.", "This line is rejected [[status:400]]", "Fine line three."]
    job = stack.wait_for_job(submit(stack, tts_body(texts)))
    assert job["status"] == "completed_with_errors"
    assert (job["counts"]["succeeded"], job["counts"]["failed"]) == (2, 1)
    bad = next(i for i in stack.items(job["id"]) if i["status"] == "failed")
    assert bad["id"] == "line-001" and bad["attempts"] == 1
    assert bad["error"]["code"] == "invalid_input"
    assert "400" in bad["error"]["message"] or "rejected" in bad["error"]["message"].lower()


def test_a_line_over_the_limit_is_spoken_in_pieces(stack: Stack) -> None:
    """A 1,500-character line for a 1,000-character model is split at a sentence end, spoken
    in two requests and stored as one WAV as long as the two pieces together."""
    sentence = "The river bends past the old mill and the town wakes up slowly. "
    long_line = (sentence * 24).strip()[:1500]
    job = stack.wait_for_job(submit(stack, tts_body(["Short.", long_line])))
    assert job["status"] == "succeeded", job
    long_item = next(i for i in stack.items(job["id"]) if i["output"]["pieces"] == 2)
    audio, rate = sf.read(io.BytesIO(fetch(long_item["output"]["url"])))
    assert len(audio) / rate == pytest.approx(len(long_line) / 15, rel=0.05)


def test_cli_against_the_api_downloads_every_output(stack: Stack, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`speechbatch tts` with SPEECHBATCH_API_URL set submits, follows and downloads, exit 0;
    `tts --no-wait` then `wait --out` does the same in two steps."""
    script = tmp_path / "script.csv"
    script.write_text("id,text\nintro,Hello from the CLI.\noutro,Goodbye from the CLI.\n")
    out = tmp_path / "out"
    env = {"SPEECHBATCH_API_URL": stack.api_url, "SPEECHBATCH_API_KEY": stack.api_key}
    args = ("tts", str(script), "--provider", "slng", "--format", "flac")
    result = stack.run_cli(*args, "--out", str(out), extra_env=env)
    assert result.returncode == 0, result.stderr
    job_id = stack.run_cli(*args, "--no-wait", extra_env=env).stdout.strip()
    waited = stack.run_cli("wait", job_id, "--out", str(tmp_path / "later"), extra_env=env)
    assert waited.returncode == 0, waited.stderr
    assert len(list((tmp_path / "later").iterdir())) == 2
    files = sorted(p.name for p in out.iterdir())
    assert files == ["000001-intro.flac", "000002-outro.flac"]
    assert sf.info(str(out / files[0])).format == "FLAC"


def test_cli_exit_codes_for_failed_items_and_bad_input(stack: Stack, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The CLI exits 1 when an item fails and 2 when the input is refused."""
    env = {"SPEECHBATCH_API_URL": stack.api_url, "SPEECHBATCH_API_KEY": stack.api_key}
    script = tmp_path / "s.txt"
    script.write_text("fine\nbroken [[status:400]]\n")
    partial = stack.run_cli(
        "tts", str(script), "--provider", "slng", "--out", str(tmp_path / "o"), extra_env=env
    )
    assert partial.returncode == 1, partial.stderr
    refused = stack.run_cli("tts", str(script), "--provider", "nope", extra_env=env)
    assert refused.returncode == 2 and "unknown_provider" in refused.stderr
    wrong_key = stack.run_cli(
        "tts",
        str(script),
        "--provider",
        "slng",
        extra_env={**env, "SPEECHBATCH_API_KEY": "sb_000000000000_x"},
    )
    assert wrong_key.returncode == 2 and "unauthorized" in wrong_key.stderr


def test_cli_stt_against_the_api_uploads_and_downloads(stack: Stack, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`speechbatch stt` with a glob uploads each file, follows the job and saves transcripts."""
    for n in range(2):
        (tmp_path / f"rec-{n}.wav").write_bytes(tone_wav(1.0, 300 + 100 * n))
    out = tmp_path / "out"
    result = stack.run_cli(
        "stt",
        str(tmp_path / "rec-*.wav"),
        "--provider",
        "slng",
        "--formats",
        "json,srt",
        "--out",
        str(out),
        extra_env={"SPEECHBATCH_API_URL": stack.api_url, "SPEECHBATCH_API_KEY": stack.api_key},
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "000001-rec-0.json",
        "000001-rec-0.srt",
        "000002-rec-1.json",
        "000002-rec-1.srt",
    ]
    assert json.loads((out / "000002-rec-1.json").read_text())["duration_s"] == pytest.approx(1.0)
