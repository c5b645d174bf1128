"""The int8 stage on a bundle: ``python -m quantize int8 --bundle B``.

It reads ``model_pruned.keras`` when the bundle has one, else
``model_float.keras``, and writes

- ``step_int8.tflite``: the single GRU step, full int8, converted in a fresh
  Python process with ``PYTHONHASHSEED=0`` (the converter's output depends on
  the hash seed; a fresh process makes the bytes a function of the inputs only);
- ``window_int8.tflite`` with ``window_model=True``;
- ``step_int8_ptq.tflite`` when the converted model is ``model_qat.keras``: the model
  before quantization-aware fine-tuning, converted the same way (same calibration
  draw, fresh process), i.e. the step this stage writes when QAT is off. The
  parity stage runs it beside the QAT step (PTQ vs QAT on every backend); no
  later stage deploys it. Its entry is the manifest's ``quantization.ptq``;
- ``reports/quantize.json``;
- the manifest's ``quantization`` section (the step model's ops, tensors, size,
  inputs and outputs with their quantization, the state handling, the ring
  buffer fill value, the calibration, the smallest host TFLM arena) and
  ``preprocess.input_quant``: the device input contract, derived from the
  channel scales, the normalization and the int8 ``x`` input's scale and zero
  point (:meth:`edge_runtime.preprocess.InputQuant.derive`).

The ring buffer of the front end is zero-filled before the first sample in the
float model, i.e. filled with the *normalized* value 0.0. TFLite's quantizer
always makes 0.0 exactly representable, so that value is the ``x`` zero point
exactly (``zp + rhaz(0 / s) = zp``); it is *not* the quantized count 0, which is
``quantize_counts(0)`` and in general differs from ``zp`` by ``rhaz(-mean_c /
(std_c · s))``. A device fills its ring buffer with ``zp``, recorded as
``quantization.step.ring_buffer.fill``.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime import contract
from edge_runtime.bundle import Bundle, BundleError, stage_writer
from edge_runtime.preprocess import InputQuant, normalize, quantize_counts
from quantize.arena import LABEL as ARENA_LABEL
from quantize.arena import smallest_arena
from quantize.bundle_io import (
    QAT_MODEL,
    StageError,
    channel_scales,
    int8_step_inputs,
    load_keras,
    model_config,
    open_bundle,
    pre_qat_model,
    source_model,
)
from quantize.convert import (
    calibration_pairs,
    convert_in_subprocess,
    convert_step,
    convert_window,
)
from quantize.graph import STEP_OPS, WINDOW_OPS, PurityError, check_purity, step_info
from quantize.step_model import build_step_model, state_names, step_inputs
from train.arrays import training_arrays

STEP_FILE = contract.STEP_MODEL
WINDOW_FILE = contract.WINDOW_MODEL
PTQ_FILE = "step_int8_ptq.tflite"  # the pre-QAT step, for the PTQ vs QAT comparison only
UNIT_SCALE = contract.STATE_SCALE
PARITY_FILES = ("reports/parity.json", "reports/parity.md")


@dataclass
class _Step:
    """A converted step model and what was learnt from it."""

    tflite: bytes
    summary: dict[str, Any]  # quantize.graph.summary
    info: dict[str, Any]  # quantize.graph.step_info
    s_in: float  # x scale
    zp: int  # x zero point = the ring buffer's fill


def int8(
    bundle_dir: str | os.PathLike[str],
    *,
    window_model: bool = False,
    calibration_samples: int = 1000,
    seed: int = 0,
    data_path: str | None = None,
    arena: bool = True,
    fresh_process: bool = True,
) -> dict[str, Any]:
    """Convert the bundle's model to ``step_int8.tflite``; returns the ``quantization`` section.

    ``fresh_process=False`` converts in this process: faster, but the bytes may
    then depend on the hash seed and on what the process built before (layer
    name counters end up in tensor names).
    """
    t_start = time.perf_counter()
    b = open_bundle(bundle_dir)
    cfg = model_config(b)
    source = source_model(b)
    src_path = b.path(source)
    model = load_keras(b, source)
    print(f"[quantize] int8: {b.root} from {source}")

    arrays = training_arrays(b, data_path)
    x_train = np.asarray(arrays.x_train, np.float32)
    t0 = time.perf_counter()
    cal = calibration_pairs(model, cfg, x_train, calibration_samples, seed)
    seconds = {"calibration": round(time.perf_counter() - t0, 1)}
    t0 = time.perf_counter()
    tfl = _convert(model, src_path, cfg, cal, fresh_process)
    seconds["conversion"] = round(time.perf_counter() - t0, 1)
    step = _checked_step(tfl, cfg)
    iq = _input_quant(b, step)
    section = _section(b, cfg, source, step, iq, cal, seed, fresh_process)
    arena_info = _arena(b, step, arena)
    if arena_info is not None:
        section["tflm_arena"] = arena_info
    ptq = None
    if source == QAT_MODEL:
        t0 = time.perf_counter()
        ptq = _ptq_step(b, cfg, x_train, calibration_samples, seed, fresh_process)
        section["ptq"] = ptq[1]
        seconds["ptq_conversion"] = round(time.perf_counter() - t0, 1)
    window = None
    if window_model:
        window = _window(model, cfg, int(b.manifest["preprocess"]["window"]), x_train, seed)
        section["window"] = window[1]
    t0 = time.perf_counter()
    thresholds = _int8_threshold(b, cfg, section["step"], iq, tfl, arrays)
    if thresholds is not None:
        seconds["int8_threshold"] = round(time.perf_counter() - t0, 1)
    seconds["total"] = round(time.perf_counter() - t_start, 1)
    report = _report(section, arena_info, window, seconds)
    if thresholds is not None:
        report["thresholds"] = thresholds
    config = {
        "command": "int8",
        "source_model": source,
        "calibration_samples": calibration_samples,
        "seed": seed,
        "window_model": window_model,
        "state": "unit",
    }
    _write(bundle_dir, b, config, step, window, section, iq, report, thresholds, ptq)
    arena_txt = f", {ARENA_LABEL} {arena_info['bytes']} B" if arena_info else ""
    print(
        f"[quantize] int8: wrote {STEP_FILE}: {step.summary['n_ops']} ops, "
        f"{step.summary['size_bytes']} B{arena_txt}; x scale {step.s_in:.6g} zero point {step.zp}"
    )
    return section


def _convert(
    model: Any, model_path: Path, cfg: Any, cal: dict[str, np.ndarray], fresh_process: bool
) -> bytes:
    """The step model's int8 bytes, converted in a fresh process or in this one."""
    if fresh_process:
        return convert_in_subprocess(model_path, cfg, cal)
    return convert_step(build_step_model(model, cfg), cal, state="unit")


