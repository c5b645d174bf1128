"""The step interpreter in a worker process (edge_runtime/worker.py) against the in-process one.

The worker runs under a real second Python: a venv with ``tflite-runtime`` and
``numpy<2`` from PyPI (created once, cached in build/cache/), while this process
has numpy 2 and ai-edge-litert. Outputs are compared bit for bit (tolerance 0):
the int8 step is deterministic integer arithmetic in both libraries, and the
float forecast is computed here from the same int8 outputs.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.interpreter import InterpreterError, StepInterpreter
from edge_runtime.stream import Streamer
from edge_runtime.worker import ENV_PYTHON
from tests.support import ROOT, OfflineChain, edge_bundle_fixture, reference_stream

CACHE = ROOT / "build" / "cache" / f"tflite-runtime-py{sys.version_info[0]}{sys.version_info[1]}"
PROBE = "import numpy, tflite_runtime.interpreter; print(numpy.__version__)"


def _venv_python(root: Path) -> Path:
    return root / "bin" / "python"


def _probe(python: Path) -> str | None:
    if not python.exists():
        return None
    r = subprocess.run([str(python), "-c", PROBE], capture_output=True, text=True, timeout=120)
    return r.stdout.strip() if r.returncode == 0 else None


@pytest.fixture(scope="session")
def tflite_python() -> str:
    """A Python with tflite-runtime and numpy<2 (a venv made once with pip from PyPI)."""
    python = _venv_python(CACHE)
    if _probe(python) is None:
        tmp = CACHE.with_name(CACHE.name + f".tmp{os.getpid()}")
        subprocess.run(["rm", "-rf", str(tmp)], check=True)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", str(tmp)], check=True)
        pip = subprocess.run(
            [str(_venv_python(tmp)), "-m", "pip", "install", "-q", "tflite-runtime", "numpy<2"],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if pip.returncode != 0:
            subprocess.run(["rm", "-rf", str(tmp)], check=False)
            pytest.skip(f"cannot install tflite-runtime and numpy<2: {pip.stderr[-500:]}")
        subprocess.run(["rm", "-rf", str(CACHE)], check=True)
        tmp.rename(CACHE)
    version = _probe(python)
    assert version is not None and int(version.split(".")[0]) < 2, version
    return str(python)


bm = edge_bundle_fixture("bm", "bm")
bm2 = edge_bundle_fixture("bm2", "bm2")
forecaster = edge_bundle_fixture("anomaly", "forecaster")
_stream = reference_stream


# --------------------------------------------------------------------------- bit identity


@pytest.mark.parametrize("name", ["bm", "bm2"])
def test_tflite_runtime_worker_is_bit_identical(request, name, tflite_python) -> None:
    b = request.getfixturevalue(name)
    T = b.manifest["preprocess"]["window"]
    counts = _stream(b)
    local = Streamer(b, "window-exact")
    remote = Streamer(b, "window-exact", interpreter_python=tflite_python)
    try:
        info = remote.interp.worker.info
        assert info["library"] == "tflite_runtime" and int(info["numpy"].split(".")[0]) < 2
        assert remote.interp.backend_label == "tflite_runtime_worker"
        assert remote.interp.raw is None and local.interp.worker is None
        r_local, r_remote = local.push_many(counts), remote.push_many(counts)
        assert len(r_local) == len(r_remote) > 0
        offline = OfflineChain(b)
        for a, r in zip(r_local, r_remote, strict=True):
            assert r.window_start == a.window_start and r.sample == a.sample
            assert np.array_equal(r.y_int8, a.y_int8), f"window at {r.window_start}"
            assert np.array_equal(r.raw_probabilities, a.raw_probabilities)
        for r in r_remote[:: max(1, len(r_remote) // 8)]:
            want = offline.window(counts[r.window_start : r.window_start + T])
            assert np.array_equal(r.y_int8, want)
        assert remote.steps == local.steps
    finally:
        remote.close()


def test_forecaster_in_a_worker_gives_the_same_results(forecaster, tflite_python) -> None:
    counts = forecaster.load_npz("reference.npz")["series_counts"][:800]
    local = Streamer(forecaster)
    with StepInterpreter.from_bundle(forecaster, python=tflite_python) as interp:
        remote = Streamer(forecaster, interpreter=interp)
        r_remote = [r for row in counts for r in remote.push(row)]
    r_local = [r for row in counts for r in local.push(row)]
    assert len(r_local) == len(r_remote) == len(counts)
    for a, r in zip(r_local, r_remote, strict=True):
        assert np.array_equal(r.y_int8, a.y_int8)
        assert np.array_equal(r.forecast, a.forecast)
        assert r.score == a.score and r.anomaly == a.anomaly


# --------------------------------------------------------------------------- selection


def test_worker_is_chosen_by_name_env_or_missing_litert(bm, tflite_python, monkeypatch) -> None:
    monkeypatch.delenv(ENV_PYTHON, raising=False)
    with StepInterpreter.from_bundle(bm) as it:
        assert it.worker is None and it.python is None and it.backend_label == "litert"
    monkeypatch.setenv(ENV_PYTHON, tflite_python)
    with StepInterpreter.from_bundle(bm) as it:
        assert it.python == tflite_python and it.backend_label == "tflite_runtime_worker"
    monkeypatch.delenv(ENV_PYTHON)
    # ai_edge_litert not importable here: a worker under this same Python, which
    # imports it in its own process
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    with StepInterpreter.from_bundle(bm) as it:
        assert it.python == sys.executable and it.backend_label == "litert_worker"
        x = np.full(it.x.shape, it.x.zero_point, np.int8)
        states = it.zero_states()
        y = it.step(x, states)
        assert y.shape == it.y.shape and y.dtype == np.int8
        assert [h.shape for h in states] == [it.inputs[n].shape for n in it.state_in]


def test_cli_bench_runs_the_worker(bm, tflite_python, monkeypatch, capsys) -> None:
    from edge_runtime.__main__ import main

    monkeypatch.setenv(ENV_PYTHON, "")  # restored after the flag sets it
    argv = [
        "bench",
        "--bundle",
        str(bm.root),
        "--seconds",
        "0.3",
        "--backend",
        "litert",
        "--json",
        "-",
    ]
    assert main([*argv, "--interpreter-python", tflite_python]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["host"]["interpreter"].startswith("tflite_runtime (worker")
    e = rep["backends"]["tflite_runtime_worker"]
    assert e["bare_step_us"]["n"] > 0 and e["streamer"]["steps"] > 0


# --------------------------------------------------------------------------- failures


def test_worker_failures_name_the_child_and_its_stderr(bm, tflite_python, tmp_path) -> None:
    model = bm.read_bytes("step_int8.tflite")
    step = bm.manifest["quantization"]["step"]
    missing = tmp_path / "no-such-python"
    with pytest.raises(InterpreterError, match=f"cannot start {missing}"):
        StepInterpreter(model, step, python=str(missing))
    fake = tmp_path / "fake-python"
    fake.write_text("#!/bin/sh\necho 'no interpreter on this board' >&2\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(InterpreterError) as e:
        StepInterpreter(model, step, python=str(fake))
    text = str(e.value)
    assert str(fake) in text and "exit status 3" in text and "no interpreter on this board" in text
    with pytest.raises(InterpreterError, match=r"interpreter worker .* \(pid \d+\): ValueError"):
        StepInterpreter(b"not a flatbuffer", step, python=tflite_python)
    with pytest.raises(InterpreterError, match="xnnpack' needs ai-edge-litert"):
        StepInterpreter(model, step, backend="xnnpack", python=tflite_python)


def test_a_dead_worker_is_reported_and_close_stops_it(bm, tflite_python) -> None:
    s = Streamer(bm, interpreter_python=tflite_python)
    counts = _stream(bm)
    s.push_many(counts[:50])
    proc = s.interp.worker.proc
    proc.kill()
    proc.wait(timeout=10)
    with pytest.raises(InterpreterError, match=r"\(pid \d+\) .*exit status -9"):
        s.push_many(counts[50:400])
    s.close()
    s.close()  # idempotent

    s = Streamer(bm, interpreter_python=tflite_python)
    proc = s.interp.worker.proc
    s.close()
    assert proc.poll() == 0  # asked to stop, it exited cleanly
    with pytest.raises(InterpreterError, match="is closed"):
        s.push_many(counts[:200])

    it = StepInterpreter.from_bundle(bm, python=tflite_python)
    proc = it.worker.proc
    del it
    gc.collect()
    assert proc.wait(timeout=10) == 0  # dropped without close: stopped all the same
