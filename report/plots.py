"""The report's figures as PNG bytes: matplotlib, Agg backend, fixed sizes, no metadata.

The same data give the same bytes (no time or version string is written into
the files), so a report can be compared with an earlier one byte for byte.
"""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

DPI = 100
_META = {"Software": None}


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata=_META, bbox_inches="tight", pad_inches=0.15)
    plt.close(fig)
    return buf.getvalue()


def _short(labels: list[str]) -> list[str]:
    return [lab.replace("_", " ").lower() for lab in labels]


def confusion_panels(panels: list[tuple[str, list[list[int]]]], labels: list[str]) -> bytes:
    """Row-normalized confusion matrices side by side, counts written in the cells."""
    n = len(labels)
    fig, axes = plt.subplots(
        1, len(panels), figsize=(5.2 * len(panels), 5.4), dpi=DPI, layout="constrained"
    )
    axes = np.atleast_1d(axes)
    short = _short(labels)
    for ax, (title, confusion) in zip(axes, panels, strict=True):
        cm = np.asarray(confusion, dtype=np.float64)
        rows = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
        for i in range(n):
            for j in range(n):
                color = "white" if rows[i, j] > 0.5 else "black"
                ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", color=color, fontsize=8)
        ax.set_xticks(range(n), short, rotation=40, ha="right", fontsize=8)
        ax.set_yticks(range(n), short, fontsize=8)
        ax.set_xlabel("predicted")
        acc = np.trace(cm) / max(cm.sum(), 1)
        ax.set_title(f"{title}\naccuracy {100 * acc:.2f}%", fontsize=10)
    axes[0].set_ylabel("true")
    return _png(fig)


def per_class_f1(series: list[tuple[str, list[float | None]]], labels: list[str]) -> bytes:
    """Per-class F1, one group of bars per class, one bar per backend (no bar for a
    class without F1: neither test samples nor predictions)."""
    n, k = len(labels), len(series)
    vals = [np.array([np.nan if v is None else v for v in f1], np.float64) for _, f1 in series]
    every = np.concatenate(vals)
    lo = float(np.nanmin(every)) if np.isfinite(every).any() else 0.0
    fig, ax = plt.subplots(figsize=(9.0, 3.6), dpi=DPI)
    width = 0.8 / k
    x = np.arange(n)
    for i, ((name, _), values) in enumerate(zip(series, vals, strict=True)):
        ax.bar(x + (i - (k - 1) / 2) * width, values, width, label=name)
    ax.set_xticks(x, _short(labels), rotation=20, ha="right", fontsize=8)
    ax.set_ylim(max(0.0, lo - 0.1), 1.0)
    ax.set_ylabel("F1")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=k, frameon=False)
    fig.tight_layout()
    return _png(fig)


