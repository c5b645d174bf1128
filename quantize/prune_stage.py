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
from quantize.prune_points import default_jobs, fit_arrays, fit_weights, train_points
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
    pruned, report = prune_model(model, settings, *fit_arrays(d), **fit_weights(d))
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
            model, sweep_targets, settings, *fit_arrays(d), d.x_test, d.y_test,
            granularities=grans, done=(pruned, report), **fit_weights(d),
        )  # fmt: skip
        report["sweep"] = rows
    config = {"prune": settings.to_dict(), "source_model": model_file, "sweep": sweep_targets}
    if sweep_targets:
        config["sweep_granularities"] = list(grans)
    _write(bundle_dir, config, pruned, report, settings, rows)
    return Path(bundle_dir)


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
    choice: dict[str, Any] | None = None,
) -> None:
    """``model_pruned.keras``, ``reports/prune.json``, the sweep plot and ``sparsity``."""
    with stage_writer(bundle_dir, "prune", config=config) as w:
        import tensorflow as tf

        w.versions.update({"tensorflow": tf.__version__, "keras": keras.__version__})
        pruned.save(w.dir / contract.PRUNED_MODEL)
        w.add_file(contract.PRUNED_MODEL)
        section = manifest_section(report, settings, contract.PRUNED_MODEL)
        section["metrics"] = report["metrics"]
        if choice is not None:
            section.update(deployed="pruned", why=choice["why"], choice=choice)
        w.manifest["sparsity"] = section
        w.write_json("reports/prune.json", report)
        if rows:
            title = f"{w.manifest['name']}: test {report['metrics']['metric']} vs sparsity"
            sweep_png(w.dir / SWEEP_PNG, rows, "test", f"{title} (pruned + fine-tuned)", choice)
            w.add_file(SWEEP_PNG)


def outputs(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """The model's outputs on ``x`` in batches of 256, through Keras' compiled predict:
    equal to the last bit to calling the model eagerly (HAPT test windows and the KDD-TSAD
    135 test series, measured), 5x faster on windows and 50x on a 7,500-step series."""
    return np.asarray(model.predict(x, batch_size=256, verbose=0))


def evaluate(model: keras.Model, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Accuracy for a classifier; mean absolute forecast error (model units) otherwise."""
    return metric_of(model, outputs(model, x), y)


def metric_of(model: keras.Model, out: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """:func:`evaluate` of outputs already computed."""
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
    path: str | Path,
    rows: list[dict[str, Any]],
    split: str = "test",
    title: str = "",
    choice: dict[str, Any] | None = None,
) -> None:
    """Metric vs achieved sparsity, one line per granularity, dense as a dashed line; with a
    ``choice``, a second panel: the validation score, the budget line and the chosen point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if not r.get("skipped")]
    dense = next((r for r in rows if r["granularity"] == "dense"), None)
    metric = rows[0]["metric"] if rows else "accuracy"
    if choice is not None and all("val_score" in r for r in rows):
        fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=100)
        choice_panel(bx, rows, choice)
    else:
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


# --------------------------------------------------------------------------- choice by budget

# Default budgets: a classifier may lose 1 point of validation macro-F1; a forecaster's
# validation forecast error (MAE) may grow by 10 %. A forecaster's validation part is
# anomaly-free by construction, so its margin and AUCs cannot be measured there.
DEFAULT_MAX_VAL_DROP = {"classification": 1.0, "forecast": 10.0}
SCORE_NAMES = {
    "classification": "validation macro-F1 (points)",
    "forecast": "validation forecast error increase (%)",
}


