"""Host parity of the int8 step model: ``python -m quantize check --bundle B``.

Every backend runs the step chain on the reference data of ``reference.npz``:
classification from a zero state per window (the window's prediction is the
head output of the last step), forecast over the whole test series with one
state, as the train stage streamed it.

Backends (one entry each in ``reports/parity.json``, same keys):

- ``float``: the float step model (Keras) of the model that was converted
  (``model_pruned.keras`` when the bundle has one). When that is
  ``model_float.keras`` its chain is checked against ``reference.npz`` (the
  window model's outputs) within :data:`FLOAT_TOL`; otherwise the same check
  runs on ``model_float.keras``, reported as ``float_unpruned``.
- ``litert``: ai-edge-litert with its built-in kernels
  (``OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES``).
- ``litert_xnnpack``: ai-edge-litert as it runs by default (XNNPACK delegate).
- ``tflm``: the TFLM kernels through ``tflite_micro``.

The int8 ``x`` comes from the int16 counts through
:func:`edge_runtime.preprocess.quantize_counts` with the manifest's
``preprocess.input_quant`` (the device input contract), never from the float
input; the ring buffer before the first sample holds the ``x`` zero point.

``reports/parity.json`` (``schema`` 1)::

    {"schema": 1, "task": ..., "step_sha256": ..., "reference": {...},
     "backends": {name: {same keys for every backend}},
     "litert_vs_tflm": {"single_step": {...}, "chain": {...}},
     "litert_xnnpack_vs_tflm": {...same...},
     "sizes": {...}, "thresholds": {...}, "timing": {...}}

Entry keys (classification and forecast): see :mod:`edge_runtime.parity_entry`,
which builds them; the parity keys compare with the ``float`` backend.

The float backend's outputs (classifier probabilities of each window's last
step, or the forecast of every step in sensor units) go to ``float_outputs.npz``
(``y``, float64), the float reference of the entries later stages report for
their own backends (the C engine, the emulated Cortex-M, the edge runtime). A
``limit`` run leaves it out.

``single_step`` feeds TFLM's own step inputs (x, h_in) of every step to the
other interpreter and counts differing int8 output values; ``chain`` compares
the two interpreters' own chains: every int8 output of every step, the final
outputs, and (classification) the windows whose argmax differs.

The manifest gets ``thresholds.device`` for device checks, derived from the
TFLM figures (see :func:`device_thresholds`).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime import contract
from edge_runtime.bundle import Bundle, stage_writer
from edge_runtime.interpreter import StepInterpreter
from edge_runtime.parity_entry import (
    FLOAT_OUTPUTS,
    classification_entry,
    dequantize,
    forecast_entry,
)
from edge_runtime.preprocess import InputQuant, normalize, quantize_counts
from quantize.stage import (
    FLOAT_FILE,
    STEP_FILE,
    WINDOW_FILE,
    StageError,
    channel_scales,
    int8_step_inputs,
    load_keras,
    model_config,
    open_bundle,
    source_model,
)

SCHEMA = 1
# Float step chain vs the window model's outputs in reference.npz: the same float32
# arithmetic in another order; classification probabilities agree to ~1e-7.
FLOAT_TOL = 1e-5
# The forecaster's chain runs over the whole test series (7,501 steps for KDD-TSAD 135);
# compared in normalized units.
FLOAT_TOL_SERIES = 1e-4
BACKENDS = ("litert", "litert_xnnpack", "tflm")
DESCRIPTIONS = {
    "float": "float Keras step chain of the converted model",
    "float_unpruned": "float Keras step chain of model_float.keras (before pruning)",
    "litert": "ai-edge-litert, built-in kernels (BUILTIN_WITHOUT_DEFAULT_DELEGATES)",
    "litert_xnnpack": "ai-edge-litert, default resolver (XNNPACK delegate)",
    "tflm": "TFLM kernels on the host (tflite_micro)",
}


# --------------------------------------------------------------------------- interpreters


class _Bar:
    """A tqdm bar over windows, or over steps when there is one long series."""

    def __init__(self, n_windows: int, n_steps: int, desc: str, enabled: bool) -> None:
        from tqdm import tqdm

        self.per_step = n_windows == 1
        total = n_steps if self.per_step else n_windows
        unit = "step" if self.per_step else "window"
        self.bar = tqdm(total=total, desc=desc, unit=unit, disable=not enabled, mininterval=0.5)

    def step(self) -> None:
        if self.per_step:
            self.bar.update(1)

    def window(self) -> None:
        if not self.per_step:
            self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def run_chains(
    tflite_bytes: bytes,
    step: dict[str, Any],
    xs: np.ndarray,
    backends: tuple[str, ...] = BACKENDS,
    *,
    progress: bool = True,
) -> dict[str, Any]:
    """Run every backend's int8 chain over step inputs ``xs (N, S, k·C)``, zero state per series.

    ``step`` is the manifest's ``quantization.step``. Also runs every non-TFLM backend
    on TFLM's own inputs of every step (``cross``). Returns ``{"chains": {backend:
    {out_name: (N, S, width)}}, "cross": {backend: {...}}, "seconds": {...},
    "us_per_step": {...}}``.
    """
    xs = np.ascontiguousarray(xs, np.int8)
    n, s, _ = xs.shape
    runners = {b: StepInterpreter(tflite_bytes, step, backend=b) for b in backends}
    first = runners[backends[0]]
    names = [*first.state_out, contract.Y]

    def empty() -> dict[str, np.ndarray]:
        return {nm: np.empty((n, s, first.outputs[nm].width), np.int8) for nm in names}

    def record(rec: dict[str, np.ndarray], w: int, j: int, states: list, y: np.ndarray) -> None:
        for nm, v in zip(first.state_out, states, strict=True):
            rec[nm][w, j] = v.reshape(-1)
        rec[contract.Y][w, j] = y.reshape(-1)

    chains = {b: empty() for b in backends}
    cross_names = [b for b in backends if b != "tflm"] if "tflm" in backends else []
    cross = {b: empty() for b in cross_names}
    seconds = dict.fromkeys([*backends, *(f"{b}_on_tflm_inputs" for b in cross_names)], 0.0)
    bar = _Bar(n, s, "parity " + "+".join(backends), progress)
    for w in range(n):
        for b, r in runners.items():
            t0 = time.perf_counter()
            states = r.zero_states()
            for j in range(s):
                record(chains[b], w, j, states, r.step(xs[w, j : j + 1], states))
                if b == backends[-1]:
                    bar.step()
            seconds[b] += time.perf_counter() - t0
        for b in cross_names:
            t0 = time.perf_counter()
            r, tflm = runners[b], chains["tflm"]
            for j in range(s):
                states = r.zero_states() if j == 0 else [
                    tflm[nm][w, j - 1 : j].copy() for nm in r.state_out]  # fmt: skip
                record(cross[b], w, j, states, r.step(xs[w, j : j + 1], states))
            seconds[f"{b}_on_tflm_inputs"] += time.perf_counter() - t0
        bar.window()
    bar.close()
    for r in runners.values():
        r.close()
    steps = max(1, n * s)
    return {
        "chains": chains,
        "cross": cross,
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
        "us_per_step": {k: round(v / steps * 1e6, 1) for k, v in seconds.items()},
    }


# --------------------------------------------------------------------------- float chain


def float_chain(model: Any, cfg: Any, series: np.ndarray) -> np.ndarray:
    """Head output of every step of the float step model over ``(N, T, C)``: ``(N, S, n_out)``."""
    import tensorflow as tf

    from quantize.step_model import build_step_model, state_names, step_inputs

    step = build_step_model(model, cfg, batch_size=None)
    fn = tf.function(lambda feed: step(feed, training=False), reduce_retracing=True)
    xs = step_inputs(cfg, np.asarray(series, np.float32))
    h_in, h_out = state_names(cfg)
    n = xs.shape[0]
    state = {a: tf.zeros((n, u), tf.float32) for a, u in zip(h_in, cfg.gru_units, strict=True)}
    ys = []
    for j in range(xs.shape[1]):
        out = fn({"x": tf.constant(xs[:, j]), **state})
        ys.append(out["y"])
        state = {a: out[o] for a, o in zip(h_in, h_out, strict=True)}
    return np.stack([np.asarray(y) for y in ys], axis=1)


# --------------------------------------------------------------------------- metrics


def compare_int8(
    a: dict[str, np.ndarray], b: dict[str, np.ndarray], y_name: str = "y", classify: bool = True
) -> dict[str, Any]:
    """Differences between two sets of int8 outputs ``{name: (N, S, width)}``, in int8 steps."""
    by_output = {}
    total = differ = 0
    max_diff = 0
    steps_differ = None
    for nm in a:
        d = np.abs(a[nm].astype(np.int16) - b[nm].astype(np.int16))
        cnt = int(np.count_nonzero(d))
        m = int(d.max()) if d.size else 0
        by_output[nm] = {"values": int(d.size), "differ": cnt, "max_diff_steps": m}
        total += d.size
        differ += cnt
        max_diff = max(max_diff, m)
        step_any = np.any(d > 0, axis=-1)
        steps_differ = step_any if steps_differ is None else steps_differ | step_any
    fa, fb = a[y_name][:, -1], b[y_name][:, -1]
    final = np.abs(fa.astype(np.int16) - fb.astype(np.int16))
    out: dict[str, Any] = {
        "steps": int(a[y_name].shape[0] * a[y_name].shape[1]),
        "values": int(total),
        "values_differ": int(differ),
        "fraction_values_differ": float(differ / total) if total else 0.0,
        "max_diff_steps": max_diff,
        "steps_with_difference": int(steps_differ.sum()) if steps_differ is not None else 0,
        "final_output_values_differ": int(np.count_nonzero(final)),
        "final_output_max_diff_steps": int(final.max()) if final.size else 0,
        "windows": int(fa.shape[0]),
        "windows_argmax_differ": None,
        "fraction_windows_argmax_differ": None,
        "by_output": by_output,
    }
    if classify:
        flips = int(np.count_nonzero(np.argmax(fa, axis=-1) != np.argmax(fb, axis=-1)))
        out["windows_argmax_differ"] = flips
        out["fraction_windows_argmax_differ"] = float(flips / fa.shape[0])
    return out


INT8_BACKENDS = ("litert", "litert_xnnpack", "tflm")


def device_thresholds(task: str, backends: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Pass marks for device checks, from the host int8 figures on the reference data.

    A device runs either the C engine (TFLM's arithmetic exactly) or LiteRT (a Pi),
    whose int8 chains differ slightly, so each mark starts from the WORST of the
    int8 backends measured here, then allows a margin.
    """
    int8 = [backends[b] for b in INT8_BACKENDS if b in backends]
    worst = {
        key: (max if key == "false_alarms" else min)(b[key] for b in int8)
        for key in (
            "accuracy",
            "argmax_agreement_vs_reference",
            "hit",
            "point_auc",
            "margin",
            "false_alarms",
        )
        if all(b.get(key) is not None for b in int8)
    }
    measured = {f"{name}_{key}": b.get(key) for name in INT8_BACKENDS if name in backends
                for b in [backends[name]] for key in worst}  # fmt: skip
    if task == "classification":
        return {
            "min_accuracy": round(worst["accuracy"] - 0.01, 6),
            "min_argmax_agreement": round(worst["argmax_agreement_vs_reference"] - 0.005, 6),
            "measured": {**measured, "windows": backends["tflm"]["n"]},
            "derivation": "quantize check on reference.npz: min_accuracy = lowest host int8 "
            "accuracy (LiteRT built-in, LiteRT XNNPACK, TFLM) - 1 point; min_argmax_agreement = "
            "lowest host int8 argmax agreement with reference.npz's float outputs (what a device "
            "check compares with) - 0.5 point",
        }
    return {
        "require_hit": bool(worst["hit"]),
        "min_point_auc": round(worst["point_auc"] - 0.01, 6),
        "min_margin": round(0.9 * worst["margin"], 6),
        "max_false_alarms": worst["false_alarms"],
        "measured": measured,
        "derivation": "quantize check on the reference test series, over the host int8 "
        "backends (LiteRT built-in, LiteRT XNNPACK, TFLM): require_hit = every one hit; "
        "min_point_auc = lowest point AUC - 0.01; min_margin = 0.9 x lowest margin; "
        "max_false_alarms = most false alarms at thresholds.anomaly_score",
    }


