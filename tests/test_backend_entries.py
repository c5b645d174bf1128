"""The backend rows of later stages carry the parity entry of ``reports/parity.json``.

``firmware_export engine`` (host C engine, ``reports/engine.json``), ``firmware_export
qemu --report`` (the engine on emulated Cortex-M, ``reports/mcu_<target>.json``) and
``tinygru-edge check --json`` (this runtime) each report their own outputs with the
keys of a parity backend entry, computed by ``edge_runtime.parity_entry``.

Tolerances: 0 everywhere. The C engine equals TFLM step for step (test_engine.py),
so its entry equals parity.json's ``tflm`` entry value for value; the emulated engine
equals the host engine bit for bit, so its entry equals engine.json's; the runtime's
window-exact and continuous streams equal the offline LiteRT chain bit for bit
(test_stream.py), so its entry equals parity.json's ``litert`` entry.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_runtime.__main__ import main as edge_main
from edge_runtime.bundle import Bundle, stage_writer
from edge_runtime.parity_entry import FLOAT_OUTPUTS
from firmware_export import qemu
from firmware_export.check import check
from tests.test_stream import bundle_root, make_bundle

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
# What names the row, not a measurement of it.
IDENTITY = {"description", "model_file", "model_bytes"}
# Added by the stage to the parity keys.
ADDED = {"ram_bytes", "sizes_from", "us_per_step", "us_per_step_method", "instructions_per_step"}


def _copy(name: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of a session bundle (trained, int8, parity-checked): stages write into it."""
    src = make_bundle(name, bundle_root(tmp_path_factory))
    dst = tmp_path_factory.mktemp(f"entries_{name}") / name
    shutil.copytree(src, dst)
    return dst


@pytest.fixture(scope="module")
def bm(tmp_path_factory) -> Path:
    b = _copy("bm", tmp_path_factory)
    check(b)
    return b


@pytest.fixture(scope="module")
def forecaster(tmp_path_factory) -> Path:
    b = _copy("anomaly", tmp_path_factory)
    check(b)
    return b


def _parity(bundle: Path, name: str) -> dict[str, Any]:
    return json.loads((bundle / "reports/parity.json").read_text())["backends"][name]


def _metrics(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if k not in IDENTITY | ADDED and "note" not in k}


def _assert_filled(entry: dict[str, Any], parity_entry: dict[str, Any]) -> None:
    """Every key of the parity entry is there, and filled wherever parity fills it."""
    assert set(parity_entry) <= set(entry)
    for k, v in parity_entry.items():
        assert (entry[k] is None) == (v is None), k


def test_quantize_check_writes_the_float_reference(bm: Path) -> None:
    b = Bundle.open(bm)
    y = b.load_npz(FLOAT_OUTPUTS)["y"]
    assert y.dtype == np.float64 and y.shape == b.load_npz("reference.npz")["probs"].shape
    assert np.allclose(y.sum(axis=1), 1.0, atol=1e-5)  # probabilities


@pytest.mark.parametrize("name", ["bm", "forecaster"])
def test_engine_check_reports_the_tflm_entry(name: str, request) -> None:
    bundle = request.getfixturevalue(name)
    rep = json.loads((bundle / "reports/engine.json").read_text())
    assert rep["mismatches"] == 0 and rep["backend_error"] is None
    entry, tflm = rep["backend"], _parity(bundle, "tflm")
    _assert_filled(entry, tflm)
    assert _metrics(entry) == _metrics(tflm)
    assert entry["model_file"].endswith("_model.c") and entry["model_bytes"] > 0
    assert entry["ram_bytes"] > 0 and entry["us_per_step"] > 0


def test_engine_check_without_a_float_reference_says_why(tmp_path_factory) -> None:
    b = _copy("bm", tmp_path_factory)
    with stage_writer(b, "parity", config={}) as w:
        w.remove(FLOAT_OUTPUTS)
    rep = check(b)
    assert rep["backend"] is None and "quantize parity" in rep["backend_error"]
    assert rep["mismatches"] == 0


