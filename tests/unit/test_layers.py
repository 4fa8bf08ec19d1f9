"""The layers read top-down: each package imports only the packages below it, and the worker and
API import paths load no torch. A new upward import fails here, naming the module and the line."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

#: package -> the project packages it may import (itself included). Bottom to top.
ALLOWED: dict[str, set[str]] = {
    "schemas": {"schemas"},
    "shopdata": {"schemas", "shopdata"},
    "encoders": {"schemas", "encoders"},
    "ranker": {"schemas", "shopdata", "encoders", "ranker"},
    "streams": {"schemas", "encoders", "ranker", "streams"},
    "serving": {"schemas", "encoders", "ranker", "streams", "serving"},
    "fusionrec": {"schemas", "shopdata", "encoders", "ranker", "streams", "serving", "fusionrec"},
}
PROJECT = set(ALLOWED) | {"bench", "tests"}


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, top-level package) of every import in a file, function-local ones included."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module.split(".")[0]))
    return out


def upward_imports(root: Path = REPO) -> list[str]:
    bad = []
    for package, allowed in ALLOWED.items():
        for path in sorted((root / package).rglob("*.py")):
            for line, target in _imports(path):
                if target in PROJECT and target not in allowed:
                    bad.append(f"{path.relative_to(root)}:{line} imports {target}")
    return bad


def test_no_package_imports_a_layer_above_it() -> None:
    assert upward_imports() == []


def test_the_rule_catches_an_upward_import(tmp_path: Path) -> None:
    for package in ALLOWED:
        (tmp_path / package).mkdir()
    (tmp_path / "ranker" / "bad.py").write_text(
        "import numpy\n\ndef f():\n    from fusionrec.settings import Settings\n"
    )
    (tmp_path / "streams" / "bad.py").write_text("from tests.integration import harness\n")
    assert upward_imports(tmp_path) == ["ranker/bad.py:4 imports fusionrec", "streams/bad.py:1 imports tests"]


@pytest.mark.parametrize(
    "modules",
    [
        "fusionrec.cli, fusionrec.commands.stream, streams.faust_worker, fusionrec.wiring",  # the worker
        "fusionrec.serve_app, serving.app, serving.service, serving.resources",  # the API
    ],
)
def test_worker_and_api_load_no_torch(modules: str) -> None:
    code = f"import sys, {modules}; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"
