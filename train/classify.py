"""Activity recognition: windows → model selection on validation groups → float model."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from edge_runtime import metrics, preprocess
from train.config import Config
from train.data import DataError, SensorData
from train.fit import augment_args, fit_model, predict


@dataclass
class Split:
    counts: np.ndarray  # (N, T, C) int16
    y: np.ndarray  # (N,) int
    groups: np.ndarray  # (N,) str
    starts: np.ndarray  # (N,) window start sample within its recording


def make_windows(data: SensorData, part: str, window: int, hop: int) -> Split:
    """Label-pure windows of one split part (windows from bring-your-own .npz as given)."""
    if data.windows is not None:
        keep = np.isin(data.window_groups, data.split[part])
        return Split(
            data.windows[keep],
            np.asarray(data.window_labels)[keep].astype(np.int64),
            np.asarray(data.window_groups)[keep].astype(str),
            np.zeros(int(keep.sum()), np.int64),
        )
    xs, ys, gs, ss = [], [], [], []
    for rec in data.recordings_of(part):
        starts, x, y = preprocess.windows(rec.counts, rec.labels, window, hop)
        xs.append(x)
        ys.append(y)
        gs.append(np.full(len(y), rec.group))
        ss.append(starts)
    if not xs or sum(len(y) for y in ys) == 0:
        raise DataError(
            f"{data.source}: no complete label-pure window of {window} samples in '{part}'"
        )
    return Split(
        np.concatenate(xs).astype(np.int16),
        np.concatenate(ys).astype(np.int64),
        np.concatenate(gs).astype(str),
        np.concatenate(ss).astype(np.int64),
    )


def split_windows(data: SensorData, window: int, hop: int) -> dict[str, Split]:
    """The windows of every split part: ``{"train", "val", "test"}``.

    Refuses data a classifier cannot learn or be judged on: fewer than 2 classes, or a
    class without a window in the training or the validation part (model selection,
    early stopping and pruning compare macro-F1 on validation).
    """
    names = list(data.label_names)
    if len(names) < 2:
        raise DataError(
            f"{data.source}: {len(names)} class ({names}); a classifier needs at least 2 "
            f"(for anomaly data set the config's [model] head = 'forecast')"
        )
    parts = {part: make_windows(data, part, window, hop) for part in ("train", "val", "test")}
    for part in ("train", "val"):
        missing = sorted(set(range(len(names))) - set(parts[part].y.tolist()))
        if missing:
            raise DataError(
                f"{data.source}: the {part} part (groups {data.split[part]}) has no window of "
                f"class(es) {[names[i] for i in missing]}; expected every class in train and "
                f"val (more groups, or a 'split' array that puts each class in both)"
            )
    return parts


def evaluate(probs: np.ndarray, y: np.ndarray, n_classes: int) -> dict:
    pred = probs.argmax(axis=1)
    return {
        "accuracy": metrics.accuracy(y, pred),
        "macro_f1": metrics.macro_f1(y, pred, n_classes),
        "per_class_f1": [float(v) for v in metrics.per_class_f1(y, pred, n_classes)],
        "confusion": metrics.confusion_matrix(y, pred, n_classes).tolist(),
        "n": int(len(y)),
    }


SKILL_P = 0.05  # a validation accuracy this likely under the majority-class guess is chance


def skill(y_train: np.ndarray, y_val: np.ndarray, val_accuracy: float) -> dict:
    """Is the validation accuracy better than always guessing the most frequent training
    class? One-sided binomial test: the chance that a guesser right with that class's
    validation share ``p0`` gets at least as many of the ``n`` windows right. ``at_chance``
    when that chance is ``SKILL_P`` or more (or the accuracy is not above ``p0`` at all)."""
    n = int(len(y_val))
    classes, counts = np.unique(np.asarray(y_train), return_counts=True)
    major = int(classes[int(np.argmax(counts))])
    p0 = float(np.mean(np.asarray(y_val) == major)) if n else 0.0
    k = int(round(val_accuracy * n))
    if n == 0 or p0 >= 1.0:
        p_value = 1.0
    elif p0 <= 0.0:
        p_value = 0.0 if k > 0 else 1.0
    else:  # P(X >= k), X ~ Binomial(n, p0), summed in log space (n can be thousands)
        terms = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1)
                 + i * math.log(p0) + (n - i) * math.log1p(-p0) for i in range(k, n + 1)]  # fmt: skip
        top = max(terms)
        p_value = min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))
    at_chance = bool(p_value >= SKILL_P or val_accuracy <= p0)
    return {
        "val_windows": n,
        "val_correct": k,
        "majority_class": major,
        "majority_val_share": p0,
        "p_value": p_value,
        "at_chance": at_chance,
        "test": f"one-sided binomial: P(at least {k} of {n} right | p = {p0:.3f}), "
        f"chance when >= {SKILL_P}",
        "warning": None
        if not at_chance
        else f"the model is not better than chance on validation: {k} of {n} windows right "
        f"({100 * val_accuracy:.1f} %) against {100 * p0:.1f} % for always guessing class "
        f"{major} (p = {p_value:.2f}); its test and device figures measure noise",
    }


def train_classifier(cfg: Config, data: SensorData, seeds: list[int] | None = None) -> dict:
    """Select a model on validation groups, train it, evaluate once on test groups.

    Returns everything the bundle needs: model, normalization, windows, metrics, logs.
    """
    scale = np.array([c.scale for c in data.channels])
    parts = split_windows(data, cfg.window, cfg.hop)
    tr, va, te = parts["train"], parts["val"], parts["test"]
    mean, std = preprocess.fit_normalization(tr.counts.reshape(-1, data.n_channels), scale)

    def norm(s: Split) -> np.ndarray:
        return preprocess.normalize(s.counts, scale, mean, std)

    x_tr, x_va, x_te = norm(tr), norm(va), norm(te)
    n_classes = len(data.label_names)
    augment = augment_args(cfg.train, mean, std)

    # Model selection: candidates scored on validation groups only.
    selection: list[dict] = []
    overrides: dict = {}
    trained: dict[str, tuple] = {}  # candidate name -> (model, history), reused when selected
    if cfg.select_enabled:
        for cand in cfg.candidates:
            mcfg = cfg.model_config(data.n_channels, n_classes, cand.model)
            t0 = time.perf_counter()
            model, hist = fit_model(
                mcfg, cfg.train, x_tr, tr.y, x_va, va.y, desc=f"select {cand.name}", augment=augment
            )
            val = evaluate(predict(model, x_va), va.y, n_classes)
            trained[cand.name] = (model, hist, time.perf_counter() - t0)
            selection.append(
                {
                    "name": cand.name,
                    "model": mcfg.to_dict(),
                    "params": int(model.count_params()),
                    "val_accuracy": val["accuracy"],
                    "val_macro_f1": val["macro_f1"],
                    "epochs_run": hist["epochs_run"],
                    "seconds": round(time.perf_counter() - t0, 1),
                }
            )
            print(
                f"  candidate {cand.name:14s} val acc {val['accuracy']:.4f} "
                f"macro-F1 {val['macro_f1']:.4f} ({selection[-1]['seconds']} s)"
            )
        best = max(selection, key=lambda s: s[cfg.select_metric])
        best["selected"] = True
        overrides = next(c.model for c in cfg.candidates if c.name == best["name"])
        chosen = best["name"]
    else:
        chosen = None
    mcfg = cfg.model_config(data.n_channels, n_classes, overrides)

    runs = []
    final = None
    for seed in seeds or [cfg.train.seed]:
        settings = type(cfg.train)(**{**cfg.train.__dict__, "seed": seed})
        if chosen is not None and seed == cfg.train.seed:
            # Training is deterministic: the selected candidate is this very run.
            model, hist, seconds = trained[chosen]
        else:
            t0 = time.perf_counter()
            model, hist = fit_model(
                mcfg, settings, x_tr, tr.y, x_va, va.y, desc=f"train seed {seed}", augment=augment
            )
            seconds = time.perf_counter() - t0
        p_te = predict(model, x_te)
        run = {
            "seed": seed,
            "seconds": round(seconds, 1),
            "history": hist,
            "val": evaluate(predict(model, x_va), va.y, n_classes),
            "test": evaluate(p_te, te.y, n_classes),
        }
        runs.append(run)
        print(
            f"  seed {seed}: test acc {run['test']['accuracy']:.4f} "
            f"macro-F1 {run['test']['macro_f1']:.4f} ({run['seconds']} s, "
            f"{hist['epochs_run']} epochs)"
        )
        if final is None:
            final = (model, p_te)
    model, p_te = final
    return {
        "model": model,
        "model_config": mcfg,
        "mean": mean,
        "std": std,
        "scale": scale,
        "train": tr,
        "val": va,
        "test": te,
        "test_probs": p_te,
        "x_test": x_te,
        "runs": runs,
        "selection": selection,
        "n_windows": {"train": len(tr.y), "val": len(va.y), "test": len(te.y)},
    }
