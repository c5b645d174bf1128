"""A bundle's training arrays, rebuilt as the train stage made them.

Later stages that train or calibrate (pruning, int8 calibration) need the arrays
the model was trained on: the same data set (checked by its sha256), the same
split, the normalization of the manifest, the same windows (classifier) or
sequences (forecaster), class weights, augmentation and loss weights. They are
rebuilt here with the train stage's own functions, from the bundle's manifest
and the raw data, so there is one way to make them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_runtime import preprocess
from edge_runtime.bundle import Bundle
from train.classify import split_windows
from train.config import Config, parse_config
from train.data import DataError, SensorData
from train.data.registry import load_dataset
from train.fit import augment_args, class_weights
from train.forecast import fit_arrays, fit_length, series_parts


@dataclass
class TrainingArrays:
    """Normalized inputs and targets of each split part, as the train stage fitted them.

    Classifier: windows ``(N, T, C)`` and labels ``(N,)``. Forecaster: training and
    validation sequences ``(N, L, C)`` with next-sample targets, and the whole test
    series as one sequence ``(1, n - 1, C)``.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    sample_weight: np.ndarray | None  # forecaster: 0 over each sequence's warm-up
    class_weight: dict[int, float] | None  # classifier with [train] class_weights
    augment: dict[str, Any] | None  # keyword arguments of train.fit.Augmented
    # Forecaster: the training series as int16 counts and how many samples of each are
    # fitted (the rest is its validation tail); None for a classifier.
    series: list[np.ndarray] | None = None
    n_fit: list[int] | None = None


def load_data(cfg: Config, data_path: str | None = None) -> SensorData:
    """The configured data set, or a bring-your-own file (``--data``), read as the task
    the config's head names; a mismatch is one line naming the config and the data."""
    from train.data.byo import SeriesSplit

    d = cfg.data
    series = SeriesSplit(
        train_end=d.get("train_end"),
        margin=int(d.get("margin", int(d.get("zone", 100)) + cfg.window)),
        window=cfg.window,
    )
    rate = d.get("sample_rate")
    try:
        return load_dataset(
            data_path or d.get("dataset", ""), window=cfg.window, task=cfg.task, series=series,
            sample_rate=None if rate is None else float(rate),
        )  # fmt: skip
    except DataError as e:
        if data_path is None and str(e).startswith("data set "):
            raise DataError(f"{cfg.path}: [data].dataset: {e}") from None
        raise


def training_arrays(b: Bundle, data_path: str | None = None) -> TrainingArrays:
    """Rebuild the arrays the bundle's model was trained on (test arrays for reporting).

    ``data_path`` is the bring-your-own file the bundle was trained on, if any.
    """
    m = b.manifest
    cfg = parse_config(m["stages"]["train"]["config"], b.root / "manifest.json")
    data = load_data(cfg, data_path)
    if data.source_sha256 != m["dataset"]["sha256"]:
        raise DataError(
            f"{b.root}: data set sha256 {data.source_sha256} differs from the one the "
            f"bundle was trained on ({m['dataset']['sha256']})"
        )
    scale = np.array([c["scale"] for c in m["dataset"]["channels"]])
    mean, std = np.asarray(m["preprocess"]["mean"]), np.asarray(m["preprocess"]["std"])
    if m["task"] == "classification":
        return _classifier(cfg, data, scale, mean, std, len(m["labels"]))
    return _forecaster(cfg, data, scale, mean, std)


def _classifier(
    cfg: Config,
    data: SensorData,
    scale: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    n_classes: int,
) -> TrainingArrays:
    parts = split_windows(data, cfg.window, cfg.hop)
    x = {p: preprocess.normalize(s.counts, scale, mean, std) for p, s in parts.items()}
    cw = class_weights(parts["train"].y, n_classes) if cfg.train.class_weights else None
    return TrainingArrays(
        x_train=x["train"],
        y_train=parts["train"].y,
        x_val=x["val"],
        y_val=parts["val"].y,
        x_test=x["test"],
        y_test=parts["test"].y,
        sample_weight=None,
        class_weight=cw,
        augment=augment_args(cfg.train, mean, std),
    )


def _forecaster(
    cfg: Config, data: SensorData, scale: np.ndarray, mean: np.ndarray, std: np.ndarray
) -> TrainingArrays:
    series, test = series_parts(data)
    us = [preprocess.normalize(s, scale, mean, std) for s in series]
    u_test = preprocess.normalize(test.counts, scale, mean, std)
    fit = fit_arrays(cfg, us)
    return TrainingArrays(
        **fit,
        x_test=u_test[None, :-1].astype(np.float32),
        y_test=u_test[None, 1:].astype(np.float32),
        class_weight=None,
        augment=None,
        series=series,
        n_fit=[fit_length(cfg, len(s)) for s in series],
    )
