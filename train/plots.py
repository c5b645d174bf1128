"""Report plots (PNG). Plain matplotlib, Agg backend, no timestamps in the files."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

_META = {"Software": None}  # keep the PNG bytes free of version strings and times


def confusion_png(path: Path, confusion: list[list[int]], labels: list[str], title: str) -> None:
    cm = np.asarray(confusion, dtype=np.float64)
    rows = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(6.4, 5.4), dpi=100)
    ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(labels)):
        for j in range(len(labels)):
            color = "white" if rows[i, j] > 0.5 else "black"
            ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", color=color, fontsize=8)
    short = [lab.replace("_", " ").lower()[:14] for lab in labels]
    ax.set_xticks(range(len(labels)), short, rotation=40, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), short, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, metadata=_META)
    plt.close(fig)


def score_png(
    path: Path,
    scores: np.ndarray,
    labelled: list[int] | None,
    zone: list[int] | None,
    threshold: float | None,
    baseline: np.ndarray | None,
    title: str,
) -> None:
    fig, axes = plt.subplots(
        2 if baseline is not None else 1, 1, figsize=(9, 5), dpi=100, squeeze=False
    )
    ax = axes[0, 0]
    ax.plot(scores, lw=0.6, color="tab:blue", label="GRU forecast error")
    if zone is not None and labelled is not None:  # a series without labels has neither
        ax.axvspan(zone[0], zone[1], color="tab:orange", alpha=0.2, label="±zone")
        ax.axvspan(labelled[0], labelled[1] + 1, color="tab:red", alpha=0.5,
                   label="labelled anomaly")  # fmt: skip
    if threshold is not None:
        ax.axhline(threshold, color="k", ls="--", lw=0.8, label="threshold")
    ax.set_ylabel("score (sensor units)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    if baseline is not None:
        b = axes[1, 0]
        b.plot(baseline, lw=0.6, color="tab:gray", label="persistence |x_t − x_{t−1}|")
        if zone is not None and labelled is not None:
            b.axvspan(zone[0], zone[1], color="tab:orange", alpha=0.2)
            b.axvspan(labelled[0], labelled[1] + 1, color="tab:red", alpha=0.5)
        b.set_ylabel("baseline score")
        b.legend(fontsize=7, loc="upper left")
    axes[-1, 0].set_xlabel("sample")
    fig.tight_layout()
    fig.savefig(path, metadata=_META)
    plt.close(fig)
