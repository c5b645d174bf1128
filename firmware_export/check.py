"""The C engine against the TFLM interpreter, step by step, on the bundle's reference data.

Both sides see identical int8 inputs: the engine quantizes raw counts itself
(``tg_push_sample``); the TFLM side gets ``edge_runtime.preprocess.quantize_counts``
of the same counts laid out as the ring buffer (zero point before the first sample),
and its own state outputs carried to the next step. Every state and head output of
every step is compared; the allowed difference is 0 (any rounding difference grows
through the recurrence). On a mismatch the numpy model (lower.run_step) and the
engine's per-op trace on the same inputs name the first differing op and gate.

``reports/engine.json`` also holds ``backend``: the engine's outputs as an entry of
``reports/parity.json`` (:mod:`edge_runtime.parity_entry`, against the float
reference ``float_outputs.npz``), with ``model_bytes`` (the model data in flash),
``ram_bytes`` (state + scratch + stream struct + deepest stack, see sizes.py) and
``us_per_step`` (x86 host, see :func:`host_us_per_step`); ``backend_error`` says
why it is missing (a bundle without ``quantize parity``).
"""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime import anomaly, contract
from edge_runtime.backends import engine
from edge_runtime.backends.engine import Engine
from edge_runtime.bundle import Bundle, BundleError, stage_writer
from edge_runtime.interpreter import StepInterpreter
from edge_runtime.parity_entry import Reference
from edge_runtime.preprocess import quantize_counts
from firmware_export.export import ExportError, Prepared, export, prepare
from firmware_export.lower import run_step

STAGE = "firmware_export"


def step_inputs(prep: Prepared, counts: np.ndarray) -> np.ndarray:
    """int8 ``x`` of every step over one series ``(T, C)`` of counts: ``(n_steps, k·C)``."""
    m = prep.model
    q = quantize_counts(np.asarray(counts, np.int16), prep.input_quant)
    return contract.step_inputs(q, m.kernel, m.stride, m.x_zero_point)


def tflm_step(
    tflm: StepInterpreter, x: np.ndarray, h: list[np.ndarray]
) -> tuple[np.ndarray, list[np.ndarray]]:
    """One TFLM step on flat arrays: ``y (n_out,)`` and the new states ``[(U,), …]``."""
    states = [np.asarray(v, np.int8).reshape(1, -1) for v in h]
    y = tflm.step(np.asarray(x, np.int8).reshape(1, -1), states)
    return y.reshape(-1), [v.reshape(-1) for v in states]


def diagnose(prep: Prepared, eng: Engine, x: np.ndarray, h: list[np.ndarray],
             want_y: np.ndarray, want_h: list[np.ndarray]) -> str:  # fmt: skip
    """Which op first differs, engine vs the numpy model, on one step's inputs."""
    ref = run_step(prep.model, x, h)
    ref_ok = np.array_equal(ref["y"], want_y) and all(
        np.array_equal(a, b) for a, b in zip(ref["h_out"], want_h, strict=True)
    )
    eng.trace_reset()
    eng.step(x, h)
    got = eng.trace()
    for name, want in ref["trace"].items():
        if name not in got or not np.array_equal(got[name], want):
            where = np.flatnonzero(got.get(name, np.zeros_like(want)) != want)
            return (f"first differing op: {name} (engine vs numpy model, index {where[:8].tolist()}); "
                    f"numpy model {'equals' if ref_ok else 'differs from'} TFLM")  # fmt: skip
    return f"engine equals the numpy model op by op; numpy model {'equals' if ref_ok else 'differs from'} TFLM"


def _run_series(prep: Prepared, eng: Engine, tflm: StepInterpreter, counts: np.ndarray, tag: str,
                stats: dict[str, Any]) -> tuple[list[np.ndarray], list[np.ndarray]]:  # fmt: skip
    """Push one series through the engine (continuing its state) and TFLM; compare every step."""
    xs = step_inputs(prep, counts)
    h = eng.state()
    ys, j = [], 0
    for t, sample in enumerate(np.asarray(counts, np.int16)):
        y_e = eng.push(sample)
        if y_e is None:
            continue
        h_e = eng.state()
        y_t, h_t = tflm_step(tflm, xs[j], h)
        diffs = [("y", y_e, y_t)] + [
            (f"h{i + 1}", a, b) for i, (a, b) in enumerate(zip(h_e, h_t, strict=True))
        ]
        for name, a, b in diffs:
            n_bad = int((a != b).sum())
            if n_bad:
                stats["mismatches"] += n_bad
                if stats["first"] is None:
                    why = diagnose(prep, eng_debug(stats), xs[j], h, y_t, h_t)
                    stats["first"] = (f"{tag}, step {j} (sample {t}), tensor {name}: engine "
                                      f"{a.tolist()} TFLM {b.tolist()}; {why}")  # fmt: skip
        stats["steps"] += 1
        ys.append(y_e)
        h = h_t
        j += 1
    return ys, eng.state()


