"""The single-step model: float equivalence with the window model, int8 conversion,
purity, determinism, and agreement of the int8 chain across interpreters.

Tiny models (GRU(8), T ≤ 24) with random weights and random biases: the biases
must be non-zero, or a wrong bias layout (input vs recurrent, gate order) would
go unnoticed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from edge_runtime import tflm_ref
from edge_runtime.interpreter import StepInterpreter
from quantize.convert import calibration_pairs, convert_step
from quantize.graph import STEP_OPS, PurityError, check_purity, step_info
from quantize.step_model import build_step_model, run_float_chain, state_names, step_inputs
from tests.support import int8_chain
from train.model import ModelConfig, build_model

ROOT = Path(__file__).resolve().parents[1]

MEMBERS = {
    "gru": ModelConfig(3, 4, gru_units=(8,)),
    "front_end_k5_s2": ModelConfig(
        3, 4, front_end_filters=8, front_end_kernel=5, front_end_stride=2, gru_units=(8,)
    ),
    "two_layers": ModelConfig(3, 4, gru_units=(8, 6)),
    "forecast": ModelConfig(3, 3, head="forecast", gru_units=(8,)),
    "front_end_k3_forecast": ModelConfig(
        3, 3, head="forecast", front_end_filters=6, front_end_kernel=3, gru_units=(8, 8)
    ),
}

# Float step chain vs Keras window model: both are float32 and evaluate the same
# products in a different order; measured max |diff| ≤ 3e-7 on these models.
FLOAT_TOL = 1e-5


def _model(cfg: ModelConfig, seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    model = build_model(cfg)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        weights = layer.get_weights()
        if weights:
            # Glorot kernels are kept (×1.5 for livelier states); biases become random.
            layer.set_weights(
                [w * 1.5 if w.ndim > 1 and w.size > w.shape[-1] else w for w in weights[:-1]]
                + [rng.normal(0.0, 0.4, weights[-1].shape).astype(np.float32)]
            )
    return model


def _windows(n: int, T: int, C: int, seed: int) -> np.ndarray:
    """Smooth normalized series (a scaled random walk), so the state has something to carry."""
    rng = np.random.default_rng(seed)
    walk = np.cumsum(rng.normal(size=(n, T, C)), axis=1) / np.sqrt(np.arange(1, T + 1))[:, None]
    return walk.astype(np.float32)


def _float_reference(model: keras.Model, cfg: ModelConfig, windows: np.ndarray) -> np.ndarray:
    """The window model's output per step: (N, n_classes) or (N, T, n_outputs)."""
    return np.asarray(model(windows, training=False))


@pytest.mark.parametrize("member", list(MEMBERS))
def test_float_step_chain_equals_window_model(member: str) -> None:
    cfg = MEMBERS[member]
    model = _model(cfg)
    T = 15  # odd: with stride 2 the last step sees a partial stride
    windows = _windows(4, T, cfg.n_channels, seed=1)
    ref = _float_reference(model, cfg, windows)
    step = build_step_model(model, cfg, batch_size=None)
    chain = run_float_chain(step, cfg, windows)
    got = chain["y"][:, -1] if cfg.head == "softmax" else chain["y"]
    assert got.shape == ref.shape
    diff = float(np.abs(got - ref).max())
    assert diff <= FLOAT_TOL, f"{member}: max |step chain − window| = {diff:.3g}"
    # The batch-1 step model (the one converted) gives the same chain.
    one = run_float_chain(build_step_model(model, cfg), cfg, windows[0])
    np.testing.assert_allclose(one["y"], chain["y"][0], atol=FLOAT_TOL)


def test_step_inputs_are_the_causal_ring_buffer() -> None:
    cfg = MEMBERS["front_end_k5_s2"]
    w = np.arange(7 * 3, dtype=np.float32).reshape(1, 7, 3)
    xs = step_inputs(cfg, w)
    assert xs.shape == (1, 4, 15)  # steps at t = 0, 2, 4, 6
    # step at t=2: samples −2, −1 (zeros), 0, 1, 2, oldest first, channel-minor
    np.testing.assert_array_equal(xs[0, 1], np.concatenate([np.zeros(6), w[0, :3].reshape(-1)]))
    np.testing.assert_array_equal(xs[0, 3], w[0, 2:7].reshape(-1))


@pytest.fixture(scope="module")
def converted() -> dict[str, tuple[ModelConfig, keras.Model, bytes, dict]]:
    out = {}
    for member in ("gru", "front_end_k5_s2", "two_layers", "forecast"):
        cfg = MEMBERS[member]
        model = _model(cfg)
        calib = calibration_pairs(model, cfg, _windows(40, 24, cfg.n_channels, 2), 600, 0)
        tflite = convert_step(build_step_model(model, cfg), calib)
        out[member] = (cfg, model, tflite, calib)
    return out