MISSING = qemu.missing_tools()
needs_qemu = pytest.mark.skipif(MISSING is not None, reason=f"emulator run impossible: {MISSING}")


@needs_qemu
def test_qemu_report_equals_the_host_engine(bm: Path) -> None:
    assert qemu.main(["--bundle", str(bm), "--target", "m4", "--target", "m3", "--report"]) == 0
    host = json.loads((bm / "reports/engine.json").read_text())["backend"]
    n = len(Bundle.open(bm).load_npz("reference.npz")["x_counts"])
    for target in ("m4", "m3"):
        rep = Bundle.open(bm).read_json(f"reports/mcu_{target}.json")  # listed, hash-checked
        assert rep["target"] == target and rep["machine"] == qemu.TARGETS[target]["machine"]
        assert rep["windows"] == n and rep["mismatches"] == 0 and rep["bit_identical"] is True
        assert rep["instructions_per_step"] > 0 and rep["peak_stack_bytes"] > 0
        assert rep["instructions_per_window"] >= rep["instructions_per_step"]
        _assert_filled(rep["backend"], _parity(bm, "tflm"))
        assert _metrics(rep["backend"]) == _metrics(host)
        assert rep["backend"]["model_bytes"] == host["model_bytes"]
        assert rep["backend"]["ram_bytes"] == host["ram_bytes"]


@needs_qemu
def test_qemu_report_runs_a_forecaster_series_with_its_state(forecaster: Path) -> None:
    rep = qemu.mcu_report(forecaster, "m4")
    n = len(Bundle.open(forecaster).load_npz("reference.npz")["series_counts"])
    assert rep["mode"] == "series" and rep["steps"] == n and rep["bit_identical"] is True
    assert rep["instructions_per_step"] > 0
    host = json.loads((forecaster / "reports/engine.json").read_text())["backend"]
    _assert_filled(rep["backend"], _parity(forecaster, "tflm"))
    assert _metrics(rep["backend"]) == _metrics(host)


@needs_qemu
def test_qemu_report_fails_on_a_mismatch(tmp_path_factory) -> None:
    b = _copy("bm", tmp_path_factory)
    check(b)
    out = Bundle.open(b).load_npz("engine_outputs.npz")
    out["y"] = out["y"].copy()
    out["y"][1, 0] ^= 1  # one int8 value of one window
    with stage_writer(b, "firmware_export", config={}) as w:
        w.write_npz("engine_outputs.npz", **out)
    assert qemu.main(["--bundle", str(b), "--target", "m4", "--windows", "3", "--report"]) == 1
    rep = json.loads((b / "reports/mcu_m4.json").read_text())
    assert rep["windows"] == 3 and rep["mismatches"] == 1 and rep["bit_identical"] is False
    assert rep["first_mismatch"].startswith("y[1, 0]")


@pytest.mark.parametrize("name", ["bm", "forecaster"])
def test_edge_check_json_reports_the_litert_entry(name: str, request, tmp_path) -> None:
    bundle = request.getfixturevalue(name)
    out = tmp_path / "runtime.json"
    code = edge_main(["check", "--bundle", str(bundle), "--json", str(out)])
    rep = json.loads(out.read_text())
    assert code == (0 if rep["passed"] else 1)
    assert rep["mode"] == ("window-exact" if name == "bm" else "continuous")
    assert rep["host"] and rep["interpreter"] == "litert" and rep["backend_error"] is None
    entry, litert = rep["backend"], _parity(bundle, "litert")
    _assert_filled(entry, litert)
    assert _metrics(entry) == _metrics(litert)
    assert entry["model_bytes"] == litert["model_bytes"] and entry["us_per_step"] > 0


