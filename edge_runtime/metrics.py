"""Classification, anomaly-score and parity metrics (numpy only, JSON-ready results).

Class labels are integers in ``[0, n_classes)``. Scalar results are plain
Python floats; an undefined value is ``None`` (JSON ``null``), never NaN.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "accuracy",
    "confusion_matrix",
    "macro_f1",
    "parity",
    "per_class_f1",
    "roc_auc",
]


def _labels(y: Any, yhat: Any, n_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y).reshape(-1)
    yhat = np.asarray(yhat).reshape(-1)
    if y.shape != yhat.shape:
        raise ValueError(f"labels and predictions differ in length: {y.size} vs {yhat.size}")
    if y.size == 0:
        raise ValueError("no samples")
    for name, a in (("labels", y), ("predictions", yhat)):
        if not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"{name} must be integers, got {a.dtype}")
        if n_classes is not None and (a.min() < 0 or a.max() >= n_classes):
            raise ValueError(
                f"{name} must lie in [0, {n_classes}), found [{int(a.min())}, {int(a.max())}]"
            )
    return y.astype(np.int64), yhat.astype(np.int64)


def accuracy(y: Any, yhat: Any) -> float:
    """Fraction of samples with ``yhat == y``."""
    y, yhat = _labels(y, yhat)
    return float(np.mean(y == yhat))


def confusion_matrix(y: Any, yhat: Any, n_classes: int) -> np.ndarray:
    """``(n_classes, n_classes)`` int64 counts; row = true class, column = predicted class."""
    y, yhat = _labels(y, yhat, n_classes)
    flat = np.bincount(y * n_classes + yhat, minlength=n_classes * n_classes)
    return flat.reshape(n_classes, n_classes).astype(np.int64)


def per_class_f1(y: Any, yhat: Any, n_classes: int) -> list[float | None]:
    """F1 of each class: ``2 TP / (2 TP + FP + FN)``.

    A class that occurs neither in ``y`` nor in ``yhat`` has no defined F1 and
    gets ``None``.
    """
    cm = confusion_matrix(y, yhat, n_classes)
    tp = np.diag(cm).astype(np.float64)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    denom = 2 * tp + fp + fn
    return [float(2 * t / d) if d > 0 else None for t, d in zip(tp, denom, strict=True)]


def macro_f1(y: Any, yhat: Any, n_classes: int) -> float:
    """Unweighted mean of :func:`per_class_f1` over the classes where it is defined.

    Classes absent from both ``y`` and ``yhat`` are left out (as scikit-learn's
    ``f1_score(..., average="macro", zero_division=np.nan)``); a class that is
    present but never predicted counts with F1 = 0.
    """
    f1 = [f for f in per_class_f1(y, yhat, n_classes) if f is not None]
    return float(np.mean(f1))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks; tied values share the mean of the ranks they span."""
    order = np.argsort(x, kind="stable")
    xs = x[order]
    boundary = np.concatenate(([True], xs[1:] != xs[:-1]))
    group = np.cumsum(boundary) - 1
    first = np.flatnonzero(boundary)
    last = np.concatenate((first[1:], [xs.size])) - 1
    mean_rank = (first + last) / 2.0 + 1.0
    ranks = np.empty(x.size, dtype=np.float64)
    ranks[order] = mean_rank[group]
    return ranks


def roc_auc(labels01: Any, scores: Any) -> float:
    """Area under the ROC curve = P(score of a random positive > score of a random negative).

    Computed from ranks (Mann-Whitney U); tied scores take average ranks, so a
    tie between a positive and a negative counts one half. ``labels01`` holds
    0 (negative) and 1 (positive); both classes must be present.
    """
    lab = np.asarray(labels01).reshape(-1)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if lab.shape != s.shape:
        raise ValueError(f"roc_auc: labels and scores differ in length: {lab.size} vs {s.size}")
    if not np.all((lab == 0) | (lab == 1)):
        raise ValueError("roc_auc: labels must be 0 or 1")
    if not np.all(np.isfinite(s)):
        raise ValueError("roc_auc: scores must be finite")
    pos = lab == 1
    n_pos = int(pos.sum())
    n_neg = int(lab.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        raise ValueError(
            f"roc_auc: needs both classes, got {n_pos} positive and {n_neg} negative samples"
        )
    ranks = _average_ranks(s)
    u = ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def parity(reference: Any, candidate: Any) -> dict[str, float | None]:
    """How closely ``candidate`` outputs follow ``reference`` outputs (same shape).

    Both are taken in output units (dequantize int8 outputs first). With
    ``y`` = reference and ``yh`` = candidate, flattened where it says so:

    - ``argmax_agreement``: fraction of rows (all axes but the last) whose
      argmax over the last axis is equal; ``None`` for one-column or 1-D
      outputs (one value per row, e.g. forecasts), where argmax means nothing.
    - ``max_abs_err``: ``max |y - yh|``.
    - ``mean_abs_err``: ``mean |y - yh|``.
    - ``rmse``: ``sqrt(mean (y - yh)^2)``.
    - ``l2r``: relative L2 error ``||y - yh||_2 / ||y||_2`` (flattened); 0 when
      both are zero, ``None`` when only ``y`` is zero.
    - ``cosine``: ``<y, yh> / (||y||_2 ||yh||_2)`` (flattened); 1 when both are
      zero, ``None`` when only one is.
    """
    y = np.asarray(reference, dtype=np.float64)
    yh = np.asarray(candidate, dtype=np.float64)
    if y.shape != yh.shape:
        raise ValueError(f"parity: shapes differ: reference {y.shape}, candidate {yh.shape}")
    if y.size == 0:
        raise ValueError("parity: no values")
    if not (np.all(np.isfinite(y)) and np.all(np.isfinite(yh))):
        raise ValueError("parity: values must be finite")

    if y.ndim >= 2 and y.shape[-1] > 1:
        agree: float | None = float(np.mean(np.argmax(y, axis=-1) == np.argmax(yh, axis=-1)))
    else:
        agree = None

    d = (y - yh).reshape(-1)
    yf = y.reshape(-1)
    yhf = yh.reshape(-1)
    norm_d = float(np.linalg.norm(d))
    norm_y = float(np.linalg.norm(yf))
    norm_yh = float(np.linalg.norm(yhf))

    if norm_y > 0:
        l2r: float | None = norm_d / norm_y
    else:
        l2r = 0.0 if norm_d == 0 else None

    if norm_y > 0 and norm_yh > 0:
        cosine: float | None = float(np.clip(np.dot(yf, yhf) / (norm_y * norm_yh), -1.0, 1.0))
    else:
        cosine = 1.0 if norm_y == 0 and norm_yh == 0 else None

    return {
        "argmax_agreement": agree,
        "max_abs_err": float(np.max(np.abs(d))),
        "mean_abs_err": float(np.mean(np.abs(d))),
        "rmse": float(np.sqrt(np.mean(d * d))),
        "l2r": l2r,
        "cosine": cosine,
    }