def test_conversion_is_pure_int8_with_equal_state_quantization(converted: dict) -> None:
    for member, (cfg, _, tflite, _) in converted.items():
        summary = check_purity(tflite)
        info = step_info(tflite, cfg)
        assert info["state_equal"], member
        for name in state_names(cfg)[0] + state_names(cfg)[1]:
            io = info["inputs"].get(name) or info["outputs"][name]
            assert (io["scale"], io["zero_point"]) == (1 / 128, 0), (member, name, io)
            assert io["dtype"] == "INT8"
        assert info["inputs"]["x"]["shape"] == [1, cfg.step_inputs]
        n_fc = 2 * len(cfg.gru_units) + 1 + int(cfg.has_front_end)
        assert summary["op_counts"]["FULLY_CONNECTED"] == n_fc, member
    cfg, _, tflite, _ = converted["gru"]
    assert check_purity(tflite)["ops"] == [
        "FULLY_CONNECTED",  # x · W + b_in       (3U)
        "SPLIT_V",  # → x part of z, r (2U) | of h̃ (U)
        "FULLY_CONNECTED",  # h · U + b_rec      (3U)
        "SPLIT_V",
        "ADD",
        "LOGISTIC",
        "SPLIT",  # z | r
        "MUL",  # r ⊙ (h · Uh + bh_rec)
        "ADD",
        "TANH",  # h̃
        "SUB",  # h − h̃
        "MUL",  # z ⊙ (h − h̃)
        "ADD",  # h' = h̃ + z ⊙ (h − h̃)
        "FULLY_CONNECTED",  # head
        "SOFTMAX",
    ]


def test_impure_models_are_refused(converted: dict) -> None:
    _, _, tflite, _ = converted["gru"]
    with pytest.raises(PurityError, match="TANH"):
        check_purity(tflite, [op for op in STEP_OPS if op != "TANH"])

    import tensorflow as tf

    # A model with float input and output: QUANTIZE / DEQUANTIZE and FLOAT32 tensors.
    cfg = MEMBERS["gru"]
    model = _model(cfg)
    step = build_step_model(model, cfg)
    calib = calibration_pairs(model, cfg, _windows(8, 16, 3, 3), 64, 0)

    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        from quantize.convert import _converter, _dataset, _quiet

        conv = _converter(step, tmp)
        conv.inference_input_type = tf.float32
        conv.inference_output_type = tf.float32
        conv.representative_dataset = _dataset(calib)
        with _quiet():
            impure = conv.convert()
    with pytest.raises(PurityError, match=r"QUANTIZE|FLOAT32"):
        check_purity(impure)
    with pytest.raises(PurityError, match=r"FLOAT32"):
        check_purity(impure, [*STEP_OPS, "QUANTIZE", "DEQUANTIZE"])


def test_conversion_is_deterministic_in_fresh_processes(converted: dict, tmp_path: Path) -> None:
    cfg, model, tflite, calib = converted["two_layers"]
    model.save(tmp_path / "m.keras")
    (tmp_path / "cfg.json").write_text(json.dumps(cfg.to_dict()))
    np.savez(tmp_path / "calib.npz", **calib)
    env = {**os.environ, "PYTHONHASHSEED": "0", "TF_CPP_MIN_LOG_LEVEL": "3"}
    env["TF_ENABLE_ONEDNN_OPTS"] = "0"
    outs = []
    for i in range(2):
        out = tmp_path / f"step{i}.tflite"
        args = [str(tmp_path / n) for n in ("m.keras", "cfg.json", "calib.npz")] + [str(out)]
        subprocess.run(
            [sys.executable, "-m", "quantize.convert", "step", *args],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
        )
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    assert outs[0] == tflite  # and equal to this process's conversion (PYTHONHASHSEED=0)


# int8 chain vs float chain, 12 windows × 24 steps, from zero states (measured on
# these models, worst member): softmax probabilities differ by ≤ ~0.02 (5 steps
# of 1/256: rounding in ~10 int8 ops, carried through 24 steps of recurrence);
# the forecast by ≤ ~0.06 (output scale ~0.02, so ~3 steps). Tolerances allow ~2×.
Y_TOL = {"softmax": 0.04, "forecast": 0.12}
H_MEAN_TOL = 0.02  # mean |h_int8 − h_float| (measured ≤ ~0.008; one h step is 1/128)


