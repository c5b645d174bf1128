"""Host parity of the int8 step model: ``python -m quantize parity --bundle B``.

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

When the converted model is ``model_qat.keras`` (quantization-aware fine-tuning),
the int8 stage also wrote ``step_int8_ptq.tflite``, the pre-QAT model converted
the same way (the step the bundle has without QAT). Then ``float_pre_qat`` is the
float step chain of that model (``model_pruned.keras``, else ``model_float.keras``;
its parity keys compare with ``float``, the QAT model), and ``litert_ptq``,
``litert_xnnpack_ptq`` and ``tflm_ptq`` run the PTQ step on the same counts, each
judged against ``float_pre_qat`` (the float model that step was converted from),
as each QAT row is judged against ``float``. ``qat`` in the report puts the two
side by side per int8 backend (see :func:`ptq_vs_qat`). The device thresholds come
from the deployed (QAT) rows only.

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
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_runtime import contract
from edge_runtime.bundle import Bundle, stage_writer
from edge_runtime.parity_entry import (
    FLOAT_OUTPUTS,
    Reference,
    classification_entry,
    forecast_entry,
)
from edge_runtime.preprocess import InputQuant, normalize, quantize_counts
from quantize.bundle_io import (
    QAT_MODEL,
    StageError,
    channel_scales,
    int8_step_inputs,
    load_keras,
    model_config,
    open_bundle,
    source_model,
)
from quantize.chains import BACKENDS, compare_int8, float_chain, run_chains
from quantize.parity_report import print_summary, render_markdown

STEP_FILE = contract.STEP_MODEL
WINDOW_FILE = contract.WINDOW_MODEL
FLOAT_FILE = contract.FLOAT_MODEL
SCHEMA = 1
# Float step chain vs the window model's outputs in reference.npz: the same float32
# arithmetic in another order; classification probabilities agree to ~1e-7.
FLOAT_TOL = 1e-5
# The forecaster's chain runs over the whole test series (7,501 steps for KDD-TSAD 135);
# compared in normalized units.
FLOAT_TOL_SERIES = 1e-4
DESCRIPTIONS = {
    "float": "float Keras step chain of the converted model",
    "float_unpruned": "float Keras step chain of model_float.keras (before pruning)",
    "litert": "ai-edge-litert, built-in kernels (BUILTIN_WITHOUT_DEFAULT_DELEGATES)",
    "litert_xnnpack": "ai-edge-litert, default resolver (XNNPACK delegate)",
    "tflm": "TFLM kernels on the host (tflite_micro)",
    "float_pre_qat": "float Keras step chain of the model before QAT (what PTQ converts)",
    "litert_ptq": "PTQ step (no QAT) on ai-edge-litert, built-in kernels; vs float_pre_qat",
    "litert_xnnpack_ptq": "PTQ step (no QAT) on ai-edge-litert, XNNPACK; vs float_pre_qat",
    "tflm_ptq": "PTQ step (no QAT) on TFLM; vs float_pre_qat",
}
PTQ_FILE = "step_int8_ptq.tflite"
PRE_QAT = "float_pre_qat"
# The figures of the PTQ vs QAT table (reports/parity.json "qat").
QAT_KEYS = {
    "classification": ("accuracy", "argmax_agreement", "max_abs_err", "rmse"),
    "forecast": ("margin", "point_auc", "window_auc", "hit", "max_abs_err", "rmse"),
}


# --------------------------------------------------------------------------- thresholds


def device_thresholds(task: str, backends: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Pass marks for device checks, from the host int8 figures on the reference data.

    A device runs either the C engine (TFLM's arithmetic exactly) or LiteRT (a Pi),
    whose int8 chains differ slightly, so each mark starts from the WORST of the
    int8 backends measured here, then allows a margin.
    """
    int8 = [backends[b] for b in BACKENDS if b in backends]
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
    measured = {f"{name}_{key}": b.get(key) for name in BACKENDS if name in backends
                for b in [backends[name]] for key in worst}  # fmt: skip
    if task == "classification":
        return {
            "min_accuracy": round(worst["accuracy"] - 0.01, 6),
            "min_argmax_agreement": round(worst["argmax_agreement_vs_reference"] - 0.005, 6),
            "measured": {**measured, "windows": backends["tflm"]["n"]},
            "derivation": "quantize parity on reference.npz: min_accuracy = lowest host int8 "
            "accuracy (LiteRT built-in, LiteRT XNNPACK, TFLM) - 1 point; min_argmax_agreement = "
            "lowest host int8 argmax agreement with reference.npz's float outputs (what a device "
            "check compares with) - 0.5 point",
        }
    if "hit" not in worst:  # a series without labelled anomaly: no hit, AUC or margin to keep
        return {"measured": measured, "derivation": "the test series has no labelled anomaly: "
                "no device marks (alarm events at the int8 threshold are reported)"}  # fmt: skip
    return {
        "require_hit": bool(worst["hit"]),
        "min_point_auc": round(worst["point_auc"] - 0.01, 6),
        "min_margin": round(0.9 * worst["margin"], 6),
        "max_false_alarms": worst["false_alarms"],
        "measured": measured,
        "derivation": "quantize parity on the reference test series, over the host int8 "
        "backends (LiteRT built-in, LiteRT XNNPACK, TFLM): require_hit = every one hit; "
        "min_point_auc = lowest point AUC - 0.01; min_margin = 0.9 x lowest margin; "
        "max_false_alarms = most false alarms at the int8 threshold (thresholds."
        "anomaly_score_int8, else anomaly_score)",
    }


