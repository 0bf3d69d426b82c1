"""How a worker process is started: task events, the module-level app, and the log format.

Nothing here connects to a broker: the app is only built, and the logging setup runs in a
child process so that this one's handlers stay as pytest set them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from jobs.settings import get_settings
from speechbatch import processes
from speechbatch.cli import main
from workers.celery_app import worker_argv

ROOT = Path(__file__).resolve().parents[2]


def run_python(code: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`python -c code` from an empty directory (no .env) with only `env` configured."""
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_task_events_are_sent_only_when_asked() -> None:
    """Celery's -E is in the worker's arguments with `events` and absent by default."""
    assert "-E" not in worker_argv(4)
    assert worker_argv(4, events=True).count("-E") == 1


def test_without_banner_celery_is_told_to_be_quiet() -> None:
    """JSON mode drops Celery's printed banner with its global --quiet, given before `worker`."""
    assert "--quiet" not in worker_argv(4)
    argv = worker_argv(4, banner=False)
    assert argv.index("--quiet") < argv.index("worker")


def test_worker_command_passes_events_flag(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`speechbatch worker --events` starts the worker with events on; without it, off."""
    started: list[dict[str, Any]] = []
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SPEECHBATCH_BROKER_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setattr(processes, "run_worker", lambda settings, **kw: started.append(kw))
    get_settings.cache_clear()
    try:
        for args in (["worker", "--events"], ["worker"]):
            result = CliRunner().invoke(main, args)
            assert result.exit_code == 0, result.output
    finally:
        get_settings.cache_clear()
    assert [kw["events"] for kw in started] == [True, False]


def test_module_app_is_built_from_the_environment(tmp_path: Path) -> None:
    """`workers.celery_app.app` (what `celery -A workers.celery_app` loads) uses the broker in
    SPEECHBATCH_BROKER_URL, and importing the module alone reads no settings."""
    code = (
        "import workers.celery_app as m\n"
        "assert 'app' not in vars(m)\n"
        "app = m.app\n"
        "print(app.conf.broker_url, app.main, app is m.app, 'speechbatch.canary' in app.tasks)"
    )
    done = run_python(code, tmp_path, SPEECHBATCH_BROKER_URL="redis://10.9.8.7:6390/4")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["redis://10.9.8.7:6390/4", "speechbatch", "True", "True"]


def test_json_log_format_writes_one_object_per_line(tmp_path: Path) -> None:
    """`logging_setup("json")` makes every record one JSON line, `extra=` fields as keys,
    tracebacks and warnings included."""
    code = (
        "import logging, warnings\n"
        "from speechbatch.processes import logging_setup\n"
        "logging_setup('json')\n"
        "log = logging.getLogger('workers.outcomes')\n"
        "log.warning('item 7 outcome failed', extra={'job_id': 'j1', 'item_id': 7,"
        " 'provider': 'slng', 'error_code': 'provider_auth_failed'})\n"
        "logging.getLogger('celery.apps.worker').info('w@h ready.')\n"
        "try:\n    1 / 0\nexcept ZeroDivisionError:\n    log.exception('boom\\nsecond line')\n"
        "warnings.warn('careful')\n"
    )
    done = run_python(code, tmp_path)
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stderr.splitlines()]
    assert [r["logger"] for r in records] == [
        "workers.outcomes",
        "celery.apps.worker",
        "workers.outcomes",
        "py.warnings",
    ]
    failed = records[0]
    assert {k: failed[k] for k in ("level", "message", "job_id", "item_id", "provider")} == {
        "level": "WARNING",
        "message": "item 7 outcome failed",
        "job_id": "j1",
        "item_id": 7,
        "provider": "slng",
    }
    assert failed["error_code"] == "provider_auth_failed"
    assert failed["time"].endswith("+00:00")
    assert "ZeroDivisionError" in records[2]["exc_info"]