@pytest.mark.parametrize("backend", ["litert", "tflm"])
def test_int8_chain_agrees_with_float_chain(converted: dict, backend: str) -> None:
    for member, (cfg, model, tflite, _) in converted.items():
        windows = _windows(12, 24, cfg.n_channels, seed=4)
        ref = run_float_chain(build_step_model(model, cfg, batch_size=None), cfg, windows)
        got = int8_chain(tflite, cfg, windows, backend)
        y_err = float(np.abs(got["y_float"] - ref["y"]).max())
        assert y_err <= Y_TOL[cfg.head], (member, backend, y_err)
        for h_out in state_names(cfg)[1]:
            h_err = float(np.abs(got[h_out] / 128.0 - ref[h_out]).mean())
            assert h_err <= H_MEAN_TOL, (member, backend, h_out, h_err)
        if cfg.head == "softmax":
            agree = (got["y"][:, -1].argmax(-1) == ref["y"][:, -1].argmax(-1)).mean()
            assert agree >= 11 / 12, (member, backend, agree)


# One step on identical int8 inputs, LiteRT (built-in kernels) vs TFLM. Single
# ops differ by at most one int8 step (FULLY_CONNECTED, ADD, LOGISTIC rounding),
# but a step is ~13 ops in sequence, and TANH / LOGISTIC can widen a one-step
# difference in their input: with the TANH input range capped at saturation
# (scale 2·atanh(1 − 1/256)/255 ≈ 0.0245) one input step is up to ~3 output
# steps of 1/128. Measured on these models: at most 6 of 864 values of a state
# differed (max 3 steps, h2_out of two_layers) and at most 9 of 576 head outputs (1 step).
STEP_DIFF_MAX = 3
STEP_DIFF_FRACTION = 0.02


def test_litert_and_tflm_agree_on_single_steps(converted: dict) -> None:
    for member, (cfg, _, tflite, _) in converted.items():
        chain = int8_chain(tflite, cfg, _windows(6, 24, cfg.n_channels, seed=5), "litert")
        tflm = StepInterpreter(tflite, backend="tflm")
        lite = StepInterpreter(tflite, backend="litert")
        n, steps = chain["x"].shape[:2]
        diffs = []
        for w in range(n):
            for j in range(steps):
                # identical inputs: the LiteRT chain's own step inputs
                x = chain["x"][w, j][None]
                h = [chain[k][w, j][None] for k in state_names(cfg)[0]]
                ha, hb = [v.copy() for v in h], [v.copy() for v in h]
                ya, yb = lite.step(x, ha), tflm.step(x, hb)
                for a, b in zip([*ha, ya], [*hb, yb], strict=True):
                    diffs.append(np.abs(a.astype(np.int16) - b).reshape(-1))
        d = np.concatenate(diffs)
        assert d.max() <= STEP_DIFF_MAX, (member, int(d.max()))
        assert (d > 0).mean() <= STEP_DIFF_FRACTION, (member, float((d > 0).mean()))


def test_step_interpreter_resolves_logical_names(converted: dict) -> None:
    """Without a manifest the step interpreter finds every tensor by its logical name, at
    the index and position the converted graph gives it."""
    cfg, _, tflite, _ = converted["two_layers"]
    info = step_info(tflite, cfg)
    for backend, key in (("litert", "index"), ("tflm", "position")):
        it = StepInterpreter(tflite, backend=backend)
        specs = {**it.inputs, **it.outputs}
        assert set(specs) == {"x", "h1_in", "h2_in", "h1_out", "h2_out", "y"}
        assert specs["h2_in"].shape == (1, 6) and specs["h1_out"].shape == (1, 8)
        assert specs["y"].shape == (1, 4)
        for k in ("x", "h1_in", "h2_in"):
            assert specs[k].index == info["inputs"][k][key], (backend, k)


def test_requantize_matches_float_rounding() -> None:
    rng = np.random.default_rng(0)
    q = rng.integers(-128, 128, 1000).astype(np.int8)
    for s_from, zp_from, s_to, zp_to in [(0.0071, 3, 0.0078125, 0), (0.01, -5, 0.004, 2)]:
        m, s = tflm_ref.quantize_multiplier(s_from / s_to)
        acc = q.astype(np.int64) - zp_from
        got = np.clip(tflm_ref.requantize(acc, m, s) + zp_to, -128, 127)
        want = np.clip(
            np.round((q.astype(np.float64) - zp_from) * s_from / s_to) + zp_to, -128, 127
        )
        assert np.abs(got.astype(np.int32) - want).max() <= 1
