"""The layer table of docs/architecture.md, checked against every module's imports."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TF = {"tensorflow", "keras", "tf_keras"}

# package -> top-level modules it must never import (anywhere in the file, not only at the top)
FORBIDDEN: dict[str, set[str]] = {
    "edge_runtime": TF | {"train", "quantize", "firmware_export"},
    "train": {"quantize", "firmware_export"},
    "quantize": {"firmware_export"},
    "firmware_export": TF,  # tflite_micro and ai_edge_litert are allowed
}


def python_files(package: str) -> list[Path]:
    return sorted(p for p in (ROOT / package).rglob("*.py") if "__pycache__" not in p.parts)


def imported_modules(path: Path) -> set[str]:
    """Top-level names of every module a file imports, including importlib/__import__ calls."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            arg = node.args[0]
            if name in ("import_module", "__import__") and isinstance(arg, ast.Constant):
                if isinstance(arg.value, str) and not arg.value.startswith("."):
                    found.add(arg.value.split(".")[0])
    return found


def doc_table() -> dict[str, str]:
    """Package -> its 'never imports' cell in docs/architecture.md's layer table."""
    rows = {}
    for line in (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8").splitlines():
        m = re.match(r"^\|\s*`([a-z_]+)/`\s*\|(.*)\|(.*)\|\s*$", line)
        if m:
            rows[m.group(1)] = m.group(3)
    return rows


def test_doc_table_states_these_rules() -> None:
    table = doc_table()
    for package, forbidden in FORBIDDEN.items():
        assert package in table, f"docs/architecture.md has no layer row for {package}/"
        words = set(re.findall(r"[a-z_]+", table[package]))
        stated = forbidden - {"tf_keras"}
        if package == "firmware_export":
            stated = {"tensorflow"}
        missing = stated - words
        assert not missing, f"{package}: docs/architecture.md does not forbid {sorted(missing)}"


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_respects_layers(package: str) -> None:
    violations = []
    for path in python_files(package):
        bad = imported_modules(path) & FORBIDDEN[package]
        if bad:
            violations.append(f"{path.relative_to(ROOT)} imports {', '.join(sorted(bad))}")
    assert not violations, "layer violations:\n" + "\n".join(violations)


def test_edge_runtime_core_is_present() -> None:
    names = {p.name for p in python_files("edge_runtime")}
    assert {"__init__.py", "bundle.py", "preprocess.py", "metrics.py"} <= names


def test_import_scanner_sees_every_form(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text(
        "import os.path\n"
        "from train.model import build\n"
        "from . import sibling\n"
        "def f():\n"
        "    import keras\n"
        "    importlib.import_module('tensorflow.lite')\n"
        "    __import__('quantize')\n"
    )
    assert imported_modules(src) == {"os", "train", "keras", "tensorflow", "quantize"}


def test_edge_runtime_import_leaves_tensorflow_out() -> None:
    code = (
        "import sys\n"
        "import edge_runtime, edge_runtime.bundle, edge_runtime.preprocess, edge_runtime.metrics\n"
        "bad = sorted(m for m in ('tensorflow', 'keras', 'tf_keras') if m in sys.modules)\n"
        "print(','.join(bad))\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "", f"importing edge_runtime loaded {r.stdout.strip()}"
