"""The prune stage on a bundle: ``python -m quantize prune --bundle B``.

``model_float.keras`` → ``model_pruned.keras`` by :func:`quantize.prune.prune_model`
on the arrays the model was trained on (:func:`train.arrays.training_arrays`);
writes ``reports/prune.json`` (the prune report, validation and test metric of the
dense and the pruned model, the sweep rows) and the manifest's ``sparsity``
section; with a sweep also ``reports/prune_sweep.png`` (test metric vs sparsity,
one line per granularity). Test data is used for reporting only, never for a choice.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import keras
import numpy as np

from edge_runtime import contract, metrics
from edge_runtime.bundle import Bundle, stage_writer
from quantize.bundle_io import StageError, load_keras, open_bundle
from quantize.prune import (
    GRANULARITIES,
    PruneSettings,
    is_classifier,
    manifest_section,
    prune_model,
    sparsity_report,
)
from train.arrays import TrainingArrays, training_arrays
from train.fit import configure_tf

SWEEP_PNG = "reports/prune_sweep.png"


def prune(
    bundle_dir: str | os.PathLike[str],
    *,
    sparsity: float = 0.75,
    granularity: str = "weight",
    sweep: list[float] | None = None,
    sweep_granularities: list[str] | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    learning_rate: float | None = None,
    frequency: int | None = None,
    finetune_learning_rate: float | None = None,
    patience: int | None = None,
    distill: float | None = None,
    temperature: float | None = None,
    augment: bool = True,
    seed: int = 0,
    data_path: str | None = None,
) -> dict[str, Any]:
    """``model_float.keras`` → ``model_pruned.keras``; returns the manifest's ``sparsity``.

    The batch size defaults to the one the train stage used (its config is in
    the manifest); the other settings left None default to :class:`PruneSettings`.
    """
    b = open_bundle(bundle_dir)
    b.path(contract.FLOAT_MODEL)
    if batch_size is None:
        batch_size = b.manifest["stages"]["train"]["config"].get("train", {}).get("batch_size")
    optional = {
        "epochs": epochs,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "frequency": frequency,
        "finetune_learning_rate": finetune_learning_rate,
        "patience": patience,
        "distill": distill,
        "temperature": temperature,
    }
    kw = {"target": float(sparsity), "granularity": granularity, "seed": seed, "augment": augment}
    kw.update({k: v for k, v in optional.items() if v is not None})
    try:
        settings = PruneSettings(**kw)
    except ValueError as e:
        raise StageError(str(e)) from None
    if sweep and any(not 0.0 <= s < 1.0 for s in sweep):
        raise StageError(f"--sweep: every sparsity must lie in [0, 1), found {sweep}")
    grans = tuple(sweep_granularities) if sweep_granularities else None
    run(bundle_dir, settings, sweep_targets=sweep or None, sweep_granularities=grans,
        data_path=data_path)  # fmt: skip
    return Bundle.open(bundle_dir).manifest.get("sparsity", {})


def run(
    bundle_dir: str | Path,
    settings: PruneSettings,
    *,
    sweep_targets: list[float] | None = None,
    sweep_granularities: tuple[str, ...] | None = None,
    data_path: str | None = None,
    model_file: str = contract.FLOAT_MODEL,
) -> Path:
    """The prune stage with ``settings``: ``model_file`` of a bundle → ``model_pruned.keras``.

    ``sweep_targets`` also prunes at these sparsities, for each of
    ``sweep_granularities`` (default: the one of ``settings``), and plots them.
    """
    configure_tf()  # before TensorFlow starts: thread budget and deterministic kernels
    b = Bundle.open(bundle_dir)
    d = training_arrays(b, data_path)
    model = load_keras(b, model_file)
    pruned, report = prune_model(model, settings, *_fit_arrays(d), **_weights(d))
    metric = "accuracy" if is_classifier(model) else "mae"
    report["metrics"] = {
        "metric": metric,
        "dense": _val_test(model, d, metric),
        "pruned": _val_test(pruned, d, metric),
    }
    grans = sweep_granularities or (settings.granularity,)
    rows = None
    if sweep_targets:
        rows = sweep(
            model, sweep_targets, settings, *_fit_arrays(d), d.x_test, d.y_test,
            granularities=grans, done=(pruned, report), **_weights(d),
        )  # fmt: skip
        report["sweep"] = rows
    config = {"prune": settings.to_dict(), "source_model": model_file, "sweep": sweep_targets}
    if sweep_targets:
        config["sweep_granularities"] = list(grans)
    _write(bundle_dir, config, pruned, report, settings, rows)
    return Path(bundle_dir)


def _fit_arrays(d: TrainingArrays) -> tuple[np.ndarray, ...]:
    return d.x_train, d.y_train, d.x_val, d.y_val


def _weights(d: TrainingArrays) -> dict[str, Any]:
    return {"sample_weight": d.sample_weight, "class_weight": d.class_weight, "augment": d.augment}


def _val_test(model: keras.Model, d: TrainingArrays, metric: str) -> dict[str, float]:
    return {
        "val": evaluate(model, d.x_val, d.y_val)[metric],
        "test": evaluate(model, d.x_test, d.y_test)[metric],
    }


def _write(
    bundle_dir: str | Path,
    config: dict[str, Any],
    pruned: keras.Model,
    report: dict[str, Any],
    settings: PruneSettings,
    rows: list[dict[str, Any]] | None,
) -> None:
    """``model_pruned.keras``, ``reports/prune.json``, the sweep plot and ``sparsity``."""
    with stage_writer(bundle_dir, "prune", config=config) as w:
        import tensorflow as tf

        w.versions.update({"tensorflow": tf.__version__, "keras": keras.__version__})
        pruned.save(w.dir / contract.PRUNED_MODEL)
        w.add_file(contract.PRUNED_MODEL)
        section = manifest_section(report, settings, contract.PRUNED_MODEL)
        section["metrics"] = report["metrics"]
        w.manifest["sparsity"] = section
        w.write_json("reports/prune.json", report)
        if rows:
            title = f"{w.manifest['name']}: test {report['metrics']['metric']} vs sparsity"
            sweep_png(w.dir / SWEEP_PNG, rows, "test", f"{title} (pruned + fine-tuned)")
            w.add_file(SWEEP_PNG)


def evaluate(model: keras.Model, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Accuracy for a classifier; mean absolute forecast error (model units) otherwise."""
    out = np.concatenate(
        [np.asarray(model(x[i : i + 256], training=False)) for i in range(0, len(x), 256)]
    )
    if is_classifier(model):
        return {"accuracy": metrics.accuracy(np.asarray(y), out.argmax(axis=1))}
    return {"mae": float(np.mean(np.abs(out - np.asarray(y))))}


