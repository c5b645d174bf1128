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

# The repository's own top-level Python packages (what a row may allow or forbid).
PROJECT = {"edge_runtime", "train", "quantize", "firmware_export", "report", "pipeline", "search"}
EVERY = "every stage package"


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


def doc_table() -> dict[str, tuple[str, str]]:
    """Package -> (its 'may import' cell, its 'never imports' cell) in docs/architecture.md."""
    rows = {}
    for line in (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8").splitlines():
        m = re.match(r"^\|\s*`([a-z_]+)/`[^|]*\|(.*)\|(.*)\|\s*$", line)
        if m:
            rows[m.group(1)] = (m.group(2), m.group(3))
    return rows


def _words(cell: str) -> set[str]:
    return set(re.findall(r"[a-z_]+", cell))


def rules() -> dict[str, tuple[set[str] | None, set[str], bool]]:
    """Package -> (project packages it may import or None for any, what it must never
    import, whether nothing may import it), read from the table."""
    out = {}
    for package, (may, never) in doc_table().items():
        allowed = None if (EVERY in may or "everything" in may) else _words(may) & PROJECT
        forbidden = _words(never) & (PROJECT | TF)
        if "tensorflow" in forbidden:
            forbidden |= {"tf_keras"}
        out[package] = (allowed, forbidden, "nothing imports" in never)
    return out


def test_every_python_package_has_a_row() -> None:
    table = doc_table()
    packages = sorted(
        p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").is_file()
    )
    missing = [p for p in [*packages, "scripts", "tests"] if p not in table]
    assert not missing, f"docs/architecture.md's layer table has no row for {missing}"


@pytest.mark.parametrize("package", sorted(set(doc_table()) - {"firmware", "tests"}))
def test_package_respects_its_row(package: str) -> None:
    allowed, forbidden, _ = rules()[package]
    violations = []
    for path in python_files(package):
        found = imported_modules(path)
        bad = found & (forbidden - {package})
        if allowed is not None:
            bad |= (found & PROJECT) - allowed - {package}
        if bad:
            violations.append(f"{path.relative_to(ROOT)} imports {', '.join(sorted(bad))}")
    assert not violations, "layer violations:\n" + "\n".join(violations)


def test_nothing_imports_what_its_row_keeps_private() -> None:
    private = {p for p, (_, _, alone) in rules().items() if alone}
    assert "pipeline" in private
    violations = []
    for package in set(doc_table()) - {"firmware", "tests"}:
        for path in python_files(package):
            bad = (imported_modules(path) & private) - {package}
            if bad:
                violations.append(f"{path.relative_to(ROOT)} imports {', '.join(sorted(bad))}")
    assert not violations, "imports of private layers:\n" + "\n".join(violations)


def test_the_ground_floor_forbids_every_layer_above_it() -> None:
    _, forbidden, _ = rules()["edge_runtime"]
    assert (PROJECT - {"edge_runtime", "search"}) | {"tensorflow", "keras"} <= forbidden


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
