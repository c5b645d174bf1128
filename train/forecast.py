"""Anomaly detection: a GRU next-sample forecaster; score = |forecast error| in sensor units."""

from __future__ import annotations

import time

import numpy as np

from edge_runtime import anomaly, preprocess
from train.config import Config
from train.data import DataError, Recording, SensorData
from train.fit import fit_model, predict


def sequences(u: np.ndarray, length: int, hop: int) -> tuple[np.ndarray, np.ndarray]:
    """Inputs u[s : s+L] and next-sample targets u[s+1 : s+L+1]; u is (n, C)."""
    starts = np.arange(0, len(u) - length, hop)
    x = np.stack([u[s : s + length] for s in starts])
    y = np.stack([u[s + 1 : s + length + 1] for s in starts])
    return x.astype(np.float32), y.astype(np.float32)


def series_parts(data: SensorData) -> tuple[list[np.ndarray], Recording]:
    """The anomaly-free training series (int16 counts, one per training part, in order)
    and the test recording."""
    train_recs = data.recordings_of("train")
    test_recs = data.recordings_of("test")
    if not train_recs or len(test_recs) != 1:
        raise DataError(
            f"{data.source}: the forecaster expects training series and one test series, "
            f"found {len(train_recs)} and {len(test_recs)}"
        )
    return [r.counts for r in train_recs], test_recs[0]


def fit_length(cfg: Config, n: int) -> int:
    """Samples of an n-sample training series that are fitted; the rest (the last
    ``val_fraction``) is the validation tail."""
    return n - int(round(n * float(cfg.data.get("val_fraction", 0.2))))


def fit_arrays(cfg: Config, us: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Training and validation sequences of the normalized training series ``us`` (each
    (n, C): its first :func:`fit_length` samples fitted, its tail validating), and the
    loss weights of the training targets (0 over the first ``warmup`` steps)."""
    length, hop = cfg.window, cfg.hop
    parts: dict[str, list[np.ndarray]] = {"x_train": [], "y_train": [], "x_val": [], "y_val": []}
    for u in us:
        n_fit = fit_length(cfg, len(u))
        if n_fit <= length or len(u) - n_fit < 1:
            raise DataError(
                f"{cfg.path}: a training part of {len(u)} samples leaves {n_fit} to fit and "
                f"{len(u) - n_fit} to validate with window {length} and val_fraction "
                f"{cfg.data.get('val_fraction', 0.2)}; expected more than one window of each"
            )
        x_tr, y_tr = sequences(u[:n_fit], length, hop)
        x_va, y_va = sequences(u[n_fit - length :], length, hop)
        for k, v in (("x_train", x_tr), ("y_train", y_tr), ("x_val", x_va), ("y_val", y_va)):
            parts[k].append(v)
    out = {k: np.concatenate(v) for k, v in parts.items()}
    w_tr = np.ones(out["y_train"].shape[:2], np.float32)
    w_tr[:, : cfg.train.warmup] = 0.0
    return {**out, "sample_weight": w_tr}


def val_max_score(model, us: list[np.ndarray], series: list[np.ndarray], cfg: Config,
                  scale: np.ndarray, mean: np.ndarray, std: np.ndarray) -> float:  # fmt: skip
    """The largest float score over the validation tails, each training series streamed
    from a zero state from its start (as a device would)."""
    best = 0.0
    for u, counts in zip(us, series, strict=True):
        f = stream_forecast(model, u) * std + mean
        s = anomaly.forecast_scores(counts * scale, f)
        best = max(best, float(s[fit_length(cfg, len(u)) :].max()))
    return best


def stream_forecast(model, u: np.ndarray) -> np.ndarray:
    """The model run once over a whole normalized series from a zero state: (n, C) forecasts."""
    return predict(model, u[None, :, :], batch_size=1)[0]


def train_forecaster(cfg: Config, data: SensorData, seeds: list[int] | None = None) -> dict:
    scale = np.array([c.scale for c in data.channels])
    series, test = series_parts(data)
    fitted = np.concatenate([s[: fit_length(cfg, len(s))] for s in series])
    mean, std = preprocess.fit_normalization(fitted, scale)
    us = [preprocess.normalize(s, scale, mean, std) for s in series]
    u_test = preprocess.normalize(test.counts, scale, mean, std)
    arrays = fit_arrays(cfg, us)
    x_tr, y_tr, x_va, y_va = (arrays[k] for k in ("x_train", "y_train", "x_val", "y_val"))
    w_tr = arrays["sample_weight"]
    mcfg = cfg.model_config(data.n_channels, data.n_channels)
    zone = int(cfg.data.get("zone", 100))
    # A stream starts from a zero state: its first `window` forecasts are a warm-up
    # (the model was trained on sequences of that length) and are not scored.
    warmup = cfg.window

    runs, final = [], None
    for seed in seeds or [cfg.train.seed]:
        settings = type(cfg.train)(**{**cfg.train.__dict__, "seed": seed})
        t0 = time.perf_counter()
        model, hist = fit_model(
            mcfg, settings, x_tr, y_tr, x_va, y_va, desc=f"train seed {seed}", sample_weight=w_tr
        )
        seconds = time.perf_counter() - t0
        # Threshold: the largest score on the anomaly-free validation tail, streamed
        # from a zero state over the whole training series (as a device would).
        val_max = val_max_score(model, us, series, cfg, scale, mean, std)
        threshold = float(cfg.threshold.get("factor", 1.0)) * val_max
        f_test = stream_forecast(model, u_test) * std + mean
        x_test = test.counts * scale
        scores = anomaly.forecast_scores(x_test, f_test)
        rep = anomaly.anomaly_report(
            scores, test.labels > 0, zone=zone, threshold=threshold, ignore_first=warmup
        )
        err = np.abs(x_test[1:] - f_test[:-1])
        rep["forecast_mae"] = float(err.mean())
        rep["forecast_max_abs_err"] = float(err.max())
        runs.append({"seed": seed, "seconds": round(seconds, 1), "history": hist, "test": rep})
        print(f"  seed {seed}: {anomaly.describe(rep)} ({round(seconds, 1)} s)")
        if final is None:
            final = (model, f_test, scores, threshold)
    model, f_test, scores, threshold = final
    base = anomaly.persistence_scores(test.counts * scale)
    baseline = anomaly.anomaly_report(base, test.labels > 0, zone=zone, ignore_first=warmup)
    return {
        "model": model,
        "model_config": mcfg,
        "mean": mean,
        "std": std,
        "scale": scale,
        "test_counts": test.counts,
        "test_labels": test.labels,
        "test_forecast": f_test.astype(np.float32),
        "test_scores": scores,
        "threshold": threshold,
        "baseline": baseline,
        "baseline_scores": base,
        "runs": runs,
        "selection": [],
        "n_windows": {"train": len(x_tr), "val": len(x_va), "test": 1},
        "n_fit": [fit_length(cfg, len(s)) for s in series],
        "warmup": warmup,
    }