def eng_debug(stats: dict[str, Any]) -> Engine:
    return stats["debug_engine"]


def host_us_per_step(
    eng: Engine, series: np.ndarray, stride: int, *, budget_s: float = 1.0, min_calls: int = 5
) -> float:
    """Median over ``tg_window`` calls (one ctypes call per window or series) of the call's
    wall time divided by its steps, in µs, on this host.

    ``series``: ``(n, T, C)`` int16 counts; calls cycle through them until each ran once
    or ``budget_s`` is spent, and at least ``min_calls`` times.
    """
    steps = len(range(0, series.shape[1], stride))
    times: list[float] = []
    t_end = time.perf_counter() + budget_s
    while len(times) < min_calls or (len(times) < len(series) and time.perf_counter() < t_end):
        counts = np.ascontiguousarray(series[len(times) % len(series)], np.int16)
        t0 = time.perf_counter()
        eng.window(counts)
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) / steps * 1e6


def _backend_entry(bundle: Bundle, eng: Engine, prep: Prepared, y: np.ndarray,
                   prefix: str, model_bytes: int, ram_bytes: int,
                   sizes_from: str) -> dict[str, Any]:  # fmt: skip
    """The host engine's outputs as a parity entry (raises BundleError without float_outputs.npz)."""
    ref = Reference.from_bundle(bundle)
    counts = ref.ref["x_counts"] if "x_counts" in ref.ref else ref.ref["series_counts"][None]
    us = host_us_per_step(eng, counts, prep.model.stride)
    machine = platform.machine()
    entry = ref.entry(
        y,
        description=f"tinygru C engine on the host ({machine}, gcc -O2 via ctypes)",
        model_file=f"{prefix}_model.c",
        model_bytes=model_bytes,
    )
    entry.update({
        "ram_bytes": ram_bytes,
        "sizes_from": sizes_from,
        "us_per_step": round(us, 3),
        "us_per_step_method": f"{machine} host: median over tg_window calls (one ctypes call per "
        "window, or one per series) of the call's time / its steps",
    })  # fmt: skip
    return entry


