"""The data a search may see: the config's data set without its test groups.

:func:`load_without_test` loads the data set (the config's, or a bring-your-own
file) through ``train.data.registry`` and drops every test recording (and test
window) before anything else reads it: no trial, fold or report of the search
touches test data. Only :mod:`search.seeds`, after the choice, runs the stage
commands that read the test groups.

:func:`arrays` cuts the windows (classifier) or sequences (forecaster) of one
split of the remaining groups, normalized with the training part's statistics,
as the train stage does. The int16 windows of each (window, hop, split) are
cached in ``<study>/cache/`` so that trials of the same window length do not
cut them again.

:func:`folds` assigns the non-test groups to K folds: by subject when the data
set says which subject a recording belongs to (HAPT), else by recording;
stratified by each unit's most frequent label, round robin in sorted order. A
forecaster's single training series is cut into K contiguous blocks instead.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime import preprocess
from train.config import Config
from train.data import DataError, SensorData


def load_without_test(cfg: Config, data_path: str | None = None) -> SensorData:
    """The config's data set with the test groups removed (their recordings never read)."""
    from train.arrays import load_data

    data = load_data(cfg, data_path)
    test = set(data.split.get("test", []))
    keep = [r for r in data.recordings if r.group not in test]
    out = replace(data, recordings=keep, split={**data.split, "test": []})
    if data.windows is not None:
        mask = ~np.isin(np.asarray(data.window_groups).astype(str), sorted(test))
        out = replace(
            out,
            windows=data.windows[mask],
            window_labels=np.asarray(data.window_labels)[mask],
            window_groups=np.asarray(data.window_groups)[mask],
        )
    return out


@dataclass
class Arrays:
    """One split's training and validation arrays (what a trial trains and scores on)."""

    task: str  # "classification" | "forecast"
    window: int
    hop: int
    scale: np.ndarray  # (C,) physical units per count
    mean: np.ndarray  # (C,) training statistics
    std: np.ndarray
    x_train: np.ndarray  # normalized float32: (N, T, C) windows or sequences
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    counts_val: np.ndarray  # classifier: (N, T, C) int16 validation windows
    n_outputs: int
    labels: list[str]
    augment: dict[str, Any] | None = None
    class_weight: dict[int, float] | None = None
    sample_weight: np.ndarray | None = None  # forecaster: warm-up steps weighted 0
    series: np.ndarray | None = None  # forecaster: (n, C) int16, the whole series scored
    val_mask: np.ndarray | None = None  # forecaster: (n,) bool, the validation samples
    split: dict[str, list[str]] | None = None

    @property
    def n_channels(self) -> int:
        return int(self.scale.shape[0])


def _cache_key(data: SensorData, window: int, hop: int, split: dict[str, list[str]]) -> str:
    text = json.dumps(
        {"sha": data.source_sha256, "window": window, "hop": hop,
         "train": sorted(split["train"]), "val": sorted(split["val"])},
        sort_keys=True,
    )  # fmt: skip
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _windows(
    data: SensorData, window: int, hop: int, split: dict[str, list[str]], cache: Path | None
) -> dict[str, np.ndarray]:
    from train.classify import make_windows

    path = None
    if cache is not None:
        path = cache / f"windows-{_cache_key(data, window, hop, split)}.npz"
        if path.is_file():
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
    view = replace(
        data, split={"train": list(split["train"]), "val": list(split["val"]), "test": []}
    )
    tr = make_windows(view, "train", window, hop)
    va = make_windows(view, "val", window, hop)
    out = {"train_counts": tr.counts, "train_y": tr.y, "val_counts": va.counts, "val_y": va.y}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{np.random.default_rng().integers(1 << 30)}.tmp.npz")
        np.savez(tmp, **out)
        tmp.replace(path)
    return out


def arrays(
    data: SensorData,
    cfg: Config,
    window: int,
    hop: int,
    split: dict[str, list[str]] | None = None,
    cache: Path | None = None,
) -> Arrays:
    """Normalized training and validation arrays of ``split`` (default: the config's)."""
    if "test" in (split or {}) and split["test"]:  # type: ignore[index]
        raise ValueError("a search split never has test groups")
    if data.task == "forecast":
        return _forecast_arrays(data, cfg, window, hop, split)
    from train.fit import augment_args, class_weights

    split = split or {"train": list(data.split["train"]), "val": list(data.split["val"])}
    w = _windows(data, window, hop, split, cache)
    scale = np.array([c.scale for c in data.channels])
    mean, std = preprocess.fit_normalization(w["train_counts"].reshape(-1, data.n_channels), scale)
    n_classes = len(data.label_names)
    cw = class_weights(w["train_y"], n_classes) if cfg.train.class_weights else None
    return Arrays(
        task="classification", window=window, hop=hop, scale=scale, mean=mean, std=std,
        x_train=preprocess.normalize(w["train_counts"], scale, mean, std),
        y_train=w["train_y"].astype(np.int64),
        x_val=preprocess.normalize(w["val_counts"], scale, mean, std),
        y_val=w["val_y"].astype(np.int64),
        counts_val=w["val_counts"].astype(np.int16),
        n_outputs=n_classes, labels=list(data.label_names),
        augment=augment_args(cfg.train, mean, std), class_weight=cw, split=split,
    )  # fmt: skip