def _ptq_step(
    b: Bundle, cfg: Any, x_train: np.ndarray, samples: int, seed: int, fresh_process: bool
) -> tuple[bytes, dict[str, Any]]:
    """The pre-QAT model converted as the QAT one is: its bytes and ``quantization.ptq``."""
    pre = pre_qat_model(b)
    print(f"[quantize] int8: also converting {pre} (the PTQ step, for comparison)")
    model = load_keras(b, pre)
    cal = calibration_pairs(model, cfg, x_train, samples, seed)
    step = _checked_step(_convert(model, b.path(pre), cfg, cal, fresh_process), cfg)
    return step.tflite, {
        "file": PTQ_FILE,
        "source_model": {"file": pre, "sha256": b.artifacts[pre]["sha256"]},
        "step": {**_step_section(step, cfg), "file": PTQ_FILE},
        "purpose": "the step the int8 stage writes without QAT; the parity stage compares it "
        "with the QAT step; not deployed",
    }


def _checked_step(tfl: bytes, cfg: Any) -> _Step:
    """Purity, the unit state and a per-tensor ``x`` input whose zero point is a normalized 0.0."""
    try:
        summary = check_purity(tfl, STEP_OPS)
    except PurityError as e:
        raise StageError(f"{STEP_FILE}: not pure int8: {e}") from None
    info = step_info(tfl, cfg)
    _check_unit_state(info, cfg)
    xin = info["inputs"]["x"]
    if not isinstance(xin["scale"], float) or not isinstance(xin["zero_point"], int):
        raise StageError(f"{STEP_FILE}: input x must be quantized per tensor, found {xin}")
    s_in, zp = float(xin["scale"]), int(xin["zero_point"])
    # The ring buffer's fill: a normalized 0.0, quantized as TFLite does.
    fill = int(contract.quantize(np.zeros(1), s_in, zp)[0])
    if fill != zp:
        raise StageError(
            f"{STEP_FILE}: normalized 0.0 quantizes to {fill}, not the zero point {zp}"
        )
    return _Step(tfl, summary, info, s_in, zp)