# --------------------------------------------------------------------------- the stage


@dataclass
class _Inputs:
    """What the check runs on: the bundle's step model and its reference data.

    ``counts`` are the int16 counts of the reference series ``(N, T, C)`` (a
    forecaster's test series as one ``(1, n, C)``), ``u`` the same normalized,
    ``ref_out`` reference.npz's float outputs (probabilities, or the forecast in
    sensor units), ``y_true`` the labels (classification).
    """

    b: Bundle
    q: dict[str, Any]  # the manifest's quantization section
    cfg: Any
    tfl: bytes
    source: str
    ref: dict[str, np.ndarray]  # reference.npz
    mean: np.ndarray
    std: np.ndarray
    counts: np.ndarray
    u: np.ndarray
    ref_out: np.ndarray
    y_true: np.ndarray | None
    ptq: dict[str, Any] | None = None  # quantization.ptq: the pre-QAT step beside a QAT one

    @property
    def step(self) -> dict[str, Any]:
        return self.q["step"]

    @property
    def classify(self) -> bool:
        return self.b.task == "classification"


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
    c = _inputs(bundle_dir, limit)
    timing: dict[str, Any] = {}
    t0 = time.perf_counter()
    y_float = float_chain(load_keras(c.b, c.source), c.cfg, c.u)
    pre_qat: dict[str, np.ndarray] = {}
    if c.ptq is not None:
        pre = c.ptq["source_model"]["file"]
        pre_qat[PRE_QAT] = float_chain(load_keras(c.b, pre), c.cfg, c.u)
    timing["float_chain_seconds"] = round(time.perf_counter() - t0, 1)
    reference, unpruned = _float_reference(c, y_float, pre_qat.get(PRE_QAT))

    # int8 inputs: the device contract, from int16 counts.
    fill = int(c.step["ring_buffer"]["fill"])
    xq = quantize_counts(c.counts, InputQuant.from_dict(c.b.manifest["preprocess"]["input_quant"]))
    xs = int8_step_inputs(c.cfg, xq, fill)
    chains = run_chains(c.tfl, c.step, xs, BACKENDS, progress=progress)
    timing["int8"] = {"seconds": chains["seconds"], "us_per_step": chains["us_per_step"]}

    float_outputs, backends = _entries(c, y_float, {**pre_qat, **unpruned}, chains["chains"])
    qat = None
    if c.ptq is not None:
        ptq_chains = _ptq_chains(c, progress)
        timing["int8"]["seconds"].update(
            {f"{k}_ptq": v for k, v in ptq_chains["seconds"].items() if k in BACKENDS}
        )
        timing["int8"]["us_per_step"].update(
            {f"{k}_ptq": v for k, v in ptq_chains["us_per_step"].items() if k in BACKENDS}
        )
        backends.update(_ptq_entries(c, pre_qat[PRE_QAT], ptq_chains["chains"]))
        qat = ptq_vs_qat(c.b.task, backends, c.ptq["source_model"]["file"], c.source)
    thresholds = None if limit else device_thresholds(c.b.task, backends)
    timing["total_seconds"] = round(time.perf_counter() - t_start, 1)
    report = {
        "schema": SCHEMA,
        "task": c.b.task,
        "step_sha256": hashlib.sha256(c.tfl).hexdigest(),
        "source_model": c.source,
        "reference": {
            **reference,
            "series": int(xs.shape[0]),
            "steps_per_series": int(xs.shape[1]),
            "limit": limit,
            "input": "int8 x from int16 counts via edge_runtime.preprocess.quantize_counts "
            f"(manifest preprocess.input_quant); ring buffer filled with the x zero point {fill}",
        },
        "backends": backends,
        **interpreter_comparison(chains, c.classify),
        **({"qat": qat} if qat is not None else {}),
        "sizes": _sizes(c),
        "thresholds": thresholds,
        "timing": timing,
    }
    _write(bundle_dir, c, report, float_outputs, limit)
    print_summary(report)
    return report


