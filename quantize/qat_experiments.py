"""PTQ vs QAT on real bundles through the existing int8 path: ``python -m quantize.qat_experiments``.

``run --bundle B --out DIR [--seeds 0,1,2] [--settings JSON]``: for each seed, copy the
(already converted and parity-checked) bundle B to ``DIR/seed<k>`` and run the stages
on the copy as ``make demo`` does: the qat stage (:func:`quantize.qat.qat_stage`), the
int8 stage (fresh process, PYTHONHASHSEED=0; with a QAT model it also converts the
pre-QAT one) and the parity stage, whose PTQ and QAT rows are collected into
``DIR/results.json`` and ``DIR/results.md``, side by side for every int8 backend (a seed
whose QAT lost on validation keeps the PTQ step: its QAT column repeats PTQ). B is
never modified.

``attrib --bundle B [--model M.keras] [--widen]``: the tensor-by-tensor attribution of
:mod:`quantize.qat_attrib` on the validation and test windows (B's converted model,
or ``M`` converted as the int8 stage would); ``--widen``: the same windows with
tensors simulated in int16 instead of kept in float (classifiers).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

BACKENDS = ("litert", "litert_xnnpack", "tflm")
CLASS_KEYS = ("accuracy", "argmax_agreement", "max_abs_err", "rmse")
FORECAST_KEYS = ("margin", "point_auc", "max_abs_err", "rmse")


def _rows(parity: dict[str, Any], suffix: str = "") -> dict[str, dict[str, Any]]:
    """``{float, litert, litert_xnnpack, tflm: {figure: value}}`` of a parity report's rows
    (``suffix="_ptq"``: its PTQ rows, ``float_pre_qat`` as float)."""
    keys = CLASS_KEYS if parity["task"] == "classification" else FORECAST_KEYS
    be = parity["backends"]
    names = {"float": "float_pre_qat" if suffix else "float"}
    names.update({b: b + suffix for b in BACKENDS})
    return {n: {k: be[src].get(k) for k in keys} for n, src in names.items()}


def run_one(bundle: Path, out: Path, settings: Any) -> dict[str, Any]:
    from quantize.int8 import int8
    from quantize.parity import check
    from quantize.qat import qat_stage

    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(bundle, out)
    t0 = time.perf_counter()
    report = qat_stage(out, settings)
    t_qat = time.perf_counter() - t0
    int8(out, arena=False)
    parity = check(out, progress=False)
    rows = _rows(parity)
    ptq = _rows(parity, "_ptq") if "qat" in parity else rows
    return {"qat_seconds": round(t_qat, 1), "report": report, "rows": rows, "ptq": ptq}


def _table(ptq: dict[str, Any], runs: list[dict[str, Any]], task: str) -> str:
    keys = CLASS_KEYS if task == "classification" else FORECAST_KEYS
    pct = {"accuracy", "argmax_agreement"}
    lines = ["| backend | metric | PTQ | QAT (" + ", ".join(f"seed {r['seed']}" for r in runs)
             + ") | QAT mean ± std |", "|---|---|---|---|---|"]  # fmt: skip
    for b in ("float", *BACKENDS):
        for k in keys:
            vals = [r["rows"][b][k] for r in runs]

            def f(v: float, k: str = k) -> str:
                return f"{100 * v:.2f}%" if k in pct else f"{v:.4g}"

            mean = statistics.mean(vals)
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            lines.append(
                f"| {b} | {k} | {f(ptq[b][k])} | {', '.join(f(v) for v in vals)} | "
                f"{f(mean)} ± {f(sd) if k not in pct else f'{100 * sd:.2f}'} |"
            )
    return "\n".join(lines) + "\n"


def run(bundle: Path, out: Path, seeds: list[int], settings_json: str) -> dict[str, Any]:
    from quantize.qat_config import QATSettings

    out.mkdir(parents=True, exist_ok=True)
    ptq = json.loads((bundle / "reports/parity.json").read_text())
    base = json.loads(settings_json) if settings_json else {}
    runs = []
    for seed in seeds:
        s = QATSettings.from_dict({**base, "seed": seed}, "--settings")
        r = run_one(bundle, out / f"seed{seed}", s)
        r["seed"] = seed
        runs.append(r)
        print(f"[qat-experiments] seed {seed}: {json.dumps(r['rows'])}", flush=True)
    result = {
        "bundle": str(bundle),
        "task": ptq["task"],
        "ptq": _rows(ptq),
        # the PTQ int8 rows of every run (the pre-QAT step converted beside the QAT one)
        # equal B's own parity rows: the PTQ step is the step the int8 stage wrote before
        # QAT (the float_pre_qat row is judged against the QAT float model, so it is not
        # compared: its agreement is below 1 by the windows QAT moved)
        "ptq_rows_equal_bundle": all(r["ptq"][b] == _rows(ptq)[b] for r in runs for b in BACKENDS),
        "runs": [{k: v for k, v in r.items()} for r in runs],
    }
    (out / "results.json").write_text(json.dumps(result, indent=1))
    (out / "results.md").write_text(_table(result["ptq"], runs, ptq["task"]))
    return result


def attrib(
    bundle: Path, model_path: Path | None, out: Path | None, widen: bool = False
) -> dict[str, Any]:
    import keras
    import numpy as np

    from quantize.bundle_io import load_keras, model_config, open_bundle, source_model
    from quantize.qat import QATSettings, _step_inputs, convert_spec, prune_masks
    from quantize.qat_attrib import attribute, widening
    from quantize.qat_step import FakeQuantStep, window_weights
    from train.arrays import training_arrays

    b = open_bundle(bundle)
    cfg = model_config(b)
    model = (
        keras.models.load_model(model_path, compile=False)
        if model_path
        else load_keras(b, source_model(b))
    )
    d = training_arrays(b)
    _, spec = convert_spec(model, cfg, np.asarray(d.x_train, np.float32), QATSettings())
    fq = FakeQuantStep(cfg, window_weights(model, cfg), prune_masks(model, cfg))
    result: dict[str, Any] = {}
    if b.task == "classification":
        for part in ("val", "test"):
            xs = _step_inputs(cfg, getattr(d, f"x_{part}"))
            y = np.asarray(getattr(d, f"y_{part}"))
            result[part] = (widening if widen else attribute)(fq, spec, xs, y)
    elif widen:
        raise SystemExit(f"{bundle}: widen: expected a classifier bundle, found {b.task}")
    else:
        result["test"] = _forecast_attrib(b, cfg, fq, spec)
    if out:
        out.write_text(json.dumps(result, indent=1))
    return result


def _forecast_attrib(b: Any, cfg: Any, fq: Any, spec: Any) -> dict[str, Any]:
    """Margin per tensor kept in float on the bundle's test series (as the parity stage)."""
    import numpy as np

    from edge_runtime import contract
    from edge_runtime.parity_entry import forecast_entry
    from edge_runtime.preprocess import normalize
    from quantize.bundle_io import channel_scales
    from quantize.qat import _step_inputs
    from quantize.qat_attrib import attribute_forecast

    m = b.manifest
    ref = b.load_npz(contract.REFERENCE)
    counts = ref["series_counts"][None]
    scale_c = channel_scales(b)
    mean, std = np.asarray(m["preprocess"]["mean"]), np.asarray(m["preprocess"]["std"])
    u = normalize(counts, scale_c, mean, std)
    x_phys = counts[0].astype(np.float64) * scale_c
    lab = ref["labels"].astype(np.int64)
    kw = {
        "zone": int(m["stages"]["train"]["config"]["data"].get("zone", 100)),
        "threshold": m.get("thresholds", {}).get("anomaly_score"),
        "warmup": int(m.get("thresholds", {}).get("anomaly_warmup_samples", 0)),
    }

    def figures(y_norm: np.ndarray) -> dict[str, Any]:
        f = y_norm.astype(np.float64) * std + mean
        return forecast_entry(f, f, x_phys, lab, **kw)

    return attribute_forecast(fq, spec, _step_inputs(cfg, u), figures)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m quantize.qat_experiments")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--bundle", required=True, type=Path)
    r.add_argument("--out", required=True, type=Path)
    r.add_argument("--seeds", default="0")
    r.add_argument("--settings", default="")
    a = sub.add_parser("attrib")
    a.add_argument("--bundle", required=True, type=Path)
    a.add_argument("--model", type=Path)
    a.add_argument("--out", type=Path)
    a.add_argument("--widen", action="store_true")
    args = p.parse_args(argv)
    if args.cmd == "run":
        seeds = [int(v) for v in args.seeds.split(",")]
        run(args.bundle, args.out, seeds, args.settings)
    else:
        res = attrib(args.bundle, args.model, args.out, args.widen)
        for part, v in res.items():
            if args.widen:
                for row in v["rows"]:
                    print(f"{part} int16 {row['int16']:24s} agreement {row['agreement']:.4f} "
                          f"accuracy {row['accuracy']:.4f}")  # fmt: skip
                continue
            print(part, json.dumps(v["simulated_all_quantized"]), v.get("float_accuracy"))
            if "float" in v:
                print(json.dumps(v["float"]))
                for row in v["tensors"]:
                    print(f"  {row['tensor']:8s} kept float margin {row['margin_kept_float']:.3f}; "
                          f"only quantized {row['margin_only_this_quantized']:.3f}")  # fmt: skip
                for row in v["cumulative"]:
                    print(f"  float: {'+'.join(row['kept_float'])}: {row['margin']:.3f}")
                continue
            for row in v["tensors"]:
                print(f"  {row['tensor']:8s} kept float {row['agreement_kept_float']:.4f} "
                      f"(+{row['gain_kept_float']:.4f}); only quantized "
                      f"{row['agreement_only_this_quantized']:.4f}")  # fmt: skip
            for row in v["cumulative"]:
                print(f"  float: {'+'.join(row['kept_float'])}: {row['agreement']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