def check(
    bundle_dir: str | Path,
    out: str | Path | None = None,
    prefix: str | None = None,
    target: str | Path | None = None,
) -> dict[str, Any]:
    """Compare the engine with TFLM on every reference step; write engine_outputs.npz and reports/engine.json.

    ``target``: a microcontroller target file (:mod:`edge_runtime.targets`). Its budgets
    hold the model and the engine, so they are checked here, on the Cortex-M4 objects:
    flash = model data + engine code, RAM = state + scratch + ``tg_stream`` + deepest
    stack. A model over either is refused (ExportError, one line naming the budget and
    by how much) and nothing is written; the fit is recorded in ``reports/engine.json``.
    """
    from edge_runtime.targets import fit, load_target

    tgt = load_target(target) if target is not None else None
    result = export(bundle_dir, out, prefix)
    bundle = Bundle.open(bundle_dir)
    prep = prepare(bundle)
    m = prep.model
    fw = Path(result["out"])
    eng = engine.load(fw, result["prefix"])
    stats: dict[str, Any] = {"mismatches": 0, "steps": 0, "first": None}
    stats["debug_engine"] = engine.load(fw, result["prefix"], debug=True)
    tflm = StepInterpreter.from_bundle(bundle, backend="tflm")
    ref = bundle.load_npz(contract.REFERENCE)
    report: dict[str, Any] = {"prefix": result["prefix"], "tolerance": 0}
    arrays: dict[str, np.ndarray] = {}
    if "x_counts" in ref:
        outs, finals = [], []
        for w, counts in enumerate(ref["x_counts"]):
            eng.reset()
            ys, h = _run_series(prep, eng, tflm, counts, f"window {w}", stats)
            outs.append(ys[-1])
            finals.append(h)
        y = np.stack(outs)
        arrays["y"] = y
        for i in range(len(m.units)):
            arrays[f"h{i + 1}_final"] = np.stack([f[i] for f in finals])
        pred = y.argmax(-1)
        float_pred = ref["probs"].argmax(-1)
        report["windows"] = len(y)
        report["accuracy"] = float((pred == ref["y"]).mean())
        # against reference.npz: the train stage's float model (before prune and QAT); the
        # backend entry compares with float_outputs.npz, the model the step was made from
        report["accuracy_float"] = float((float_pred == ref["y"]).mean())
        report["agreement_with_float"] = float((pred == float_pred).mean())
        probs = (y.astype(np.float64) - m.y_zero_point) * m.y_scale
        report["max_abs_prob_diff_vs_float"] = float(np.abs(probs - ref["probs"]).max())
    else:
        eng.reset()
        ys, h = _run_series(prep, eng, tflm, ref["series_counts"], "series", stats)
        y = np.stack(ys)
        arrays["y"] = y
        for i, v in enumerate(h):
            arrays[f"h{i + 1}_final"] = v
        man = bundle.manifest
        scale = np.array([c["scale"] for c in man["dataset"]["channels"]])
        mean, std = np.array(man["preprocess"]["mean"]), np.array(man["preprocess"]["std"])
        f_engine = ((y.astype(np.float64) - m.y_zero_point) * m.y_scale) * std + mean
        report["windows"] = 1
        report["forecast_mae_vs_float"] = float(np.abs(f_engine - ref["forecast"]).mean())
        x_phys = ref["series_counts"] * scale
        scores = anomaly.forecast_scores(x_phys, f_engine)
        thr = anomaly.device_threshold(man.get("thresholds"))
        rep = anomaly.anomaly_report(
            scores,
            ref["labels"] > 0,
            zone=int(man["stages"]["train"]["config"]["data"].get("zone", 100)),
            threshold=thr,
            ignore_first=int((man.get("thresholds") or {}).get("anomaly_warmup_samples", 0)),
        )
        report["anomaly"] = {k: rep[k] for k in ("hit", "peak", "labelled", "margin") if k in rep}
    state_bytes, scratch_bytes = eng.buffer_sizes()
    from firmware_export import sizes

    md = result["model_data"]
    model_bytes, ram_bytes = md["flash_bytes"], md["ram_bytes"]
    sizes_from = "generated model data (flash) and state + scratch (RAM); no Arm compiler here"
    if sizes.missing_tools() is None:
        fs = sizes.firmware_sizes(fw, result["prefix"])
        report["cortex_m4"] = {
            "flash_parts": fs["flash"]["parts"],
            "flash_total": fs["flash"]["total"],
            "ram": fs["ram"],
            "stack_path": fs["stack"]["tg_window"]["path"],
            "checks_ok": fs["checks"]["ok"],
        }
        if tgt is not None and tgt.kind == "mcu":
            need = {"flash_bytes": fs["flash"]["total"], "ram_bytes": fs["ram"]["total"]}
            over = fit(tgt, need["flash_bytes"], need["ram_bytes"])
            if over:
                raise ExportError(
                    "; ".join(over) + " (Cortex-M4 objects: model data + engine code in flash; "
                    "state + scratch + tg_stream + stack in RAM)"
                )
            report["target_fit"] = {"target": tgt.name, "path": tgt.path, **need,
                                    "flash_budget": tgt.flash_bytes,
                                    "ram_budget": tgt.ram_bytes}  # fmt: skip
        model_bytes, ram_bytes = fs["flash"]["model_data"], fs["ram"]["total"]
        sizes_from = (
            "Cortex-M4 objects (arm-none-eabi-gcc -Os): model data object text + data (flash); "
            "state + scratch + tg_stream + deepest stack (RAM)"
        )
    try:
        report["backend"] = _backend_entry(bundle, eng, prep, y, result["prefix"], model_bytes,
                                           ram_bytes, sizes_from)  # fmt: skip
        report["backend_error"] = None
    except BundleError as e:
        report["backend"] = None
        report["backend_error"] = str(e)
    report.update({
        "steps_compared": stats["steps"],
        "mismatches": stats["mismatches"],
        "first_mismatch": stats["first"],
        "state_bytes": state_bytes,
        "scratch_bytes": scratch_bytes,
        "step_model_sha256": prep.sha256,
    })  # fmt: skip
    with stage_writer(bundle_dir, STAGE, config={"prefix": result["prefix"]}) as w:
        w.write_npz(contract.ENGINE_OUTPUTS, **arrays)
        w.write_json("reports/engine.json", report)
    return report