@needs_qemu
@pytest.mark.parametrize("name", ["bm", "forecaster"])
def test_edge_check_json_with_a_device(name: str, request, tmp_path) -> None:
    bundle = request.getfixturevalue(name)
    proc = subprocess.run(
        ["make", "-s", "-C", str(ROOT / "firmware"), f"BUNDLE={bundle}", "TARGETS=mps2-an386",
         "OPTS=O2"], capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = tmp_path / "device.json"
    args = ["check", "--bundle", str(bundle), "--device", "qemu:an386", "--json", str(out)]
    code = edge_main(args)
    rep = json.loads(out.read_text())
    assert code == (0 if rep["passed"] else 1)
    assert rep["device"] == "qemu:an386" and rep["interpreter"] == "device qemu:an386"
    entry = rep["backend"]
    _assert_filled(entry, _parity(bundle, "tflm"))
    # the device runs the C engine: its outputs are the TFLM chain's
    assert _metrics(entry) == _metrics(_parity(bundle, "tflm"))
    assert entry["us_per_step"] is None


@pytest.mark.parametrize("name", ["bm", "forecaster"])
def test_edge_check_with_the_engine_backend_is_the_c_engine(name: str, request, tmp_path) -> None:
    """``tinygru-edge check --backend engine`` runs the bundle's exported C engine built for
    this host: its entry equals the C engine's (engine.json) value for value, tolerance 0
    (the same C, so any difference would be a defect, not rounding)."""
    bundle = request.getfixturevalue(name)
    out = tmp_path / "runtime_engine.json"
    code = edge_main(["check", "--bundle", str(bundle), "--backend", "engine", "--json", str(out)])
    rep = json.loads(out.read_text())
    assert code == (0 if rep["passed"] else 1) and rep["interpreter"] == "engine"
    host = json.loads((bundle / "reports/engine.json").read_text())["backend"]
    assert _metrics(rep["backend"]) == _metrics(host)
    assert _metrics(rep["backend"]) == _metrics(_parity(bundle, "tflm"))


def test_engine_backend_steps_equal_tflm_steps(bm: Path) -> None:
    """The step interpreter's engine backend against its TFLM backend on every step of five
    reference windows, states and head: 0 of N values may differ."""
    from edge_runtime import contract
    from edge_runtime.interpreter import StepInterpreter
    from edge_runtime.preprocess import InputQuant, quantize_counts

    b = Bundle.open(bm)
    iq = InputQuant.from_dict(b.manifest["preprocess"]["input_quant"])
    mc = b.manifest["model"]["config"]
    q = quantize_counts(b.load_npz("reference.npz")["x_counts"][:5], iq)
    xs = contract.step_inputs(q, mc["front_end_kernel"], mc["front_end_stride"], iq.zero_point)
    with StepInterpreter.from_bundle(b, backend="engine") as eng:
        got = eng.chain(xs)
    with StepInterpreter.from_bundle(b, backend="tflm") as tflm:
        want = tflm.chain(xs)
    for key, v in want.items():
        bad = np.argwhere(got[key] != v)
        assert not len(bad), f"{key}: {len(bad)} of {v.size} differ, first at {bad[0].tolist()}"


def test_engine_backend_without_an_export_or_a_compiler_says_why(tmp_path_factory) -> None:
    from edge_runtime.interpreter import InterpreterError, StepInterpreter

    b = _copy("bm", tmp_path_factory)  # trained and converted, never exported
    with pytest.raises(InterpreterError, match=r"firmware/files\.json.*python -m firmware_export"):
        StepInterpreter.from_bundle(Bundle.open(b), backend="engine")
    check(b)
    env = {**os.environ, "CC": "no-such-cc", "TINYGRU_CACHE": str(b / "cache")}
    r = subprocess.run(
        [sys.executable, "-m", "edge_runtime", "check", "--bundle", str(b), "--backend", "engine"],
        capture_output=True, text=True, env=env, cwd=ROOT,
    )  # fmt: skip
    assert r.returncode == 2, r.stdout + r.stderr
    assert "no C compiler 'no-such-cc'" in r.stderr and "Traceback" not in r.stderr