# --------------------------------------------------------------------------- the stage


def _check_fresh(b: Bundle) -> dict[str, Any]:
    m = b.manifest
    q = m.get("quantization")
    if not q or not b.has(STEP_FILE):
        raise StageError(f"{b.root}: no {STEP_FILE} in the bundle: run `python -m quantize int8`")
    if "input_quant" not in m["preprocess"]:
        raise StageError(
            f"{b.root / 'manifest.json'}: no preprocess.input_quant: run `python -m quantize int8`"
        )
    src = q.get("source_model") or {}
    want = source_model(b)
    if (
        "step" not in q
        or src.get("file") != want
        or b.artifacts[want]["sha256"] != src.get("sha256")
    ):
        raise StageError(
            f"{b.root / STEP_FILE}: converted from {src.get('file')} "
            f"(sha256 {str(src.get('sha256'))[:12]}…), "
            f"but the bundle's model is now {want}: rerun `python -m quantize int8`"
        )
    return q


def _entry_common(name: str, model_file: str, model_bytes: int) -> dict[str, Any]:
    return {"description": DESCRIPTIONS[name], "model_file": model_file, "model_bytes": model_bytes}


def check(
    bundle_dir: str | os.PathLike[str],
    *,
    progress: bool = True,
    limit: int | None = None,
) -> dict[str, Any]:
    """Run the parity check; writes ``reports/parity.json``, ``.md`` and ``thresholds.device``.

    ``limit`` runs the first ``limit`` reference windows only (a quick look; the
    thresholds are then not written).
    """
    t_start = time.perf_counter()
    b = open_bundle(bundle_dir)
    m = b.manifest
    q = _check_fresh(b)
    cfg = model_config(b)
    tfl = b.read_bytes(STEP_FILE)
    step_sha = hashlib.sha256(tfl).hexdigest()
    ref = b.load_npz(contract.REFERENCE)
    iq = InputQuant.from_dict(m["preprocess"]["input_quant"])
    step = q["step"]
    xin, yout = step["inputs"]["x"], step["outputs"]["y"]
    if (xin["scale"], xin["zero_point"]) != (iq.scale, iq.zero_point):
        raise StageError(
            f"{b.root / 'manifest.json'}: preprocess.input_quant (scale {iq.scale}, zero point "
            f"{iq.zero_point}) does not match {STEP_FILE}'s x input ({xin['scale']}, "
            f"{xin['zero_point']}): rerun `python -m quantize int8`"
        )
    source = q["source_model"]["file"]
    scale_c = channel_scales(b)
    mean, std = np.asarray(m["preprocess"]["mean"]), np.asarray(m["preprocess"]["std"])
    task = b.task
    fill = int(step["ring_buffer"]["fill"])
    print(f"[quantize] check: {b.root} ({task}), {STEP_FILE} from {source}")

    if task == "classification":
        counts = ref["x_counts"]
        y_true = ref["y"].astype(np.int64)
        ref_out = ref["probs"].astype(np.float64)
        if limit:
            counts, y_true, ref_out = counts[:limit], y_true[:limit], ref_out[:limit]
        u = normalize(counts, scale_c, mean, std)
        if "x_float" in ref and not limit:
            if not np.array_equal(u, ref["x_float"]):
                raise StageError(
                    f"{b.root / 'reference.npz'}: x_float is not the normalized x_counts"
                )
    else:
        counts = ref["series_counts"][None]
        u = normalize(counts, scale_c, mean, std)
        ref_out = ref["forecast"].astype(np.float64)

    timing: dict[str, Any] = {}
    t0 = time.perf_counter()
    model = load_keras(b, source)
    y_float_steps = float_chain(model, cfg, u)
    timing["float_chain_seconds"] = round(time.perf_counter() - t0, 1)

    def float_check(y_steps: np.ndarray, what: str) -> float:
        if task == "classification":
            diff = float(np.max(np.abs(y_steps[:, -1] - ref_out)))
            tol = FLOAT_TOL
        else:
            ref_norm = (ref_out - mean) / std
            diff = float(np.max(np.abs(y_steps[0] - ref_norm)))
            tol = FLOAT_TOL_SERIES
        if diff > tol:
            raise StageError(
                f"{b.root / 'reference.npz'}: the float step chain of {what} differs from the "
                f"window model's outputs by {diff:.3g} (> {tol:g}): the step model does not "
                "reproduce the trained model"
            )
        return diff

    reference_info: dict[str, Any] = {"tolerance": FLOAT_TOL if task == "classification" else None}
    if task != "classification":
        reference_info["tolerance"] = FLOAT_TOL_SERIES
    entries_float: dict[str, np.ndarray] = {}
    if source == FLOAT_FILE:
        reference_info["float_step_vs_reference_max_abs"] = float_check(y_float_steps, FLOAT_FILE)
    else:
        dense = load_keras(b, FLOAT_FILE)
        y_dense = float_chain(dense, cfg, u)
        reference_info["float_step_vs_reference_max_abs"] = float_check(y_dense, FLOAT_FILE)
        entries_float["float_unpruned"] = y_dense

    # int8 inputs: the device contract, from int16 counts.
    xq = quantize_counts(counts, iq)
    xs = int8_step_inputs(cfg, xq, fill)
    chains = run_chains(tfl, step, xs, BACKENDS, progress=progress)
    timing["int8"] = {"seconds": chains["seconds"], "us_per_step": chains["us_per_step"]}

    labels = list(m["labels"])
    art = b.artifacts
    backends: dict[str, Any] = {}
    if task == "classification":
        ref_float = y_float_steps[:, -1].astype(np.float64)
        float_outputs = ref_float
        backends["float"] = {
            **_entry_common("float", source, art[source]["bytes"]),
            **classification_entry(ref_float, ref_float, y_true, labels),
        }
        for name, ys in entries_float.items():
            backends[name] = {
                **_entry_common(name, FLOAT_FILE, art[FLOAT_FILE]["bytes"]),
                **classification_entry(ys[:, -1].astype(np.float64), ref_float, y_true, labels),
            }
        outputs = {"float": ref_float, **{n: ys[:, -1] for n, ys in entries_float.items()}}
        for name in BACKENDS:
            probs = dequantize(chains["chains"][name]["y"][:, -1], yout)
            outputs[name] = probs
            backends[name] = {
                **_entry_common(name, STEP_FILE, art[STEP_FILE]["bytes"]),
                **classification_entry(probs, ref_float, y_true, labels),
            }
        # What a device check compares with (it has no Keras): reference.npz's float
        # window-model outputs, which are the UNPRUNED model's when pruning ran.
        ref_arg = ref_out.argmax(axis=1)
        for name, out in outputs.items():
            agree = float(np.mean(np.asarray(out).argmax(axis=1) == ref_arg))
            backends[name]["argmax_agreement_vs_reference"] = agree
    else:
        x_phys = counts[0].astype(np.float64) * scale_c
        lab = ref["labels"].astype(np.int64)
        zone = int(m["stages"]["train"]["config"]["data"].get("zone", 100))
        threshold = m.get("thresholds", {}).get("anomaly_score")

        def to_sensor(y_norm: np.ndarray) -> np.ndarray:
            return y_norm * std + mean

        f_float = to_sensor(y_float_steps[0].astype(np.float64))
        float_outputs = f_float
        warmup = int(m.get("thresholds", {}).get("anomaly_warmup_samples", 0))
        kw = {"zone": zone, "threshold": threshold, "warmup": warmup}
        backends["float"] = {
            **_entry_common("float", source, art[source]["bytes"]),
            **forecast_entry(f_float, f_float, x_phys, lab, **kw),
        }
        for name, ys in entries_float.items():
            f = to_sensor(ys[0].astype(np.float64))
            backends[name] = {
                **_entry_common(name, FLOAT_FILE, art[FLOAT_FILE]["bytes"]),
                **forecast_entry(f, f_float, x_phys, lab, **kw),
            }
        for name in BACKENDS:
            f = to_sensor(dequantize(chains["chains"][name]["y"][0], yout))
            backends[name] = {
                **_entry_common(name, STEP_FILE, art[STEP_FILE]["bytes"]),
                **forecast_entry(f, f_float, x_phys, lab, **kw),
            }

    classify = task == "classification"
    tflm = chains["chains"]["tflm"]
    vs: dict[str, Any] = {}
    for name in ("litert", "litert_xnnpack"):
        vs[f"{name}_vs_tflm"] = {
            "single_step": compare_int8(chains["cross"][name], tflm, classify=classify),
            "chain": compare_int8(chains["chains"][name], tflm, classify=classify),
        }
    vs["litert_vs_tflm"]["single_step"]["note"] = (
        "LiteRT run on TFLM's own inputs (x, h_in) of every step; differences in int8 steps"
    )

    sizes: dict[str, Any] = {
        STEP_FILE: art[STEP_FILE]["bytes"],
        f"{STEP_FILE}.gz": len(gzip.compress(tfl, 9, mtime=0)),
        "step_weights_bytes": step.get("weights_bytes"),
        "step_ops": step["n_ops"],
        "step_tensors": step["n_tensors"],
        WINDOW_FILE: art.get(WINDOW_FILE, {}).get("bytes"),
        "model_float.keras": art[FLOAT_FILE]["bytes"],
        "model_pruned.keras": art.get(contract.PRUNED_MODEL, {}).get("bytes"),
        "tflm_arena": q.get("tflm_arena"),
    }

    thresholds = None if limit else device_thresholds(task, backends)
    timing["total_seconds"] = round(time.perf_counter() - t_start, 1)
    report = {
        "schema": SCHEMA,
        "task": task,
        "step_sha256": step_sha,
        "source_model": source,
        "reference": {
            **reference_info,
            "series": int(xs.shape[0]),
            "steps_per_series": int(xs.shape[1]),
            "limit": limit,
            "input": "int8 x from int16 counts via edge_runtime.preprocess.quantize_counts "
            f"(manifest preprocess.input_quant); ring buffer filled with the x zero point {fill}",
        },
        "backends": backends,
        **vs,
        "sizes": sizes,
        "thresholds": thresholds,
        "timing": timing,
    }
    md = render_markdown(report, m.get("name", b.root.name), labels)
    config = {"command": "check", "backends": ["float", *BACKENDS], "limit": limit}
    with stage_writer(bundle_dir, "parity", config=config) as w:
        import ai_edge_litert
        import tensorflow as tf

        w.versions.update(
            {
                "tensorflow": tf.__version__,
                "ai_edge_litert": getattr(ai_edge_litert, "__version__", "unknown"),
                "tflite_micro": _version("tflite-micro"),
            }
        )
        w.write_json("reports/parity.json", report)
        if limit:
            w.remove(FLOAT_OUTPUTS)
        else:
            w.write_npz(FLOAT_OUTPUTS, y=np.ascontiguousarray(float_outputs, np.float64))
        w.write_text("reports/parity.md", md)
        if thresholds is not None:
            w.manifest.setdefault("thresholds", {})["device"] = thresholds
        w.manifest.setdefault("metrics", {})["parity"] = {
            name: _headline(task, e) for name, e in backends.items()
        }
    _print_summary(report)
    return report


