"""The live progress bar: fits 80 columns and shows the whole job id."""

from __future__ import annotations

import io
import re
from typing import Any

from rich.console import Console

from speechbatch.progress import follow

JOB_ID = "job_38c098fe666c4f4eb07646a06f14953f"


def job(status: str, succeeded: int, failed: int, total: int = 1000) -> dict[str, Any]:
    left = total - succeeded - failed
    counts = {"total": total, "succeeded": succeeded, "failed": failed, "canceled": 0}
    counts |= {"queued": left, "running": 0}
    return {"id": JOB_ID, "kind": "tts", "provider": "slng", "status": status, "counts": counts}


def test_bar_fits_80_columns_with_the_whole_id_and_counts() -> None:
    """Every line drawn at 80 columns fits, and the full id, done/total and failures show."""
    states = iter(
        [job("running", 10, 0), job("running", 500, 3), job("completed_with_errors", 990, 10)]
    )
    out = io.StringIO()
    console = Console(file=out, width=80, force_terminal=True, color_system=None)
    final = follow(lambda: next(states), console=console, sleep=lambda _s: None)
    assert final["status"] == "completed_with_errors"
    text = out.getvalue()
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "\n", text)  # cursor moves end a line
    lines = [line for chunk in plain.split("\r") for line in chunk.splitlines()]
    assert any("1000/1000" in line for line in lines)
    assert all(len(line.rstrip()) <= 80 for line in lines), [x for x in lines if len(x) > 80]
    assert JOB_ID in text
    assert "1000/1000" in text and "10 failed" in text
    assert "…" not in text