def val_score(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    """A classifier's validation macro-F1 in points (0-100); a forecaster's validation MAE."""
    return score_of(model, outputs(model, x), y)


def score_of(model: keras.Model, out: np.ndarray, y: np.ndarray) -> float:
    """:func:`val_score` of outputs already computed."""
    if is_classifier(model):
        k = int(out.shape[-1])
        return 100.0 * metrics.macro_f1(np.asarray(y), out.argmax(axis=1), k)
    return float(np.mean(np.abs(out - np.asarray(y))))


def drop_of(task: str, dense: float, point: float) -> float:
    """How much worse ``point`` is than ``dense``: macro-F1 points lost, or % more error."""
    if task == "classification":
        return dense - point
    return 100.0 * (point - dense) / dense if dense > 0 else 0.0


def weight_bytes(model: keras.Model) -> int:
    """int8 bytes of the model's nonzero kernel weights plus 4 per bias: an estimate of the
    model data a target's flash must hold (the export measures it exactly)."""
    total = 0
    for layer in model.layers:
        for w in layer.weights:
            v = np.asarray(w)
            total += int(np.count_nonzero(v)) if "kernel" in w.path else 4 * v.size
    return total


def choose(
    bundle_dir: str | Path,
    settings: PruneSettings,
    sweep_targets: list[float],
    *,
    max_val_drop: float | None = None,
    target_file: str | None = None,
    data_path: str | None = None,
    jobs: int | None = None,
) -> dict[str, Any]:
    """Deploy the sparsest sweep point whose validation score stays within
    ``max_val_drop`` of the dense model's and whose model fits the target's flash.

    Points are tried from the sparsest down, ``jobs`` at a time side by side (default:
    one per CPU core, :mod:`quantize.prune_points`); the first that qualifies is
    deployed and denser ones not yet trained are skipped (none of them could be
    chosen). When none qualifies, the dense model is deployed: ``model_pruned.keras``
    is removed and the manifest's ``sparsity`` section and ``reports/prune.json`` say
    why. Test data is evaluated for the report only, never for the choice.
    """
    from edge_runtime.targets import load_target

    configure_tf()
    b = Bundle.open(bundle_dir)
    d = training_arrays(b, data_path)
    model = load_keras(b, contract.FLOAT_MODEL)
    task = "classification" if is_classifier(model) else "forecast"
    budget = DEFAULT_MAX_VAL_DROP[task] if max_val_drop is None else float(max_val_drop)
    target = load_target(target_file) if target_file else None
    metric = "accuracy" if task == "classification" else "mae"
    dense_score = val_score(model, d.x_val, d.y_val)
    dense_bytes = weight_bytes(model)

    def row(gran: str, t: float, m: keras.Model, achieved: float, epochs: int) -> dict:
        out_val = outputs(m, d.x_val)  # one pass feeds the score and the validation metric
        score = score_of(m, out_val, d.y_val)
        nbytes = weight_bytes(m)
        fits = target is None or nbytes <= target.flash_bytes
        drop = drop_of(task, dense_score, score)
        return {"granularity": gran, "target": t, "achieved": achieved, "metric": metric,
                "val": metric_of(m, out_val, d.y_val)[metric],
                "test": evaluate(m, d.x_test, d.y_test)[metric],
                "epochs_run": epochs, "val_score": score, "val_drop": drop,
                "weight_bytes": nbytes, "fits_target": fits,
                "qualifies": fits and drop <= budget}  # fmt: skip

    rows = [row("dense", 0.0, model, sparsity_report(model)["overall"], 0)]
    chosen: tuple[keras.Model, dict[str, Any], PruneSettings, dict[str, Any]] | None = None
    order = sorted((t for t in set(sweep_targets) if t > 0), reverse=True)
    jobs = default_jobs() if jobs is None else jobs
    if jobs < 1:
        raise StageError(f"jobs: expected 1 or more, found {jobs}")
    for start in range(0, len(order), jobs):
        batch = [PruneSettings(**{**settings.to_dict(), "target": float(t)})
                 for t in order[start : start + jobs]]  # fmt: skip
        points = train_points(bundle_dir, model, d, batch, jobs=jobs, data_path=data_path)
        for s, (pruned, rep) in zip(batch, points, strict=True):
            r = row(s.granularity, s.target, pruned, rep["overall"], rep["epochs_run"])
            rows.append(r)
            print(f"[quantize] prune: {100 * s.target:.0f}% {s.granularity}: "
                  f"{SCORE_NAMES[task]} drop {r['val_drop']:.2f} (budget {budget:g}), "
                  f"~{r['weight_bytes']:,} B of weights"
                  f"{'' if r['fits_target'] else ' (over the target flash)'}"
                  f" -> {'deploy' if r['qualifies'] and chosen is None else 'no'}")  # fmt: skip
            if r["qualifies"] and chosen is None:
                chosen = (pruned, rep, s, r)
        if chosen is not None:
            rows += [{"granularity": settings.granularity, "target": float(u), "skipped": True}
                     for u in order[start + jobs :]]  # fmt: skip
            break
    trained = [r for r in rows[1:] if not r.get("skipped")]
    if chosen is not None:
        c = chosen[3]
        why = (f"the sparsest point within the budget: {SCORE_NAMES[task]} drop "
               f"{c['val_drop']:.2f} <= {budget:g}"
               + ("" if target is None else f" and ~{c['weight_bytes']:,} B "
                  f"of weights within the {target.name} flash budget {target.flash_bytes:,} B")
               + (f"; denser points {[r['target'] for r in rows if r.get('skipped')]} not "
                  "trained, a sparser one qualified" if any(r.get("skipped") for r in rows)
                  else ""))  # fmt: skip
    else:
        reasons = [f"{100 * r['target']:.0f}%: "
                   + ("over the target flash" if not r["fits_target"]
                      else f"drop {r['val_drop']:.2f} > {budget:g}") for r in trained]  # fmt: skip
        why = (f"dense deployed: no pruned point qualifies ({'; '.join(reasons) or 'no sweep'})"
               + ("" if target is None or dense_bytes <= target.flash_bytes
                  else f"; the dense model (~{dense_bytes:,} B) is over the target flash too"))  # fmt: skip
    n_val = len(d.y_val)
    coarse = task == "classification" and n_val > 0 and 100.0 / n_val > budget
    if coarse:  # one window moves the score by more than the budget: say it, do not hide it
        why += (f"; warning: validation has {n_val} windows, one window is worth ~"
                f"{100.0 / n_val:.1f} points (> {budget:g}), so the choice cannot see a "
                "smaller loss: check the test figures or give a larger validation part")  # fmt: skip
    choice = {
        "score": SCORE_NAMES[task],
        "dense_val_score": dense_score,
        "val_windows": n_val,
        "val_too_small": coarse,
        "max_val_drop": budget,
        "target": None if target is None else target.to_dict(),
        "order": "sparsest first; the first qualifying point is deployed",
        "chosen": None
        if chosen is None
        else {"target": chosen[2].target, "achieved": chosen[1]["overall"]},  # fmt: skip
        "why": why,
    }
    print(f"[quantize] prune: {why}")
    config = {"prune": settings.to_dict(), "source_model": contract.FLOAT_MODEL,
              "sweep": order, "choose": {"max_val_drop": budget, "target": target_file}}  # fmt: skip
    if chosen is None:
        _write_dense(bundle_dir, config, rows, choice)
    else:
        pruned, report, s, _ = chosen
        # the sweep rows hold both models' figures already (rows[0]: the dense model)
        report["metrics"] = {"metric": metric,
                             **{k: {"val": r["val"], "test": r["test"]}
                                for k, r in (("dense", rows[0]), ("pruned", chosen[3]))}}  # fmt: skip
        report["sweep"] = rows
        report["choice"] = choice
        _write(bundle_dir, config, pruned, report, s, rows, choice)
    return choice


def _write_dense(
    bundle_dir: str | Path, config: dict[str, Any], rows: list[dict], choice: dict[str, Any]
) -> None:
    """No pruned point qualified: the dense model is deployed, and the bundle says why."""
    with stage_writer(bundle_dir, "prune", config=config) as w:
        if w.manifest["artifacts"].get(contract.PRUNED_MODEL):
            w.remove(contract.PRUNED_MODEL)
        w.manifest["sparsity"] = {"deployed": "dense", "why": choice["why"], "choice": choice}
        w.write_json("reports/prune.json", {"sweep": rows, "choice": choice})
        title = f"{w.manifest['name']}: validation score vs sparsity"
        sweep_png(w.dir / SWEEP_PNG, rows, "test", title, choice)
        w.add_file(SWEEP_PNG)


def choice_panel(ax: Any, rows: list[dict[str, Any]], choice: dict[str, Any]) -> None:
    """Validation score vs sparsity with the budget line and the chosen point."""
    pts = sorted((r["achieved"], r["val_score"]) for r in rows)
    xs, ys = zip(*pts, strict=True)
    ax.plot(np.array(xs) * 100, ys, marker="o", color="tab:blue", label="validation")
    dense = choice["dense_val_score"]
    classifier = choice["score"].startswith("validation macro-F1")
    line = (
        dense - choice["max_val_drop"] if classifier else dense * (1 + choice["max_val_drop"] / 100)
    )
    ax.axhline(line, color="tab:red", ls="--", lw=0.9,
               label=f"budget: max drop {choice['max_val_drop']:g}")  # fmt: skip
    c = choice.get("chosen")
    if c is not None:
        y = next(r["val_score"] for r in rows if abs(r["achieved"] - c["achieved"]) < 1e-9)
        ax.plot([100 * c["achieved"]], [y], marker="*", ms=14, color="tab:red", ls="none",
                label="chosen")  # fmt: skip
    else:
        ax.plot([0.0], [dense], marker="*", ms=14, color="tab:red", ls="none",
                label="chosen: dense")  # fmt: skip
    ax.set_xlabel("sparsity of the pruned kernels (%)")
    ax.set_ylabel("validation macro-F1 (%)" if classifier else "validation MAE")
    ax.set_title("the choice, on validation data", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
