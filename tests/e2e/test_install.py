"""A normal (non-editable) install works: the wheel carries everything, migrations included.

The wheel is built from a copy of the source and installed into a new virtualenv without its
dependencies; those come from the project's own venv through a `.pth` line, so the test
needs no network. Then the console script runs from an empty folder, as after `pip install`.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SKIP = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "out", "*.egg-info", ".*_cache", "__pycache__"
)

pytestmark = [pytest.mark.integration]


def sh(*argv: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in argv],
        cwd=cwd,
        env=env,
        text=True,
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"{argv}: {done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new venv holding the built wheel; returns its bin folder."""
    work = tmp_path_factory.mktemp("install")
    shutil.copytree(ROOT, work / "src", ignore=SKIP)
    pip = [sys.executable, "-m", "pip"]
    sh(
        *pip,
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        work / "dist",
        work / "src",
        cwd=work,
    )
    (wheel,) = (work / "dist").glob("speechbatch-*.whl")
    sh(sys.executable, "-m", "venv", "--without-pip", work / "venv", cwd=work)
    target = work / "venv" / "bin" / "python"
    sh(*pip, "--python", target, "install", "--no-deps", "--no-index", "-q", wheel, cwd=work)
    (purelib,) = (work / "venv" / "lib").glob("python3*/site-packages")
    # Dependencies from this venv, after the wheel's own packages (a plain path: the editable
    # install's .pth files there are not processed, so they cannot shadow the wheel).
    (purelib / "zz_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return work / "venv" / "bin"


def test_the_wheel_runs_migrate_tts_and_stt_from_an_empty_folder(
    installed: Path, tmp_path: Path
) -> None:
    """From an empty folder the installed script migrates a new database, speaks a script
    and transcribes the result, with code and migrations imported from the wheel."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPEECHBATCH_")}
    env |= {"SPEECHBATCH_HOME": str(tmp_path / "home"), "PATH": f"{installed}:{env['PATH']}"}
    origin = sh(
        installed / "python", "-c", "import jobs.migrate as m; print(m.__file__)", cwd=tmp_path
    )
    assert origin.startswith(str(installed.parent)), origin
    migrate_env = {**env, "SPEECHBATCH_DATABASE_URL": f"sqlite:///{tmp_path / 'other.db'}"}
    assert "newest schema" in sh(
        installed / "speechbatch", "migrate", cwd=tmp_path, env=migrate_env
    )
    (tmp_path / "script.txt").write_text("Hello from the wheel.\n")
    sh(installed / "speechbatch", "tts", "script.txt", "--out", "tts", cwd=tmp_path, env=env)
    (wav,) = (tmp_path / "tts").glob("*.wav")
    sh(
        installed / "speechbatch",
        "stt",
        wav,
        "--formats",
        "txt",
        "--out",
        "stt",
        cwd=tmp_path,
        env=env,
    )
    (transcript,) = (tmp_path / "stt").glob("*.txt")
    assert transcript.read_text().strip()