def _version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


def _headline(task: str, e: dict[str, Any]) -> dict[str, Any]:
    keys = (
        ("accuracy", "macro_f1", "argmax_agreement", "max_abs_err")
        if task == "classification"
        else ("hit", "margin", "point_auc", "window_auc", "false_alarms", "max_abs_err")
    )
    return {k: e[k] for k in keys}


def _fmt(v: Any, pct: bool = False) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return f"{100 * v:.2f}%" if pct else f"{v:.4g}"
    return str(v)


def render_markdown(report: dict[str, Any], name: str, labels: list[str]) -> str:
    """The parity report as a Markdown page: one column per backend."""
    be = report["backends"]
    cols = list(be)
    lines = [
        f"# Parity: {name}",
        "",
        f"Task: {report['task']}; {report['reference']['series']} reference series × "
        f"{report['reference']['steps_per_series']} steps; int8 input from int16 counts "
        "(device contract). Parity columns compare with the `float` step chain of "
        f"`{report['source_model']}`.",
        "",
        "| | " + " | ".join(f"`{c}`" for c in cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    if report["task"] == "classification":
        rows = [
            ("accuracy", True),
            ("macro_f1", False),
            ("argmax_agreement", True),
            ("max_abs_err", False),
            ("mean_abs_err", False),
            ("rmse", False),
            ("l2r", False),
            ("cosine", False),
            ("model_bytes", False),
        ]
    else:
        rows = [
            ("hit", False),
            ("peak", False),
            ("margin", False),
            ("point_auc", False),
            ("window_auc", False),
            ("false_alarms", False),
            ("forecast_mae", False),
            ("forecast_max_abs_err", False),
            ("max_abs_err", False),
            ("mean_abs_err", False),
            ("rmse", False),
            ("cosine", False),
            ("model_bytes", False),
        ]
    for key, pct in rows:
        lines.append(f"| {key} | " + " | ".join(_fmt(be[c][key], pct) for c in cols) + " |")
    if report["task"] == "classification":
        lines += ["", "Per-class F1:", "", "| class | " + " | ".join(cols) + " |"]
        lines.append("|---|" + "---|" * len(cols))
        for lab in labels:
            lines.append(
                f"| {lab} | " + " | ".join(_fmt(be[c]["per_class_f1"][lab]) for c in cols) + " |"
            )
    lines += [
        "",
        "## Interpreters (int8 steps)",
        "",
        "| comparison | values differ | max diff | windows with other argmax |",
        "|---|---|---|---|",
    ]
    for key in ("litert_vs_tflm", "litert_xnnpack_vs_tflm"):
        for kind in ("single_step", "chain"):
            c = report[key][kind]
            flips = (
                "–"
                if c["windows_argmax_differ"] is None
                else f"{c['windows_argmax_differ']} of {c['windows']}"
            )
            lines.append(
                f"| {key.replace('_vs_', ' vs ')}, {kind.replace('_', ' ')} | "
                f"{c['values_differ']} of {c['values']} "
                f"({100 * c['fraction_values_differ']:.3f}%) | {c['max_diff_steps']} | {flips} |"
            )
    s = report["sizes"]
    arena = s.get("tflm_arena") or {}
    lines += [
        "",
        "## Sizes",
        "",
        f"- `{STEP_FILE}`: {s[STEP_FILE]} B ({s['step_ops']} ops, {s['step_tensors']} tensors; "
        f"gzip -9: {s[f'{STEP_FILE}.gz']} B)",
        f"- {arena.get('label', 'TFLM arena')}: {arena.get('bytes', '–')} B",
        f"- `{WINDOW_FILE}`: {s[WINDOW_FILE] if s[WINDOW_FILE] is not None else '–'} B",
        f"- `model_float.keras`: {s['model_float.keras']} B",
    ]
    t = report.get("thresholds")
    if t:
        lines += ["", "## Device thresholds", ""]
        lines += [f"- {k}: {_fmt(v)}" for k, v in t.items() if k not in ("measured", "derivation")]
        lines.append(f"- derived: {t['derivation']}")
    return "\n".join(lines) + "\n"


def _print_summary(report: dict[str, Any]) -> None:
    be = report["backends"]
    if report["task"] == "classification":
        parts = [
            f"{n} acc {e['accuracy']:.4f} agree {_fmt(e['argmax_agreement'])}"
            for n, e in be.items()
        ]
    else:
        parts = [
            f"{n} hit={e['hit']} margin {e['margin']:.2f} AUC {e['point_auc']:.3f}"
            for n, e in be.items()
        ]
    c = report["litert_vs_tflm"]
    print("[quantize] check: " + "; ".join(parts))
    flips = c["chain"]["windows_argmax_differ"]
    print(
        f"[quantize] check: LiteRT vs TFLM: single step max diff "
        f"{c['single_step']['max_diff_steps']} step(s), {c['single_step']['values_differ']} "
        f"values differ; chains: {100 * c['chain']['fraction_values_differ']:.3f}% values"
        + (f", {flips} windows change class" if flips is not None else "")
    )


def report_path(bundle_dir: str | os.PathLike[str]) -> Path:
    return Path(bundle_dir) / "reports/parity.json"
