"""``pip install ./edge_runtime`` into a fresh venv, then ``tinygru-edge check`` there.

Measured at about 15 s once the bundle exists (not marked slow). pip uses the machine's configured index and cache (ai-edge-litert, numpy,
jsonschema, pyserial come from there). The venv must not have TensorFlow.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_stream import bundle_root, make_bundle

ROOT = Path(__file__).resolve().parents[1]


def _python311() -> str | None:
    for name in ("python3.11", sys.executable if sys.version_info[:2] == (3, 11) else ""):
        if name and (shutil.which(name) or Path(name).is_file()):
            return name
    return None


def test_installed_package_checks_a_bundle_without_tensorflow(tmp_path, tmp_path_factory) -> None:
    py = _python311()
    if py is None:
        pytest.skip("no python3.11 on this machine")
    bundle = make_bundle("bm", bundle_root(tmp_path_factory))
    t0 = time.perf_counter()
    src = tmp_path / "src"
    shutil.copytree(
        ROOT / "edge_runtime",
        src,
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"),
    )
    venv = tmp_path / "venv"
    subprocess.run([py, "-m", "venv", str(venv)], check=True, timeout=300)
    vpy = venv / "bin" / "python"
    r = subprocess.run(
        [str(vpy), "-m", "pip", "install", "--quiet", str(src)],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    exe = venv / "bin" / "tinygru-edge"
    r = subprocess.run(
        [str(exe), "check", "--bundle", str(bundle)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "PASSED" in r.stdout
    r = subprocess.run(
        [str(vpy), "-c", "import tensorflow"], capture_output=True, text=True, cwd=tmp_path
    )
    assert r.returncode != 0 and "No module named 'tensorflow'" in r.stderr
    print(f"fresh venv + pip install + check: {time.perf_counter() - t0:.1f} s")


def test_every_edge_runtime_subpackage_is_installed() -> None:
    """A subpackage missing from pyproject's list installs nowhere: a Pi would fail at import."""
    import tomllib

    root = Path(__file__).resolve().parents[1] / "edge_runtime"
    listed = set(
        tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        "edge_runtime" + "".join(f".{p}" for p in d.relative_to(root).parts)
        for d in [root, *root.rglob("*")]
        if d.is_dir() and (d / "__init__.py").is_file() and "__pycache__" not in d.parts
    }
    assert found <= listed, f"edge_runtime/pyproject.toml does not install {sorted(found - listed)}"