def _check_unit_state(info: dict[str, Any], cfg: Any) -> None:
    for a, o in zip(*state_names(cfg), strict=True):
        for kind, name in (("inputs", a), ("outputs", o)):
            d = info[kind][name]
            if d["scale"] != UNIT_SCALE or d["zero_point"] != 0:
                raise StageError(
                    f"{STEP_FILE}: {name} has scale {d['scale']} zero point {d['zero_point']}, "
                    "expected 1/128 and 0 (state='unit')"
                )


def _input_quant(b: Bundle, step: _Step) -> InputQuant:
    """The device input contract: int16 counts → the int8 ``x`` input."""
    pre = b.manifest["preprocess"]
    try:
        return InputQuant.derive(channel_scales(b), pre["mean"], pre["std"], step.s_in, step.zp)
    except ValueError as e:
        raise StageError(f"{b.root / 'manifest.json'}: preprocess.input_quant: {e}") from None


def _input_contract(b: Bundle, cfg: Any, iq: InputQuant, s_in: float, zp: int) -> dict[str, Any]:
    """How the integer input formula compares with quantizing the float model's input.

    On the reference data: the int8 step inputs from int16 counts (the device
    contract) against ``quantize(step_inputs(x_float))`` (float normalization,
    then TFLite's quantization). They can differ only where the exact value sits
    within ~2^-16 steps of a rounding boundary, or where float32 normalization
    rounds across one.
    """
    ref = b.load_npz(contract.REFERENCE)
    counts = ref["x_counts"] if b.task == "classification" else ref["series_counts"][None]
    pre = b.manifest["preprocess"]
    u = normalize(counts, channel_scales(b), pre["mean"], pre["std"])
    via_counts = int8_step_inputs(cfg, quantize_counts(counts, iq), zp)
    via_float = contract.quantize(step_inputs(cfg, u), s_in, zp)
    diff = np.abs(via_counts.astype(np.int16) - via_float.astype(np.int16))
    return {
        "values": int(diff.size),
        "differ": int(np.count_nonzero(diff)),
        "max_diff_steps": int(diff.max()) if diff.size else 0,
        "clipped_fraction": float(
            np.mean((via_counts == -128) | (via_counts == 127)) if via_counts.size else 0.0
        ),
        "compared": "integer formula on int16 counts vs TFLite quantization of the float "
        "normalized input, every step input of reference.npz",
    }


def _arena(b: Bundle, step: _Step, measure: bool) -> dict[str, Any] | None:
    """The smallest host TFLM arena: measured, or kept from the manifest when the
    bundle already holds exactly these step-model bytes."""
    if measure:
        print("[quantize] int8: measuring the smallest TFLM arena")
        return smallest_arena(step.tflite, len(step.info["inputs"]))
    if _same_step(b, step.tflite):
        return b.manifest.get("quantization", {}).get("tflm_arena")
    return None