def _inputs(bundle_dir: str | os.PathLike[str], limit: int | None) -> _Inputs:
    """Open the bundle, refuse a stale step model, read the reference data."""
    b = open_bundle(bundle_dir)
    m = b.manifest
    q = _check_fresh(b)
    _check_input_quant(b, q["step"])
    source = q["source_model"]["file"]
    mean, std = np.asarray(m["preprocess"]["mean"]), np.asarray(m["preprocess"]["std"])
    print(f"[quantize] check: {b.root} ({b.task}), {STEP_FILE} from {source}")
    ref = b.load_npz(contract.REFERENCE)
    y_true = None
    if b.task == "classification":
        counts = ref["x_counts"]
        y_true = ref["y"].astype(np.int64)
        ref_out = ref["probs"].astype(np.float64)
        if limit:
            counts, y_true, ref_out = counts[:limit], y_true[:limit], ref_out[:limit]
        u = normalize(counts, channel_scales(b), mean, std)
        if "x_float" in ref and not limit and not np.array_equal(u, ref["x_float"]):
            raise StageError(f"{b.root / 'reference.npz'}: x_float is not the normalized x_counts")
    else:
        counts = ref["series_counts"][None]
        u = normalize(counts, channel_scales(b), mean, std)
        ref_out = ref["forecast"].astype(np.float64)
    tfl = b.read_bytes(STEP_FILE)
    cfg = model_config(b)
    ptq = _ptq_section(b, q, source)
    return _Inputs(b, q, cfg, tfl, source, ref, mean, std, counts, u, ref_out, y_true, ptq)


def _ptq_section(b: Bundle, q: dict[str, Any], source: str) -> dict[str, Any] | None:
    """The manifest's ``quantization.ptq`` when the step is a QAT one; refuses a missing
    or stale PTQ step."""
    ptq = q.get("ptq")
    if source != QAT_MODEL:
        return None
    if not ptq or not b.has(PTQ_FILE):
        raise StageError(
            f"{b.root}: {STEP_FILE} is converted from {QAT_MODEL} but the bundle has no "
            f"{PTQ_FILE} to compare it with: rerun `python -m quantize int8`"
        )
    pre = ptq["source_model"]
    if not b.has(pre["file"]) or b.artifacts[pre["file"]]["sha256"] != pre["sha256"]:
        raise StageError(
            f"{b.root / PTQ_FILE}: converted from another {pre['file']} than the bundle's: "
            "rerun `python -m quantize int8`"
        )
    return ptq


def _check_fresh(b: Bundle) -> dict[str, Any]:
    """The manifest's quantization section, when the step model was converted from the
    model the bundle holds now."""
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


def _check_input_quant(b: Bundle, step: dict[str, Any]) -> None:
    iq = InputQuant.from_dict(b.manifest["preprocess"]["input_quant"])
    xin = step["inputs"]["x"]
    if (xin["scale"], xin["zero_point"]) != (iq.scale, iq.zero_point):
        raise StageError(
            f"{b.root / 'manifest.json'}: preprocess.input_quant (scale {iq.scale}, zero point "
            f"{iq.zero_point}) does not match {STEP_FILE}'s x input ({xin['scale']}, "
            f"{xin['zero_point']}): rerun `python -m quantize int8`"
        )


