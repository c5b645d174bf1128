"""The figures of one task, from its collected data and (for the anomaly trace) its npz files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime import contract
from edge_runtime.anomaly import forecast_scores
from edge_runtime.bundle import Bundle, BundleError
from report import plots
from report.collect import ReportError


@dataclass(frozen=True)
class Figure:
    name: str  # file name when written beside report.md
    title: str
    caption: str
    png: bytes


def engine_scores(b: Bundle) -> np.ndarray | None:
    """Anomaly score of the C engine's int8 forecasts (engine_outputs.npz) over the test
    series, in sensor units as the float score; None when the bundle has no engine outputs
    or they do not cover the series step by step."""
    m = b.manifest
    if contract.ENGINE_OUTPUTS not in m.get("artifacts", {}):
        return None
    ref = b.load_npz(contract.REFERENCE)
    eng = b.load_npz(contract.ENGINE_OUTPUTS)
    series = ref["series_counts"]  # (n, C) int16
    y = eng["y"]  # (n, C) int8 forecast of the next sample, normalized units
    if y.shape != series.shape:
        return None
    yq = m["quantization"]["step"]["outputs"]["y"]
    mean, std = np.asarray(m["preprocess"]["mean"]), np.asarray(m["preprocess"]["std"])
    scale = np.asarray([c["scale"] for c in m["dataset"]["channels"]])
    forecast = (y.astype(np.float64) - yq["zero_point"]) * yq["scale"] * std + mean
    return forecast_scores(series * scale, forecast)


def anomaly_figures(task: dict[str, Any]) -> list[Figure]:
    try:
        b = Bundle.open(task["bundle"])
        ref = b.load_npz(contract.REFERENCE)
        traces = [("float Keras score (reference.npz)", np.asarray(ref["scores"], np.float64))]
        c = engine_scores(b)
    except BundleError as e:
        raise ReportError(f"{task['bundle']}: {e}") from None
    except KeyError as e:
        raise ReportError(f"{task['bundle']}/reference.npz: array {e} missing") from None
    if c is not None:
        traces.append(("int8 tinygru C engine score (engine_outputs.npz)", c))
    tr = task["trace"]
    warmup = int(b.manifest.get("thresholds", {}).get("anomaly_warmup_samples", 0))
    thresholds = [tr["threshold"], tr.get("threshold_int8", tr["threshold"])][: len(traces)]
    png = plots.score_trace(traces, tr["labelled"], thresholds, warmup)
    labelled = (
        "no labelled anomaly"
        if tr["labelled"] is None
        else f"labelled anomaly {tr['labelled'][0]}–{tr['labelled'][1]}"
    )
    caption = (
        f"Score = |x_t − forecast made at t−1| over the test series; {labelled}; highest score "
        f"at {tr['peak_float']} (float) and {tr['peak_tflm']} (int8 TFLM); each trace with "
        f"its own threshold (float model's, int8 chain's)."
    )
    if c is None:
        caption += " The bundle has no step-by-step engine outputs to plot the int8 score."
    return [Figure(f"{task['name']}_scores.png", "Anomaly score trace", caption, png)]


def class_figures(task: dict[str, Any]) -> list[Figure]:
    cls, labels = task["classes"], task["labels"]
    panels = [(r["title"], cls["confusion"][r["key"]]) for r in cls["rows"]]
    f1 = [(r["title"], cls["per_class_f1"][r["key"]]) for r in cls["rows"]]
    names = ", ".join(r["title"] for r in cls["rows"])
    out = [
        Figure(
            f"{task['name']}_confusion.png",
            "Confusion matrices",
            f"Test windows, rows = true class (colour: fraction of the row). {names}.",
            plots.confusion_panels(panels, labels),
        ),
        Figure(
            f"{task['name']}_per_class_f1.png",
            "Per-class F1",
            f"F1 of each class on the test windows: {names}.",
            plots.per_class_f1(f1, labels),
        ),
    ]
    return out


def sweep_figure(task: dict[str, Any]) -> list[Figure]:
    sw = task.get("sweep")
    if not sw:
        return []
    metric = sw["rows"][0]["metric"]
    return [
        Figure(
            f"{task['name']}_sparsity.png",
            f"{metric.capitalize()} vs sparsity",
            f"Float model pruned and fine-tuned at each target (reports/prune.json sweep); "
            f"test {metric}; the star is the deployed model"
            + (
                f". Right: the choice on validation data, {sw['choice']['why']}."
                if sw.get("choice")
                else "."
            ),
            plots.sparsity_sweep(sw["rows"], sw.get("deployed"), sw.get("choice")),
        )
    ]


def figures(task: dict[str, Any]) -> list[Figure]:
    main = class_figures(task) if task["task"] == "classification" else anomaly_figures(task)
    return main + sweep_figure(task)


def write(figs: list[Figure], out: Path) -> None:
    for f in figs:
        (out / f.name).write_bytes(f.png)