def _forecast_arrays(
    data: SensorData, cfg: Config, window: int, hop: int, split: dict[str, list[str]] | None
) -> Arrays:
    """Sequences of the training series; ``split`` = {"fold": [k, K]} holds out block k of K."""
    from train.forecast import sequences

    recs = data.recordings_of("train")
    if len(recs) != 1:
        raise DataError(
            f"{data.source}: the forecaster expects one training series, found {len(recs)}"
        )
    series = recs[0].counts
    n = len(series)
    scale = np.array([c.scale for c in data.channels])
    val = np.zeros(n, bool)
    if split and "fold" in split:
        k, K = (int(v) for v in split["fold"])
        val[k * n // K : (k + 1) * n // K] = True
    else:
        n_val = int(round(n * float(cfg.data.get("val_fraction", 0.2))))
        val[n - n_val :] = True
    mean, std = preprocess.fit_normalization(series[~val], scale)
    u = preprocess.normalize(series, scale, mean, std)
    # Training sequences from each unbroken training stretch; validation sequences
    # over the held-out block with `window` samples of context before it.
    edges = np.flatnonzero(np.diff(np.concatenate([[0], (~val).astype(np.int8), [0]])))
    parts = [u[a:b] for a, b in zip(edges[::2], edges[1::2], strict=True) if b - a > window]
    if not parts:
        raise DataError(f"{data.source}: no training stretch longer than the window {window}")
    xs, ys = zip(*(sequences(p, window, hop) for p in parts), strict=True)
    v0, v1 = int(np.flatnonzero(val)[0]), int(np.flatnonzero(val)[-1]) + 1
    ctx = u[max(0, v0 - window) : min(n, v1 + 1)]
    x_va, y_va = sequences(ctx, min(window, len(ctx) - 1), hop)
    x_tr, y_tr = np.concatenate(xs), np.concatenate(ys)
    weight = np.ones(y_tr.shape[:2], np.float32)
    weight[:, : cfg.train.warmup] = 0.0
    return Arrays(
        task="forecast", window=window, hop=hop, scale=scale, mean=mean, std=std,
        x_train=x_tr, y_train=y_tr, x_val=x_va, y_val=y_va,
        counts_val=np.zeros((0, window, data.n_channels), np.int16),
        n_outputs=data.n_channels, labels=list(data.label_names), sample_weight=weight,
        series=series.astype(np.int16), val_mask=val, split=split,
    )  # fmt: skip


def fold_units(data: SensorData) -> dict[str, str]:
    """Group -> the unit folds keep together (the subject when the data set names it)."""
    subject = data.notes.get("subject") if isinstance(data.notes, dict) else None
    groups = [*data.split["train"], *data.split["val"]]
    if isinstance(subject, dict) and all(g in subject for g in groups):
        return {g: f"subject {subject[g]}" for g in groups}
    return {g: g for g in groups}


def folds(data: SensorData, k: int) -> list[dict[str, list[str]]]:
    """K splits of the non-test groups: fold i validates on its units, trains on the rest."""
    if k < 2:
        raise ValueError(f"folds: expected K >= 2, found {k}")
    if data.task == "forecast":
        return [{"fold": [i, k]} for i in range(k)]  # type: ignore[list-item]
    units = fold_units(data)
    label_of: dict[str, int] = {}
    for u in sorted(set(units.values())):
        labels = []
        for g, uu in units.items():
            if uu != u:
                continue
            if data.windows is not None:
                labels.append(np.asarray(data.window_labels)[np.asarray(data.window_groups) == g])
            else:
                rec = next(r for r in data.recordings if r.group == g)
                labels.append(rec.labels[rec.labels >= 0])
        flat = np.concatenate(labels) if labels else np.zeros(0, np.int64)
        label_of[u] = int(np.bincount(flat.astype(np.int64)).argmax()) if flat.size else -1
    order = sorted(label_of, key=lambda u: (label_of[u], u))
    if len(order) < k:
        raise DataError(f"{data.source}: {len(order)} non-test units cannot make {k} folds")
    fold_of = {u: i % k for i, u in enumerate(order)}
    out = []
    for i in range(k):
        val = sorted(g for g, u in units.items() if fold_of[u] == i)
        train = sorted(g for g, u in units.items() if fold_of[u] != i)
        out.append({"train": train, "val": val})
    return out