def _float_reference(
    c: _Inputs, y_float: np.ndarray, y_pre_qat: np.ndarray | None = None
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The float step chain of ``model_float.keras`` against reference.npz.

    That is the converted model's chain ``y_float`` when nothing was pruned or
    fine-tuned, the pre-QAT chain ``y_pre_qat`` when an unpruned model was
    fine-tuned; otherwise ``model_float.keras`` runs too and is returned as
    ``float_unpruned``.
    """
    tol = FLOAT_TOL if c.classify else FLOAT_TOL_SERIES
    unpruned: dict[str, np.ndarray] = {}
    pre = c.ptq["source_model"]["file"] if c.ptq is not None else None
    if pre == FLOAT_FILE and y_pre_qat is not None:
        y_float = y_pre_qat
    elif c.source != FLOAT_FILE:
        y_float = float_chain(load_keras(c.b, FLOAT_FILE), c.cfg, c.u)
        unpruned["float_unpruned"] = y_float
    if c.classify:
        diff = float(np.max(np.abs(y_float[:, -1] - c.ref_out)))
    else:
        diff = float(np.max(np.abs(y_float[0] - (c.ref_out - c.mean) / c.std)))
    if diff > tol:
        raise StageError(
            f"{c.b.root / 'reference.npz'}: the float step chain of {FLOAT_FILE} differs from "
            f"the window model's outputs by {diff:.3g} (> {tol:g}): the step model does not "
            "reproduce the trained model"
        )
    return {"tolerance": tol, "float_step_vs_reference_max_abs": diff}, unpruned


def _entries(
    c: _Inputs,
    y_float: np.ndarray,
    unpruned: dict[str, np.ndarray],
    chains: dict[str, dict[str, np.ndarray]],
) -> tuple[np.ndarray, dict[str, Any]]:
    """The float outputs (``float_outputs.npz``) and every backend's parity entry.

    The float backends' outputs are classifier probabilities of each window's last
    step, or the forecast of every step in sensor units; the int8 backends' entries
    come from :class:`edge_runtime.parity_entry.Reference`, as every later stage's do.
    """
    art = c.b.artifacts
    last = (lambda y: y[:, -1]) if c.classify else (lambda y: y[0] * c.std + c.mean)
    float_y = last(y_float.astype(np.float64))
    files = {"float": c.source, **dict.fromkeys(unpruned, FLOAT_FILE)}
    if c.ptq is not None:
        files[PRE_QAT] = c.ptq["source_model"]["file"]
    outs = {"float": float_y, **{n: last(y.astype(np.float64)) for n, y in unpruned.items()}}
    backends = {n: {**_common(n, files[n], art[files[n]]["bytes"]), **_float_entry(c, y, float_y)}
                for n, y in outs.items()}  # fmt: skip
    ref = Reference(c.b, c.b.task, float_y, _reference_arrays(c))
    for name in BACKENDS:
        y_int8 = chains[name][contract.Y][:, -1] if c.classify else chains[name][contract.Y][0]
        backends[name] = ref.entry(y_int8, **_common(name, STEP_FILE, art[STEP_FILE]["bytes"]))
    return float_y, backends


@dataclass
class _PtqReference(Reference):
    """The reference of the PTQ rows: ``float_pre_qat``'s outputs, the PTQ step's ``y``
    quantization."""

    y_q: dict[str, Any] | None = None

    @property
    def y_quant(self) -> dict[str, Any]:
        assert self.y_q is not None
        return self.y_q


def _ptq_chains(c: _Inputs, progress: bool) -> dict[str, Any]:
    """The PTQ step's chains on every backend, its int8 input from the same int16 counts
    through its own input quantization."""
    assert c.ptq is not None
    step = c.ptq["step"]
    xin = step["inputs"]["x"]
    pre = c.b.manifest["preprocess"]
    iq = InputQuant.derive(
        channel_scales(c.b), pre["mean"], pre["std"], xin["scale"], xin["zero_point"]
    )
    xs = int8_step_inputs(c.cfg, quantize_counts(c.counts, iq), int(step["ring_buffer"]["fill"]))
    return run_chains(c.b.read_bytes(PTQ_FILE), step, xs, BACKENDS, progress=progress)


def _ptq_entries(
    c: _Inputs, y_pre_qat: np.ndarray, chains: dict[str, dict[str, np.ndarray]]
) -> dict[str, Any]:
    """``litert_ptq``, ``litert_xnnpack_ptq``, ``tflm_ptq``: judged against ``float_pre_qat``."""
    assert c.ptq is not None
    last = (lambda y: y[:, -1]) if c.classify else (lambda y: y[0] * c.std + c.mean)
    ref = _PtqReference(
        c.b, c.b.task, last(y_pre_qat.astype(np.float64)), _reference_arrays(c),
        c.ptq["step"]["outputs"]["y"],
    )  # fmt: skip
    size = c.b.artifacts[PTQ_FILE]["bytes"]
    out = {}
    for name in BACKENDS:
        y_int8 = chains[name][contract.Y][:, -1] if c.classify else chains[name][contract.Y][0]
        key = f"{name}_ptq"
        out[key] = ref.entry(y_int8, **_common(key, PTQ_FILE, size))
    return out


def ptq_vs_qat(
    task: str, backends: dict[str, dict[str, Any]], pre_model: str, qat_model: str
) -> dict[str, Any]:
    """PTQ and QAT side by side per int8 backend (and the two float models): each int8
    row against the float model it was converted from."""
    keys = QAT_KEYS[task]
    rows = {"float": (PRE_QAT, "float")}
    rows.update({b: (f"{b}_ptq", b) for b in BACKENDS})
    return {
        "ptq_model": pre_model,
        "qat_model": qat_model,
        "compared": f"int8 rows: PTQ against {PRE_QAT}, QAT against float (each against the "
        f"float model it was converted from); float row: {PRE_QAT} (ptq) and float (qat), "
        f"the parity keys of {PRE_QAT} against float",
        "keys": list(keys),
        "rows": {
            name: {k: {"ptq": backends[p].get(k), "qat": backends[q].get(k)} for k in keys}
            for name, (p, q) in rows.items()
        },
    }


def _reference_arrays(c: _Inputs) -> dict[str, np.ndarray]:
    """reference.npz as far as the check uses it (the first ``limit`` windows)."""
    return {"y": c.y_true, "probs": c.ref_out} if c.classify else c.ref


def _common(name: str, model_file: str, model_bytes: int) -> dict[str, Any]:
    return {"description": DESCRIPTIONS[name], "model_file": model_file, "model_bytes": model_bytes}


def _float_entry(c: _Inputs, y: np.ndarray, float_y: np.ndarray) -> dict[str, Any]:
    """The parity entry of float outputs ``y`` against the float chain's ``float_y``."""
    m = c.b.manifest
    labels = list(m["labels"])
    if c.classify:
        entry = classification_entry(y, float_y, c.y_true, labels)
        agree = float(np.mean(y.argmax(axis=1) == c.ref_out.argmax(axis=1)))
        return {**entry, "argmax_agreement_vs_reference": agree}
    th = m.get("thresholds", {})
    return forecast_entry(
        y,
        float_y,
        c.counts[0].astype(np.float64) * channel_scales(c.b),
        c.ref["labels"].astype(np.int64),
        zone=int(m["stages"]["train"]["config"]["data"].get("zone", 100)),
        threshold=th.get("anomaly_score"),
        warmup=int(th.get("anomaly_warmup_samples", 0)),
    )


def interpreter_comparison(chains: dict[str, Any], classify: bool) -> dict[str, Any]:
    """LiteRT (built-in and XNNPACK) vs TFLM: on TFLM's own inputs of every step
    (``single_step``) and chain against chain (``chain``)."""
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
    return vs


def _sizes(c: _Inputs) -> dict[str, Any]:
    art, step = c.b.artifacts, c.step
    return {
        STEP_FILE: art[STEP_FILE]["bytes"],
        f"{STEP_FILE}.gz": len(gzip.compress(c.tfl, 9, mtime=0)),
        "step_weights_bytes": step.get("weights_bytes"),
        "step_ops": step["n_ops"],
        "step_tensors": step["n_tensors"],
        WINDOW_FILE: art.get(WINDOW_FILE, {}).get("bytes"),
        "model_float.keras": art[FLOAT_FILE]["bytes"],
        "model_pruned.keras": art.get(contract.PRUNED_MODEL, {}).get("bytes"),
        "tflm_arena": c.q.get("tflm_arena"),
    }


def _write(
    bundle_dir: str | os.PathLike[str],
    c: _Inputs,
    report: dict[str, Any],
    float_outputs: np.ndarray,
    limit: int | None,
) -> None:
    """``reports/parity.json`` and ``.md``, ``float_outputs.npz``, ``thresholds.device``."""
    m = c.b.manifest
    md = render_markdown(report, m.get("name", c.b.root.name), list(m["labels"]))
    config = {"command": "check", "backends": ["float", *BACKENDS], "limit": limit}
    with stage_writer(bundle_dir, "parity", config=config) as w:
        w.versions.update(_versions())
        w.write_json("reports/parity.json", report)
        if limit:
            w.remove(FLOAT_OUTPUTS)
        else:
            w.write_npz(FLOAT_OUTPUTS, y=np.ascontiguousarray(float_outputs, np.float64))
        w.write_text("reports/parity.md", md)
        if report["thresholds"] is not None:
            w.manifest.setdefault("thresholds", {})["device"] = report["thresholds"]
        w.manifest.setdefault("metrics", {})["parity"] = {
            name: _headline(c.b.task, e) for name, e in report["backends"].items()
        }


def _versions() -> dict[str, str]:
    import ai_edge_litert
    import tensorflow as tf

    return {
        "tensorflow": tf.__version__,
        "ai_edge_litert": getattr(ai_edge_litert, "__version__", "unknown"),
        "tflite_micro": _version("tflite-micro"),
    }


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