def _window(
    model: Any, cfg: Any, T: int, x_train: np.ndarray, seed: int
) -> tuple[bytes, dict[str, Any]]:
    """The unrolled window model over ``T`` samples, checked pure int8, and its manifest entry."""
    print("[quantize] int8: converting the unrolled window model")
    if os.environ.get("PYTHONHASHSEED") != "0":
        print(
            "[quantize] warning: PYTHONHASHSEED is not 0: window_int8.tflite may not be "
            "reproducible",
            file=sys.stderr,
        )
    t0 = time.perf_counter()
    tfl = convert_window(model, cfg, T, x_train, seed=seed)
    try:
        summary = check_purity(tfl, WINDOW_OPS)
    except PurityError as e:
        raise StageError(f"{WINDOW_FILE}: not pure int8: {e}") from None
    return tfl, {
        "file": WINDOW_FILE,
        "size_bytes": summary["size_bytes"],
        "n_ops": summary["n_ops"],
        "n_tensors": summary["n_tensors"],
        "op_counts": summary["op_counts"],
        "window": T,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def _io_entry(d: dict[str, Any]) -> dict[str, Any]:
    keys = ("scale", "zero_point", "shape", "dtype", "position", "tensor_name")
    return {k: d[k] for k in keys}


def _step_section(step: _Step, cfg: Any) -> dict[str, Any]:
    """The manifest's ``quantization.step``: graph, named inputs and outputs, state, ring buffer."""
    s, info = step.summary, step.info
    h_in, h_out = state_names(cfg)
    return {
        "file": STEP_FILE,
        **{k: s[k] for k in ("ops", "n_ops", "op_counts", "n_tensors", "size_bytes")},
        "weights_bytes": s["weights_bytes"],
        "inputs": {k: _io_entry(v) for k, v in info["inputs"].items()},
        "outputs": {k: _io_entry(v) for k, v in info["outputs"].items()},
        "state": {
            "mode": "unit",
            "names": [[a, o] for a, o in zip(h_in, h_out, strict=True)],
            "scale": UNIT_SCALE,
            "zero_point": 0,
            "equal": info["state_equal"],
            "handling": "every hN_in and hN_out is int8 with scale 1/128 and zero point 0; "
            "the device copies the hN_out bytes into hN_in between steps; the zero state "
            "is all 0",
        },
        "ring_buffer": {
            "samples": cfg.front_end_kernel,
            "stride": cfg.front_end_stride,
            "fill": step.zp,
            "fill_meaning": "the x zero point = a normalized 0.0 (the float model's causal "
            "zero padding); not the quantized count 0",
        },
    }


def _section(
    b: Bundle,
    cfg: Any,
    source: str,
    step: _Step,
    iq: InputQuant,
    cal: dict[str, np.ndarray],
    seed: int,
    fresh_process: bool,
) -> dict[str, Any]:
    """The manifest's ``quantization`` section, without ``tflm_arena`` and ``window``."""
    return {
        "source_model": {"file": source, "sha256": b.artifacts[source]["sha256"]},
        "step": _step_section(step, cfg),
        "calibration": _calibration_section(cal, seed),
        "conversion": _conversion_section(fresh_process),
        "input_contract": _input_contract(b, cfg, iq, step.s_in, step.zp),
    }


def _calibration_section(cal: dict[str, np.ndarray], seed: int) -> dict[str, Any]:
    return {
        "pairs": int(len(cal["x"])),
        "seed": seed,
        "from": "training windows drawn at random (seeded), each run as a float step "
        "chain from a zero state; (x_t, h_{t-1}) pairs drawn at random from those steps",
        "x_range": [float(cal["x"].min()), float(cal["x"].max())],
    }


def _conversion_section(fresh_process: bool) -> dict[str, Any]:
    return {
        "state": "unit",
        "saturated": "cap: the ranges feeding LOGISTIC and TANH are narrowed to where the "
        "int8 output saturates (|x| = ln 511 for the sigmoid, atanh(1 - 1/256) for tanh; "
        "an addend by that bound plus the other addend's largest magnitude)",
        "process": "fresh Python process, PYTHONHASHSEED=0 (python -m quantize.convert step)"
        if fresh_process
        else "in process (not guaranteed reproducible)",
    }


def _report(
    section: dict[str, Any],
    arena_info: dict[str, Any] | None,
    window: tuple[bytes, dict[str, Any]] | None,
    seconds: dict[str, float],
) -> dict[str, Any]:
    """``reports/quantize.json`` (with ``ptq`` only when there is a PTQ step beside a QAT one)."""
    report = {
        "source_model": section["source_model"]["file"],
        "step": dict(section["step"]),
        "calibration": section["calibration"],
        "input_contract": section["input_contract"],
        "tflm_arena": arena_info,
        "window": window[1] if window else None,
        "seconds": seconds,
    }
    if "ptq" in section:
        report["ptq"] = section["ptq"]
    return report


def _write(
    bundle_dir: str | os.PathLike[str],
    b: Bundle,
    config: dict[str, Any],
    step: _Step,
    window: tuple[bytes, dict[str, Any]] | None,
    section: dict[str, Any],
    iq: InputQuant,
    report: dict[str, Any],
    thresholds: dict[str, Any] | None = None,
    ptq: tuple[bytes, dict[str, Any]] | None = None,
) -> None:
    """Write the stage's files; a parity report made on other step-model bytes goes."""
    stale_parity = _stale_parity(b, step.tflite)
    with stage_writer(bundle_dir, "quantize", config=config) as w:
        import keras
        import tensorflow as tf

        w.versions.update({"tensorflow": tf.__version__, "keras": keras.__version__})
        w.write_bytes(STEP_FILE, step.tflite)
        if window is not None:
            w.write_bytes(WINDOW_FILE, window[0])
        elif w.manifest["artifacts"].get(WINDOW_FILE):
            w.remove(WINDOW_FILE)
        if ptq is not None:
            w.write_bytes(PTQ_FILE, ptq[0])
        elif w.manifest["artifacts"].get(PTQ_FILE):
            w.remove(PTQ_FILE)
        w.manifest["quantization"] = section
        w.manifest["preprocess"]["input_quant"] = iq.to_dict()
        if thresholds is not None:
            w.manifest.setdefault("thresholds", {}).update(thresholds)
        if stale_parity:
            for name in PARITY_FILES:
                w.remove(name)
            w.manifest.get("thresholds", {}).pop("device", None)
            w.manifest.get("metrics", {}).pop("parity", None)
        w.write_json("reports/quantize.json", report)


def _int8_threshold(
    b: Bundle, cfg: Any, step: dict[str, Any], iq: InputQuant, tfl: bytes, d: Any
) -> dict[str, Any] | None:
    """A forecaster's threshold from the int8 chain's own scores: the largest score on
    the anomaly-free validation tails (each training series streamed from a zero state,
    as a device would), on every host int8 backend, times the config's factor.

    The float threshold is the float model's; the int8 chain forecasts a little worse,
    so at the float threshold it raises more alarms. This one is what the device's
    arithmetic scores on data known to be normal, found the same way as the float one.
    """
    if b.task != "forecast" or not d.series:
        return None
    from edge_runtime import anomaly
    from edge_runtime.parity_entry import dequantize
    from quantize.chains import BACKENDS, run_chains

    m = b.manifest
    scale = channel_scales(b)
    mean, std = np.asarray(m["preprocess"]["mean"]), np.asarray(m["preprocess"]["std"])
    fill = int(step["ring_buffer"]["fill"])
    per = dict.fromkeys(BACKENDS, 0.0)
    for counts, n_fit in zip(d.series, d.n_fit, strict=True):
        xs = int8_step_inputs(cfg, quantize_counts(counts[None], iq), fill)
        chains = run_chains(tfl, step, xs, BACKENDS, progress=False)["chains"]
        for name in BACKENDS:
            f = dequantize(chains[name][contract.Y][0], step["outputs"]["y"]) * std + mean
            s = anomaly.forecast_scores(counts * scale, f)
            per[name] = max(per[name], float(s[n_fit:].max()))
    factor = float(m["stages"]["train"]["config"].get("threshold", {}).get("factor", 1.0))
    return {
        "anomaly_score_int8": factor * max(per.values()),
        "anomaly_score_int8_derivation": {
            "val_max": per,
            "factor": factor,
            "rule": "factor x the largest int8 score on the anomaly-free validation tails "
            "over the host int8 backends (LiteRT built-in, XNNPACK, TFLM = the C engine); "
            "used by every int8 row, the device check, the firmware and the Pi runtime",
        },
    }


def _same_step(b: Bundle, tfl: bytes) -> bool:
    """Whether the bundle already holds exactly these step-model bytes."""
    entry = b.artifacts.get(STEP_FILE)
    return entry is not None and entry["sha256"] == hashlib.sha256(tfl).hexdigest()


def _stale_parity(b: Bundle, tfl: bytes) -> bool:
    """Whether the bundle's parity report was made on other step-model bytes than ``tfl``."""
    if not b.has("reports/parity.json"):
        return False
    try:
        rep = b.read_json("reports/parity.json")
    except BundleError:
        return True
    return rep.get("step_sha256") != hashlib.sha256(tfl).hexdigest()
