"""Full-int8 conversion of the single-step model (and, optionally, the unrolled window model).

The GRU state is carried in int8 from step to step. ``convert_step`` makes the
quantization of every ``hN_in`` identical to that of ``hN_out`` by construction:
it calibrates, then sets the recorded range of both tensors to one range before
the quantizer runs. ``state="unit"`` (default) uses [−1, 127/128], i.e. scale
1/128 and zero point 0 exactly, since a GRU state lies in (−1, 1);
``state="union"`` uses the union of the two calibrated ranges. A device copies
``h_out`` bytes into ``h_in`` unchanged. With ``state="calibrated"`` the ranges
are left as the calibrator found them (they differ, often by one float ulp);
:func:`quantize.graph.step_info` then records the integer requantization a device
would have to apply between steps.

The inputs of LOGISTIC and TANH get ranges no wider than where the int8 output
saturates (``saturated="cap"``, default; see :mod:`quantize.ranges`): σ
rounds to its extreme int8 value beyond ``|x| = ln 511`` and tanh beyond
``|x| = atanh(1 − 1/256)``, so a wider range only coarsens the scale. A trained
GRU has a few gate pre-activations far into saturation (|x| > 100) that would
otherwise set the scale of the whole ``x · W + b`` product, which every gate of
every unit shares: a step of ~0.7, larger than the whole pre-activation range
of units whose input weights pruning has mostly removed.

Every conversion is checked by :func:`quantize.graph.check_purity`: no FLOAT32
tensor, ops only from an allowed list.

:func:`convert_in_subprocess` runs the step conversion as ``python -m quantize.convert
step …`` in a fresh process with ``PYTHONHASHSEED=0``: the converter's output depends
on the hash seed and on what the process built before (layer name counters end up
in tensor names), so a fresh process makes the bytes a function of the inputs only.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from tensorflow.lite.python import convert as _tfl_convert

from edge_runtime import contract
from edge_runtime.bundle import npz_bytes
from quantize.bundle_io import ROOT, StageError, fresh_env, last_line
from quantize.graph import check_purity
from quantize.ranges import cap_saturated_ranges, set_state_ranges
from quantize.step_model import build_step_model, input_names, run_float_chain
from train.model import ModelConfig

_STATE_MODES = ("unit", "union", "calibrated")
_SATURATED_MODES = ("cap", "calibrated")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Swallow what the exporter and converter print to stdout ("Saved artifact at …")."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def _converter(model: keras.Model, workdir: str) -> tf.lite.TFLiteConverter:
    path = os.path.join(workdir, "saved_model")
    with _quiet():
        model.export(path, format="tf_saved_model", verbose=False)
    conv = tf.lite.TFLiteConverter.from_saved_model(path)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    return conv


def _dataset(calibration: dict[str, np.ndarray]) -> Any:
    lengths = {k: len(v) for k, v in calibration.items()}
    if len(set(lengths.values())) != 1 or not lengths:
        raise ValueError(f"calibration arrays must have one common length, found {lengths}")
    n = next(iter(lengths.values()))
    arrays = {k: np.asarray(v, np.float32) for k, v in sorted(calibration.items())}

    def gen() -> Iterable[dict[str, np.ndarray]]:
        for i in range(n):
            yield {k: v[i : i + 1] for k, v in arrays.items()}

    return gen


def convert_step(
    step_model: keras.Model,
    calibration: dict[str, np.ndarray],
    *,
    state: str = "unit",
    saturated: str = "cap",
) -> bytes:
    """Convert the single-step model to full int8 and return the .tflite bytes.

    ``calibration`` maps every input name (``x``, ``h1_in``, …) to an array
    ``(n, width)`` of float (x, h_{t−1}) pairs, e.g. from ``calibration_pairs``.
    ``state="unit"`` (default) or ``"union"`` makes each ``hN_in`` and ``hN_out``
    share one quantization (see the module doc); ``"calibrated"`` keeps the
    calibrator's. ``saturated="cap"`` (default) narrows the ranges feeding LOGISTIC
    and TANH (:func:`quantize.ranges.cap_saturated_ranges`); ``"calibrated"`` keeps them.
    """
    if state not in _STATE_MODES:
        raise ValueError(f"state: expected one of {_STATE_MODES}, found {state!r}")
    if saturated not in _SATURATED_MODES:
        raise ValueError(f"saturated: expected one of {_SATURATED_MODES}, found {saturated!r}")
    names = sorted(step_model.input.keys()) if isinstance(step_model.input, dict) else None
    if names is not None and sorted(calibration) != names:
        raise ValueError(f"calibration keys {sorted(calibration)} != model inputs {names}")
    with tempfile.TemporaryDirectory(prefix="tinygru-convert-") as tmp:
        conv = _converter(step_model, tmp)
        conv.representative_dataset = _dataset(calibration)
        if state == "calibrated" and saturated == "calibrated":
            with _quiet():
                return bytes(conv.convert())
        conv._experimental_calibrate_only = True
        with _quiet():
            calibrated = bytes(conv.convert())
    if saturated == "cap":
        calibrated, _ = cap_saturated_ranges(calibrated)
    if state != "calibrated":
        outs = [n for n in step_model.output] if isinstance(step_model.output, dict) else []
        pairs = [(n, n.replace("_in", "_out")) for n in (names or []) if n.endswith("_in")]
        missing = [b for _, b in pairs if b not in outs]
        if missing:
            raise ValueError(f"step model lacks state output(s) {missing}")
        calibrated, _ = set_state_ranges(calibrated, pairs, state)
    with _quiet():
        quantized = _tfl_convert.mlir_quantize(
            calibrated,
            disable_per_channel=False,
            input_data_type=tf.int8,
            output_data_type=tf.int8,
        )
    return bytes(_tfl_convert.deduplicate_readonly_buffers(quantized))


def calibration_pairs(
    float_model: keras.Model,
    cfg: ModelConfig,
    windows: np.ndarray,
    n_samples: int = 1000,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """(x, h_{t−1}) pairs for calibration, from the float model's own state sequences.

    Whole windows are drawn at random (training windows come ordered by subject),
    each is run as a float step chain from a zero state, and ``n_samples`` of the
    resulting steps are drawn at random. Returns ``{"x": (n, k·C), "h1_in": (n, U), …}``.
    """
    windows = np.asarray(windows, np.float32)
    if windows.ndim != 3 or windows.shape[2] != cfg.n_channels:
        raise ValueError(f"windows: expected (N, T, {cfg.n_channels}), found {windows.shape}")
    rng = np.random.default_rng(seed)
    n_steps = len(range(0, windows.shape[1], cfg.front_end_stride))
    n_win = min(len(windows), max(1, math.ceil(n_samples / n_steps)))
    chosen = np.sort(rng.choice(len(windows), n_win, replace=False))
    step = build_step_model(float_model, cfg, batch_size=None)
    chain = run_float_chain(step, cfg, windows[chosen])
    names = input_names(cfg)
    flat = {n: chain[n].reshape(-1, chain[n].shape[-1]) for n in names}
    total = len(flat["x"])
    if total > n_samples:
        keep = np.sort(rng.choice(total, n_samples, replace=False))
        flat = {n: v[keep] for n, v in flat.items()}
    return {n: np.ascontiguousarray(v, np.float32) for n, v in flat.items()}


def convert_window(
    float_model: keras.Model,
    cfg: ModelConfig,
    T: int,
    windows: np.ndarray,
    n_samples: int = 200,
    seed: int = 0,
) -> bytes:
    """The whole-window model, unrolled over T steps, batch 1, full int8."""
    from train.model import build_model

    unrolled = build_model(cfg, unroll=True)
    unrolled.set_weights(float_model.get_weights())
    inp = keras.Input((T, cfg.n_channels), batch_size=1, name="x")
    t = inp
    for layer in unrolled.layers:  # the family is a chain: front end, GRU layers, head
        if isinstance(layer, keras.layers.GRU):
            # a constant zero state: a state derived from the input's shape adds SHAPE/FILL
            t = layer(t, initial_state=[keras.ops.zeros((1, layer.units))])
        elif isinstance(layer, keras.layers.Dense) and len(t.shape) == 3:
            # a head over every step (a forecaster): a Dense on (1, T', U) becomes a
            # Tensordot whose SHAPE op is not int8; on (T', U) it is one FULLY_CONNECTED
            steps, width = int(t.shape[1]), int(t.shape[2])
            t = keras.ops.reshape(layer(keras.ops.reshape(t, (steps, width))), (1, steps, -1))
        elif not isinstance(layer, keras.layers.InputLayer | keras.layers.Dropout):
            t = layer(t)
    model = keras.Model(inp, {"y": t}, name="tinygru_window")
    windows = np.asarray(windows, np.float32)[:, :T]
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(windows), min(n_samples, len(windows)), replace=False))
    with tempfile.TemporaryDirectory(prefix="tinygru-convert-") as tmp:
        conv = _converter(model, tmp)
        conv.representative_dataset = _dataset({"x": windows[chosen]})
        with _quiet():
            return bytes(conv.convert())


def convert_in_subprocess(
    model_path: Path, cfg: Any, calibration: dict[str, np.ndarray], *, timeout: float = 600
) -> bytes:
    """Run ``python -m quantize.convert step …`` in a fresh process with PYTHONHASHSEED=0."""
    with tempfile.TemporaryDirectory(prefix="tinygru-int8-") as tmp:
        t = Path(tmp)
        (t / "config.json").write_text(json.dumps(cfg.to_dict()))
        (t / "calibration.npz").write_bytes(npz_bytes(calibration))
        out = t / "step.tflite"
        cmd = [sys.executable, "-m", "quantize.convert", "step", str(model_path)]
        cmd += [str(t / "config.json"), str(t / "calibration.npz"), str(out)]
        try:
            r = subprocess.run(
                cmd, cwd=ROOT, env=fresh_env(), capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            raise StageError(
                f"{model_path.name}: conversion took longer than {timeout} s"
            ) from None
        if r.returncode != 0 or not out.is_file():
            raise StageError(
                f"{model_path.name}: conversion to {contract.STEP_MODEL} failed "
                f"(exit {r.returncode}): {last_line(r.stderr)}"
            )
        return out.read_bytes()


def _main(argv: list[str]) -> int:
    """``python -m quantize.convert step MODEL.keras CONFIG.json CALIB.npz OUT.tflite``."""
    if len(argv) != 5 or argv[0] != "step":
        print(_main.__doc__, file=sys.stderr)
        return 2
    _, model_path, cfg_path, calib_path, out_path = argv
    with open(cfg_path) as f:
        cfg = ModelConfig.from_dict(json.load(f))
    float_model = keras.models.load_model(model_path, safe_mode=True, compile=False)
    with np.load(calib_path, allow_pickle=False) as z:
        calibration = {k: z[k] for k in z.files}
    tflite = convert_step(build_step_model(float_model, cfg), calibration)
    check_purity(tflite)
    with open(out_path, "wb") as f:
        f.write(tflite)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