def sparsity_sweep(
    rows: list[dict[str, Any]],
    deployed: dict[str, Any] | None,
    choice: dict[str, Any] | None = None,
) -> bytes:
    """Test metric vs achieved sparsity, one line per granularity; dense as a dashed line.
    With the prune stage's ``choice``, a second panel: the validation score it compared,
    the budget line and the chosen point."""
    dense = next((r for r in rows if r["granularity"] == "dense"), None)
    metric = rows[0]["metric"]
    if choice is not None and all(r.get("val_score") is not None for r in rows):
        fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.0), dpi=DPI)
        _choice_panel(bx, rows, choice)
    else:
        fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=DPI)
    grans = list(dict.fromkeys(r["granularity"] for r in rows if r["granularity"] != "dense"))
    for gran, marker in zip(grans, "os^vD", strict=False):
        pts = sorted((r["achieved"], r["test"]) for r in rows if r["granularity"] == gran)
        if dense is not None:
            pts = [(dense["achieved"], dense["test"]), *pts]
        xs, ys = zip(*pts, strict=True)
        ax.plot(np.asarray(xs) * 100, ys, marker=marker, label=gran)
    if dense is not None:
        ax.axhline(dense["test"], color="k", ls="--", lw=0.9, label=f"dense ({dense['test']:.3f})")
    if deployed and deployed.get("test") is not None:
        ax.plot(
            [100 * deployed["achieved"]],
            [deployed["test"]],
            marker="*",
            ms=14,
            color="tab:red",
            ls="none",
            label=f"deployed ({deployed['granularity']})",
        )
    ax.set_xlabel("sparsity of the pruned kernels (%)")
    ax.set_ylabel(f"test {metric}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def score_trace(
    traces: list[tuple[str, np.ndarray]],
    labelled: list[int] | None,
    threshold: float | list[float | None] | None,
    warmup: int,
    zoom: int = 300,
) -> bytes:
    """Anomaly score over the test series, one row per trace: the whole series on the
    left, ±``zoom`` samples around the labelled anomaly (without labels: around the
    highest score) on the right. ``threshold``: one for every trace, or one per trace."""
    per = threshold if isinstance(threshold, list) else [threshold] * len(traces)
    fig, axes = plt.subplots(
        len(traces),
        2,
        figsize=(11.0, 2.5 * len(traces) + 0.6),
        dpi=DPI,
        squeeze=False,
        width_ratios=(3, 1),
        layout="constrained",
    )
    colors = ("tab:blue", "tab:green", "tab:purple")
    for row, (name, scores), color, thr in zip(axes, traces, colors, per, strict=False):
        span = labelled if labelled is not None else [int(np.argmax(scores))] * 2
        lo, hi = max(0, span[0] - zoom), min(len(scores), span[1] + 1 + zoom)
        for ax, (a, b) in zip(row, ((0, len(scores)), (lo, hi)), strict=True):
            ax.plot(np.arange(a, b), scores[a:b], lw=0.6, color=color, label=name)
            if labelled is not None:
                ax.axvspan(labelled[0], labelled[1] + 1, color="tab:red", alpha=0.4,
                           label="labelled anomaly")  # fmt: skip
            if warmup > a:
                ax.axvspan(a, warmup, color="0.6", alpha=0.25, label="warm-up (not scored)")
            if thr is not None:
                ax.axhline(thr, color="k", ls="--", lw=0.8, label=f"threshold {thr:.3g}")
            ax.set_xlim(a, b)
            ax.grid(alpha=0.3)
        row[0].set_ylabel("score")
        row[0].legend(fontsize=7, loc="upper left")
        where = "the anomaly" if labelled is not None else "the highest score"
        row[1].set_title(f"around {where} (±{zoom})", fontsize=8)
    axes[-1, 0].set_xlabel("sample")
    axes[-1, 1].set_xlabel("sample")
    return _png(fig)


def _choice_panel(ax: Any, rows: list[dict[str, Any]], choice: dict[str, Any]) -> None:
    """Validation score vs sparsity, the budget line and the chosen point (star)."""
    pts = sorted((r["achieved"], r["val_score"]) for r in rows)
    xs, ys = zip(*pts, strict=True)
    ax.plot(np.asarray(xs) * 100, ys, marker="o", color="tab:blue", label="validation")
    dense, drop = choice["dense_val_score"], choice["max_val_drop"]
    classifier = str(choice["score"]).startswith("validation macro-F1")
    line = dense - drop if classifier else dense * (1 + drop / 100)
    ax.axhline(line, color="tab:red", ls="--", lw=0.9, label=f"budget (max drop {drop:g})")
    c = choice.get("chosen")
    cx = 0.0 if c is None else float(c["achieved"])
    cy = min(pts, key=lambda p: abs(p[0] - cx))[1]
    ax.plot([100 * cx], [cy], marker="*", ms=14, color="tab:red", ls="none",
            label="chosen" if c is not None else "chosen: dense")  # fmt: skip
    ax.set_xlabel("sparsity of the pruned kernels (%)")
    ax.set_ylabel("validation macro-F1 (points)" if classifier else "validation MAE")
    ax.set_title("the choice, on validation data", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
