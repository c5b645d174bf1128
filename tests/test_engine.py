"""The tinygru C engine against the TFLM interpreter, every step of every reference window.

Bundles are trained for one or two epochs (bit-exactness does not need a good model)
and converted by ``quantize.int8.int8``; they are built once per session and shared
with test_export.py. Tolerance everywhere: 0 (a single rounding difference would grow
through the recurrence).
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.bundle import Bundle
from edge_runtime.preprocess import quantize_counts
from firmware_export import cbuild, host
from firmware_export.check import check, diagnose, step_inputs
from firmware_export.export import export, prepare
from tests.support import build_bundle

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 0

# name -> (config file, edits to its text)
BUNDLES = {
    "bm": ("basic_motions.toml", {"epochs = 30": "epochs = 2"}),
    "bm2": ("basic_motions.toml", {"epochs = 30": "epochs = 1", "gru_units = [8]": "gru_units = [8, 6]",
                                   'name = "basic_motions"': 'name = "bm2"'}),
    "anomaly": ("anomaly.toml", {"epochs = 60": "epochs = 1", "gru_units = [32]": "gru_units = [8]"}),
}  # fmt: skip


@functools.cache
def make_bundle(name: str, root: str) -> Path:
    """Train (tiny) and convert one bundle under ``root``; cached for the session."""
    config, edits = BUNDLES[name]
    return build_bundle(name, root, config, edits)


@pytest.fixture(scope="session")
def bundles(tmp_path_factory) -> dict[str, Path]:
    root = str(tmp_path_factory.getbasetemp() / "engine_bundles")
    Path(root).mkdir(exist_ok=True)
    return {n: make_bundle(n, root) for n in BUNDLES}


def _engine(bundle: Path, debug: bool = False) -> tuple[host.Engine, object]:
    result = export(bundle)
    prep = prepare(Bundle.open(bundle))
    m = prep.model
    return host.load(Path(result["out"]), result["prefix"], m, debug=debug), prep


@pytest.mark.parametrize("name", list(BUNDLES))
def test_engine_matches_tflm_on_every_step(bundles, name: str) -> None:
    report = check(bundles[name])
    b = Bundle.open(bundles[name])
    ref = b.load_npz("reference.npz")
    if "x_counts" in ref:
        n, T, _ = ref["x_counts"].shape
        stride = b.manifest["model"]["config"]["front_end_stride"]
        assert report["steps_compared"] == n * len(range(0, T, stride))
    else:
        assert report["steps_compared"] == len(ref["series_counts"])
    assert report["mismatches"] == TOLERANCE, report["first_mismatch"]
    out = b.load_npz("engine_outputs.npz")  # written through the stage writer, hash-checked
    assert out["y"].dtype == np.int8
    assert b.read_json("reports/engine.json")["mismatches"] == 0
    if "x_counts" in ref:
        assert report["agreement_with_float"] >= 0.9


def test_push_sample_path_equals_step_path(bundles) -> None:
    eng, prep = _engine(bundles["bm"])
    counts = Bundle.open(bundles["bm"]).load_npz("reference.npz")["x_counts"][:6]
    for window in counts:
        streamed = eng.window(window)
        h = [np.zeros(u, np.int8) for u in prep.model.units]
        for x in step_inputs(prep, window):
            y, h = eng.step(x, h)
        np.testing.assert_array_equal(streamed, y)
        for a, b in zip(eng.state(), h, strict=True):
            np.testing.assert_array_equal(a, b)


def test_count_quantization_equals_edge_runtime(bundles) -> None:
    eng, prep = _engine(bundles["bm"])
    rng = np.random.default_rng(0)
    c = prep.model.channels
    counts = np.concatenate([
        rng.integers(-32768, 32768, (2000, c)),
        np.full((1, c), -32768), np.full((1, c), 32767), np.zeros((1, c)),
    ]).astype(np.int16)  # fmt: skip
    want = quantize_counts(counts, prep.input_quant)
    got = np.stack([eng.quantize(row) for row in counts])
    np.testing.assert_array_equal(got, want)


def test_a_wrong_parameter_is_pinned_to_its_gate(bundles, tmp_path: Path) -> None:
    result = export(bundles["bm"])
    fw = tmp_path / "fw"
    shutil.copytree(result["out"], fw)
    model_c = fw / f"{result['prefix']}_model.c"
    text = model_c.read_text()
    pat = r"(\.r_mul = \{ \.input1_offset = -?\d+, \.input2_offset = -?\d+, \.output_offset = )(-?\d+)"
    text, n = re.subn(pat, lambda m: m.group(1) + str(int(m.group(2)) + 9), text)
    assert n == 1
    model_c.write_text(text)
    prep = prepare(Bundle.open(bundles["bm"]))
    m = prep.model
    eng = host.load(fw, result["prefix"], m, debug=True)
    x = step_inputs(prep, Bundle.open(bundles["bm"]).load_npz("reference.npz")["x_counts"][0])[5]
    h = [np.full(u, 17, np.int8) for u in m.units]
    from firmware_export.lower import run_step

    want = run_step(m, x, h)
    msg = diagnose(prep, eng, x, h, want["y"], want["h_out"])
    assert "first differing op: layer1.r_mul" in msg, msg


_SANITIZED_RUN = """
import sys, numpy as np
from edge_runtime.backends.engine import Engine
lib, npz = sys.argv[1:3]
eng = Engine(lib)
counts = np.load(npz)["x"]
for w in counts:
    eng.window(w)
    for s in w[:7]:
        eng.push(s)
print("ok", eng.buffer_sizes())
"""


def test_engine_is_clean_under_address_and_undefined_sanitizers(bundles, tmp_path: Path) -> None:
    result = export(bundles["bm2"])
    lib = host.build(Path(result["out"]), result["prefix"], sanitize=True)
    counts = Bundle.open(bundles["bm2"]).load_npz("reference.npz")["x_counts"][:4]
    np.savez(tmp_path / "c.npz", x=counts)
    args = [str(lib), str(tmp_path / "c.npz")]
    r = subprocess.run([sys.executable, "-c", _SANITIZED_RUN, *args], cwd=ROOT,
                       env=cbuild.sanitizer_env(), capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.startswith("ok")
