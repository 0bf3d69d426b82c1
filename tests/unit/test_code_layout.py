"""The code keeps the shape docs/architecture.md describes: small modules, and a map that
names only things that exist.

The import layers themselves are import-linter's contract (`make lint`); these tests check
what it cannot: every module of the three layered packages stays short enough to read in one
sitting, and every dotted name the architecture document points a newcomer to resolves.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from storage import publisher

ROOT = Path(__file__).resolve().parents[2]
LAYERED = ("jobs", "workers", "storage")
MAX_LINES = 340  # "under ~300 lines" (issue 7), with room for a docstring's growth
ARCHITECTURE = ROOT / "docs" / "architecture.md"
OUR_PACKAGES = ("jobs", "workers", "storage", "speechbatch", "emulator")
# Celery task names read like dotted paths but name tasks, not modules.
TASK_NAMES = {value for name, value in vars(publisher).items() if name.startswith("TASK_")}
# A module attribute made by the module's `__getattr__` when first read.
LAZY = {"workers.celery_app.app"}
PACKAGES = "|".join(OUR_PACKAGES)
DOTTED = re.compile(rf"`((?:{PACKAGES})(?:\.[A-Za-z_][A-Za-z0-9_]*)+)")


def layered_modules() -> list[Path]:
    return sorted(
        path
        for package in LAYERED
        for path in (ROOT / package).rglob("*.py")
        if "migrations" not in path.relative_to(ROOT).parts
    )


def test_every_layered_module_is_under_the_line_bound() -> None:
    """No module of jobs/, workers/ or storage/ (migrations aside) grows past MAX_LINES."""
    modules = layered_modules()
    assert len(modules) > 50  # the walk found the packages
    long = {
        str(path.relative_to(ROOT)): lines
        for path in modules
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}


def resolves(dotted: str) -> bool:
    """Whether `dotted` is a module, or a module's attribute (or an attribute's)."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            found: object = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:]:
            if not hasattr(found, name):
                return False
            found = getattr(found, name)
        return True
    return False


def test_the_resolver_tells_a_real_name_from_a_moved_one() -> None:
    """The check below can fail: a module, a class and a method resolve, a missing name not."""
    assert resolves("storage.memory")
    assert resolves("storage.memory.MemoryObjectStore.put_bytes")
    assert not resolves("storage.objects.MemoryObjectStore")
    assert not resolves("storage.no_such_module")


@pytest.mark.parametrize(
    "dotted", sorted(set(DOTTED.findall(ARCHITECTURE.read_text(encoding="utf-8"))) - TASK_NAMES)
)
def test_every_name_docs_architecture_points_to_exists(dotted: str) -> None:
    """A `package.module.Name` in docs/architecture.md is importable as written."""
    module = dotted.rpartition(".")[0]
    if dotted in LAZY:  # built on first access (from the settings): only its hook is checked
        assert callable(vars(importlib.import_module(module)).get("__getattr__"))
        return
    assert resolves(dotted), f"docs/architecture.md names {dotted}, which is gone"
