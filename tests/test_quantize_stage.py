"""The quantize stage through its CLI: prune → int8 → check on small real bundles.

A BasicMotions classifier and a KDD-TSAD 135 forecaster, each trained for a few
epochs: the tests check plumbing, contracts and reproducibility, not accuracy.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edge_runtime import contract
from edge_runtime.bundle import Bundle
from edge_runtime.preprocess import InputQuant, normalize, quantize_counts
from quantize.__main__ import main
from quantize.bundle_io import int8_step_inputs
from quantize.graph import STEP_OPS, read
from quantize.step_model import step_inputs
from tests.support import small_config
from train.model import ModelConfig

CLASSIFICATION_KEYS = {
    "accuracy",
    "macro_f1",
    "confusion",
    "per_class_f1",
    "argmax_agreement",
    "max_abs_err",
    "mean_abs_err",
    "rmse",
    "l2r",
    "cosine",
    "model_bytes",
    "model_file",
    "n",
    "description",
}
FORECAST_KEYS = {"hit", "margin", "point_auc", "window_auc", "false_alarms", "forecast_mae"}


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(args)
    err = capsys.readouterr().err
    return code, err


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    from train.train import run

    tmp = tmp_path_factory.mktemp("bm")
    cfg = small_config(tmp, "basic_motions.toml", epochs=8)
    return run(str(cfg), str(tmp / "trained"))


@pytest.fixture(scope="module")
def pipeline(trained: Path, tmp_path_factory) -> dict:
    """prune → int8 → int8 again (bytes kept) → check, all through ``main``."""
    out = tmp_path_factory.mktemp("pipeline") / "bm"
    shutil.copytree(trained, out)
    assert main(["prune", "--bundle", str(out), "--sparsity", "0.5", "--epochs", "4"]) == 0
    assert main(["int8", "--bundle", str(out)]) == 0
    first = (out / "step_int8.tflite").read_bytes()
    assert main(["int8", "--bundle", str(out), "--no-arena"]) == 0
    second = (out / "step_int8.tflite").read_bytes()
    assert main(["check", "--bundle", str(out), "--no-progress"]) == 0
    return {"bundle": out, "first": first, "second": second}


def test_help_lists_commands(capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for cmd in ("prune", "int8", "check"):
        assert cmd in text


def test_int8_is_byte_identical_across_runs(pipeline: dict) -> None:
    assert pipeline["first"] == pipeline["second"]


def test_step_model_is_pure_int8_with_unit_state(pipeline: dict) -> None:
    b = Bundle.open(pipeline["bundle"])
    graph = read(b.read_bytes("step_int8.tflite"))
    op_names = [op.opcode for op in graph.operators]
    assert set(op_names) <= set(STEP_OPS)
    assert not [t.name for t in graph.tensors if t.dtype == "FLOAT32"]
    q = b.manifest["quantization"]
    assert q["source_model"]["file"] == "model_pruned.keras"
    assert q["step"]["ops"] == op_names and q["step"]["n_ops"] == len(graph.operators)
    for name in ("h1_in",):
        assert q["step"]["inputs"][name]["scale"] == 1 / 128
        assert q["step"]["inputs"][name]["zero_point"] == 0
    assert q["step"]["outputs"]["h1_out"]["scale"] == 1 / 128
    assert q["tflm_arena"]["bytes"] > 0 and q["tflm_arena"]["label"].startswith("host (x86-64)")
    # The device input contract matches the model's x input.
    iq = b.manifest["preprocess"]["input_quant"]
    x = q["step"]["inputs"]["x"]
    assert (iq["scale"], iq["zero_point"]) == (x["scale"], x["zero_point"])
    assert q["step"]["ring_buffer"]["fill"] == x["zero_point"]
    assert b.manifest["sparsity"]["overall"] == pytest.approx(0.5, abs=0.01)


def test_parity_report_has_the_same_keys_for_every_backend(pipeline: dict) -> None:
    b = Bundle.open(pipeline["bundle"])
    rep = b.read_json("reports/parity.json")
    assert rep["schema"] == 1
    backends = rep["backends"]
    assert {"float", "float_unpruned", "litert", "litert_xnnpack", "tflm"} <= set(backends)
    keys = {name: set(e) for name, e in backends.items()}
    assert all(k == keys["float"] for k in keys.values()), keys
    assert CLASSIFICATION_KEYS <= keys["float"]
    # The float step chain of model_float.keras reproduces reference.npz.
    assert rep["reference"]["float_step_vs_reference_max_abs"] <= 1e-5
    for name in ("litert", "tflm"):
        assert backends[name]["argmax_agreement"] >= 0.9
        assert backends[name]["model_bytes"] == b.artifacts["step_int8.tflite"]["bytes"]
    for key in ("litert_vs_tflm", "litert_xnnpack_vs_tflm"):
        assert set(rep[key]) == {"single_step", "chain"}
        assert rep[key]["chain"]["windows"] == backends["tflm"]["n"]
    t = b.manifest["thresholds"]["device"]
    # Marks start from the worst host int8 backend (a Pi runs LiteRT, a board TFLM's arithmetic).
    int8 = [backends[n] for n in ("litert", "litert_xnnpack", "tflm")]
    assert t["min_accuracy"] == pytest.approx(min(e["accuracy"] for e in int8) - 0.01)
    worst_agree = min(e["argmax_agreement_vs_reference"] for e in int8)
    assert t["min_argmax_agreement"] == pytest.approx(worst_agree - 0.005)
    # ... and agreement is measured against reference.npz, which a device check uses.
    ref = b.load_npz("reference.npz")
    assert backends["float_unpruned"]["argmax_agreement_vs_reference"] == 1.0
    assert ref["probs"].shape[0] == backends["tflm"]["n"]
    assert "derivation" in t
    assert (pipeline["bundle"] / "reports/parity.md").read_text().startswith("# Parity")


def test_check_refuses_a_stale_step_model(pipeline: dict, tmp_path: Path, capsys) -> None:
    out = tmp_path / "stale"
    shutil.copytree(pipeline["bundle"], out)
    m = json.loads((out / "manifest.json").read_text())
    m["quantization"]["source_model"]["sha256"] = "0" * 64
    (out / "manifest.json").write_text(json.dumps(m))
    code, err = _cli(["check", "--bundle", str(out)], capsys)
    assert code == 2
    assert err.startswith("quantize: error: check:") and "rerun" in err
    assert err.count("\n") == 1


def test_corrupted_model_is_refused_naming_the_file(trained: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "corrupt"
    shutil.copytree(trained, out)
    p = out / "model_float.keras"
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p.write_bytes(bytes(data))
    for cmd in ("int8", "prune"):
        code, err = _cli([cmd, "--bundle", str(out)], capsys)
        assert code == 2
        assert err.startswith(f"quantize: error: {cmd}:")
        assert "model_float.keras" in err and "sha256" in err
        assert err.count("\n") == 1
    assert not (out / "step_int8.tflite").exists()


def test_bad_schema_version_is_refused(trained: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "schema"
    shutil.copytree(trained, out)
    m = json.loads((out / "manifest.json").read_text())
    m["schema_version"] = 99
    (out / "manifest.json").write_text(json.dumps(m))
    for cmd in ("int8", "check"):
        code, err = _cli([cmd, "--bundle", str(out)], capsys)
        assert code == 2
        assert "manifest.json" in err and "schema_version 99" in err


def test_check_without_int8_says_what_to_run(trained: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "noint8"
    shutil.copytree(trained, out)
    code, err = _cli(["check", "--bundle", str(out)], capsys)
    assert code == 2 and "step_int8.tflite" in err and "quantize int8" in err


def test_int8_ring_buffer_fill_is_the_zero_point_not_count_zero() -> None:
    """Padding before the first sample is a normalized 0.0, i.e. the x zero point."""
    cfg = ModelConfig(3, 2, front_end_filters=4, front_end_kernel=3, front_end_stride=2)
    rng = np.random.default_rng(0)
    counts = rng.integers(-400, 400, size=(5, 11, 3)).astype(np.int16)
    scale = np.array([0.013, 0.021, 0.0057])
    mean, std = np.array([0.31, -0.17, 0.05]), np.array([1.3, 0.9, 1.1])
    s_in, zp = 0.05, -7
    iq = InputQuant.derive(scale, mean, std, s_in, zp)
    via_counts = int8_step_inputs(cfg, quantize_counts(counts, iq), zp)
    via_float = contract.quantize(step_inputs(cfg, normalize(counts, scale, mean, std)), s_in, zp)
    assert via_counts.shape == via_float.shape == (5, 6, 9)
    # Equal but where float32 normalization lands across a rounding boundary.
    diff = np.abs(via_counts.astype(int) - via_float)
    assert diff.max() <= 1 and np.count_nonzero(diff) <= 2
    assert np.all(via_counts[:, 0, :6] == zp)  # the two samples before sample 0
    assert not np.all(quantize_counts(np.zeros((1, 3), np.int16), iq) == zp)


def test_anomaly_task_through_int8_and_check(tmp_path: Path) -> None:
    from train.train import run

    cfg = small_config(tmp_path, "anomaly.toml", epochs=2)
    out = run(str(cfg), str(tmp_path / "anomaly"))
    # --window-model: the forecaster's head runs on every step; the unrolled model
    # must still pass the purity check (a Dense on (1, T, U) used to leave a SHAPE op)
    argv = ["int8", "--bundle", str(out), "--in-process", "--no-arena", "--window-model"]
    assert main(argv) == 0
    assert main(["check", "--bundle", str(out), "--no-progress"]) == 0
    b = Bundle.open(out)
    assert b.manifest["quantization"]["window"]["n_ops"] > 0
    rep = b.read_json("reports/parity.json")
    assert rep["task"] == "forecast"
    keys = {name: set(e) for name, e in rep["backends"].items()}
    assert all(k == keys["float"] for k in keys.values())
    assert FORECAST_KEYS <= keys["float"]
    for e in rep["backends"].values():
        assert isinstance(e["hit"], bool) and e["margin"] > 0 and 0 <= e["point_auc"] <= 1
    assert rep["litert_vs_tflm"]["chain"]["windows_argmax_differ"] is None
    assert "require_hit" in b.manifest["thresholds"]["device"]
    assert "anomaly_score" in b.manifest["thresholds"]


def test_saturated_gate_inputs_do_not_set_the_scale() -> None:
    """One unit with a gate pre-activation far into saturation (as training leaves some)
    must not coarsen the int8 scale of the gate products that every unit shares.

    Units with small candidate inputs (rows that pruning has mostly emptied) are the
    ones that lose: with the calibrated range their pre-activations round to a few
    steps. Capping the ranges that feed LOGISTIC and TANH where the int8 output
    saturates keeps them, and changes nothing for the saturated unit.
    """
    import math

    import keras

    from quantize.convert import calibration_pairs, convert_step
    from quantize.step_model import build_step_model, run_float_chain
    from tests.support import int8_chain
    from train.model import build_model

    cfg = ModelConfig(3, 4, gru_units=(8,))
    keras.utils.set_random_seed(0)
    model = build_model(cfg)
    rng = np.random.default_rng(0)
    gru = model.get_layer("gru_1")
    kernel, recurrent, bias = gru.get_weights()
    kernel = rng.normal(0.0, 0.1, kernel.shape).astype(np.float32)  # small gate inputs
    kernel[:, 0] = 60.0  # unit 0's update gate: |pre-activation| ≫ ln 511
    bias = rng.normal(0.0, 0.3, bias.shape).astype(np.float32)
    gru.set_weights([kernel, recurrent, bias])
    walk = np.cumsum(rng.normal(size=(40, 24, 3)), axis=1) / np.sqrt(np.arange(1, 25))[:, None]
    windows = walk.astype(np.float32)
    cal = calibration_pairs(model, cfg, windows[:30], 600, 0)
    step = build_step_model(model, cfg)
    capped = convert_step(step, cal)
    calibrated = convert_step(step, cal, saturated="calibrated")

    def gate_scales(tfl: bytes) -> dict[str, float]:
        g = read(tfl)
        out = {}
        for op in g.operators:
            if op.opcode in ("LOGISTIC", "TANH"):
                out[op.opcode] = g.tensors[op.inputs[0]].scale[0]
        x = g.inputs[[g.tensors[i].shape[-1] for i in g.inputs].index(cfg.step_inputs)]
        gx = next(op for op in g.operators if op.opcode == "FULLY_CONNECTED" and op.inputs[0] == x)
        out["gx"] = g.tensors[gx.outputs[0]].scale[0]
        return out

    s_cap, s_cal = gate_scales(capped), gate_scales(calibrated)
    assert s_cap["LOGISTIC"] <= 2 * math.log(511) / 255 * (1 + 1e-6)
    assert s_cap["TANH"] <= 2 * math.atanh(1 - 1 / 256) / 255 * (1 + 1e-6)
    assert s_cap["gx"] < s_cal["gx"] / 4, (s_cap, s_cal)

    test = windows[30:]
    ref = run_float_chain(build_step_model(model, cfg, batch_size=None), cfg, test)["h1_out"]
    err = {}
    for name, tfl in (("capped", capped), ("calibrated", calibrated)):
        out = int8_chain(tfl, cfg, test)
        err[name] = float(np.mean(np.abs(out["h1_out"].astype(np.float64) / 128 - ref)))
    assert err["capped"] < err["calibrated"] / 2, err
