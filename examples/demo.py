"""`make demo`: the main job end to end on embedded defaults, then a summary table.

1. `speechbatch tts` turns examples/script.txt into one WAV per line (offline espeak-ng).
2. `speechbatch stt` transcribes those files back (offline pocketsphinx).
3. A table compares each line with its transcript (word error rate).

No server, broker or cloud account is involved: with SPEECHBATCH_API_URL unset the CLI runs
the same pipeline in-process on SQLite and a local directory (in SPEECHBATCH_HOME).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "examples" / "script.txt"
OUT = ROOT / "out" / "demo"
CLI = str(Path(sys.executable).parent / "speechbatch")


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


def word_error_rate(reference: list[str], hypothesis: list[str]) -> float:
    """Levenshtein distance over words, divided by the reference length."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, start=1):
        current = [i]
        for j, hyp in enumerate(hypothesis, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref != hyp)))
        previous = current
    return previous[-1] / max(len(reference), 1)


def run(*args: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("SPEECHBATCH_API_URL",)}
    subprocess.run([CLI, *args], check=True, cwd=ROOT, env=env)


def main() -> None:
    shutil.rmtree(OUT, ignore_errors=True)
    run("tts", str(SCRIPT), "--provider", "local", "--out", str(OUT / "tts"))
    wavs = sorted((OUT / "tts").glob("*.wav"))
    run(
        "stt",
        *map(str, wavs),
        "--provider",
        "local",
        "--formats",
        "json,txt",
        "--out",
        str(OUT / "stt"),
    )

    lines = [line.strip() for line in SCRIPT.read_text().splitlines() if line.strip()]
    transcripts = sorted((OUT / "stt").glob("*.json"))
    table = Table(title="speechbatch demo: script → espeak-ng → pocketsphinx")
    for column in ("#", "line", "audio s", "transcript (offline engine)", "WER"):
        table.add_column(column)
    total_errors = 0.0
    for n, (line, path) in enumerate(zip(lines, transcripts, strict=True), start=1):
        result = json.loads(path.read_text())
        wer = word_error_rate(words(line), words(result["text"]))
        total_errors += wer * len(words(line))
        table.add_row(
            str(n), line, f"{result['duration_s'] or 0:.1f}", result["text"], f"{wer:.0%}"
        )
    Console().print(table)
    overall = total_errors / sum(len(words(line)) for line in lines)
    print(
        f"{len(wavs)} audio files in {OUT / 'tts'}, {len(transcripts)} transcripts in {OUT / 'stt'}"
    )
    print(
        f"overall word error rate {overall:.0%}: the offline engines are for trying speechbatch "
        "out; hosted providers are far more accurate."
    )


if __name__ == "__main__":
    main()
