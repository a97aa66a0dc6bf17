"""Every third-party module that agelab imports is a declared dependency."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]
# import name -> distribution name where they differ
DIST_NAMES = {"sklearn": "scikit-learn", "PIL": "pillow", "yaml": "pyyaml"}
# Modules whose third-party imports come from an optional extra (the CLI imports them lazily).
EXTRA_MODULES = {"src/agelab/serve.py": "serve"}


def third_party_imports() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in sorted((ROOT / "src" / "agelab").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top != "agelab" and top not in sys.stdlib_module_names and top != "__future__":
                    found.setdefault(top, []).append(path.relative_to(ROOT).as_posix())
    return found


def declared(extra: str | None = None) -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = project["dependencies"] if extra is None else project["optional-dependencies"][extra]
    return {re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0].lower() for d in deps}


def test_core_dependencies_are_declared():
    found = third_party_imports()
    assert {"torch", "numpy", "safetensors", "tqdm", "sklearn", "PIL"} <= set(found)
    core = {m: paths for m, paths in found.items() if not set(paths) <= set(EXTRA_MODULES)}
    missing = {m for m in core if m != "matplotlib" and DIST_NAMES.get(m, m).lower() not in declared()}
    assert not missing, {m: found[m] for m in missing}


def test_optional_modules_declare_their_extra():
    found = third_party_imports()
    for path, extra in EXTRA_MODULES.items():
        names = {m for m, paths in found.items() if path in paths}
        missing = {m for m in names if DIST_NAMES.get(m, m).lower() not in declared() | declared(extra)}
        assert names and not missing, (path, extra, missing)


def test_matplotlib_is_declared():
    assert "matplotlib" in third_party_imports()
    assert "matplotlib" in declared()