def sweep(
    model: keras.Model,
    targets: list[float],
    settings: PruneSettings,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    granularities: tuple[str, ...] = GRANULARITIES,
    sample_weight: np.ndarray | None = None,
    class_weight: dict[int, float] | None = None,
    *,
    augment: dict[str, Any] | None = None,
    progress: bool = True,
    done: tuple[keras.Model, dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Prune at every target and granularity; validation and test metric per run.

    The first row is the dense model as given (``granularity "dense"``, target 0);
    a target of 0 is not re-trained (it is that row). Each other row:
    ``granularity, target, achieved, metric, val, test, epochs_run``. ``done`` is
    the (pruned model, report) already trained with ``settings``: pruning is
    deterministic, so that point is taken from it instead of being trained again.
    """
    metric = "accuracy" if is_classifier(model) else "mae"

    def row(gran: str, target: float, m: keras.Model, achieved: float, epochs: int) -> dict:
        return {
            "granularity": gran,
            "target": target,
            "achieved": achieved,
            "metric": metric,
            "val": evaluate(m, x_val, y_val)[metric],
            "test": evaluate(m, x_test, y_test)[metric],
            "epochs_run": epochs,
        }

    rows = [row("dense", 0.0, model, sparsity_report(model)["overall"], 0)]
    fit = (x_train, y_train, x_val, y_val)
    weights = {"sample_weight": sample_weight, "class_weight": class_weight, "augment": augment}
    for gran in granularities:
        for target in (t for t in targets if t > 0):
            s = PruneSettings(
                **{**settings.to_dict(), "target": float(target), "granularity": gran}
            )
            if done is not None and s == settings:
                pruned, rep = done
            else:
                pruned, rep = prune_model(model, s, *fit, **weights, progress=progress)
            rows.append(row(gran, float(target), pruned, rep["overall"], rep["epochs_run"]))
    return rows


def sweep_png(
    path: str | Path, rows: list[dict[str, Any]], split: str = "test", title: str = ""
) -> None:
    """Metric vs achieved sparsity, one line per granularity, dense as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dense = next((r for r in rows if r["granularity"] == "dense"), None)
    metric = rows[0]["metric"] if rows else "accuracy"
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    grans = list(dict.fromkeys(r["granularity"] for r in rows if r["granularity"] != "dense"))
    for gran, marker in zip(grans, "os^vD", strict=False):
        pts = sorted((r["achieved"], r[split]) for r in rows if r["granularity"] == gran)
        if dense is not None:
            pts = [(dense["achieved"], dense[split]), *pts]
        xs, ys = zip(*pts, strict=True)
        ax.plot(np.array(xs) * 100, ys, marker=marker, label=gran)
    if dense is not None:
        ax.axhline(
            dense[split], color="k", ls="--", lw=0.9, label=f"dense float ({dense[split]:.3f})"
        )
    ax.set_xlabel("sparsity of the pruned kernels (%)")
    ax.set_ylabel(f"{split} {metric}")
    ax.set_title(title or f"{split} {metric} vs sparsity", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)
