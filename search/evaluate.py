"""One candidate, start to finish: train, prune, int8, score on validation, device cost.

The recipe is the stages' own, in process and with the search's epoch caps:

1. ``train.fit.fit_model`` (the config's training settings; epochs, patience and
   learning rate from the search), with a per-epoch report of the float model's
   validation score (macro-F1, or minus the validation loss of a forecaster) to
   the search's pruner;
2. ``quantize.prune.prune_model`` when the candidate is sparse (the prune
   stage's defaults: cubic ramp, fine-tuning, distillation; epochs capped);
3. ``quantize.convert.calibration_pairs`` + ``convert_step`` (state on 1/128,
   the int8 stage's settings), converted in this process, and the purity check;
4. a small trial bundle (manifest, ``step_int8.tflite``; no test data) exported
   by ``firmware_export.export`` into C;
5. the validation score of the int8 step chain as it ships: the exported C
   engine built for this host (bit-identical to TFLM, checked by the engine
   stage) on the validation windows from their int16 counts (classifier:
   macro-F1 of the last step's head; forecaster: mean absolute forecast error
   in sensor units on the held-out stretch of the series, streamed with the
   state carried from the series' start);
6. the device cost: flash (model data + engine code) and RAM (state, scratch,
   stream struct, deepest stack) from the Cortex-M objects
   (``firmware_export.sizes``), and instructions per step of the engine on the
   target's emulated board under QEMU ``-icount`` (``firmware_export.qemu``,
   the median ``tg_window`` over a few validation windows ÷ steps per window, as
   the mcu stage reports it; a forecaster: the median step of a series run);
   the emulator's outputs are compared with the host engine's at tolerance 0.
   Instructions per second of sensor data = instructions per step × sample rate ÷
   stride (a step runs every ``stride`` samples).

:func:`probe` measures step 4–6 on the candidate's shape before its trial trains:
the model after one seeded epoch (:func:`warmed_pruned`; an untrained GRU's
requantization ranges are not a trained one's) pruned by magnitude to the
candidate's sparsity and granularity. That is how a trial whose shape cannot fit
the target is rejected before it trains; the trained model is then measured again
and the two figures are kept side by side.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime import contract, metrics
from edge_runtime.bundle import stage_writer
from edge_runtime.targets import Target
from search.data import Arrays
from search.space import Candidate
from train.config import Config, TrainSettings

PREFIX = "model"
QEMU_WINDOWS = 4  # validation windows run on the emulated board (classifier)
QEMU_SERIES = 500  # samples of the series run on the emulated board (forecaster)


class TrialPruned(Exception):  # noqa: N818 - Optuna's name for the same event
    """The pruner stopped a trial during training (converted to Optuna's by the caller)."""


@dataclass(frozen=True)
class Recipe:
    """How a candidate is trained during the search (caps that keep trials cheap)."""

    epochs: int = 30
    patience: int = 8
    prune_epochs: int = 16
    seed: int = 0
    calibration_samples: int = 1000

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Context:
    """What every trial of one study shares in one process."""

    cfg: Config
    target: Target
    sample_rate: float  # Hz: the target's sensor rate, else the data set's
    dataset: dict[str, Any]  # id, sha256, source, channels (name, unit, scale)
    recipe: Recipe
    study_dir: Path

    @property
    def core(self) -> str:
        if self.target.board is None:
            raise ValueError(f"{self.target.path}: kind {self.target.kind!r} has no emulated board")
        return self.target.board.core


# --------------------------------------------------------------------------- training


class EpochScore:
    """Keras callback: the float validation score after every epoch, handed to ``report``."""

    def __new__(cls, arrays: Arrays, report: Callable[[int, float], None]) -> Any:
        import keras

        class _Callback(keras.callbacks.Callback):
            def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
                if arrays.task == "classification":
                    p = self.model.predict(arrays.x_val, batch_size=256, verbose=0)
                    y = np.asarray(p).argmax(axis=1)
                    score = metrics.macro_f1(arrays.y_val, y, arrays.n_outputs)
                else:
                    score = -float((logs or {}).get("val_loss", np.inf))
                report(epoch + 1, float(score))

        return _Callback()


def train_candidate(
    ctx: Context,
    cand: Candidate,
    arrays: Arrays,
    report: Callable[[int, float], None] | None = None,
) -> tuple[Any, Any, dict[str, Any]]:
    """Train (and prune) the candidate; returns the Keras model, its ModelConfig and a log."""
    from train.fit import fit_model

    mcfg = ctx.cfg.model_config(arrays.n_channels, arrays.n_outputs, cand.model())
    settings = TrainSettings(**{**ctx.cfg.train.__dict__, "epochs": ctx.recipe.epochs,
                                "patience": ctx.recipe.patience, "seed": ctx.recipe.seed,
                                "learning_rate": cand.learning_rate})  # fmt: skip
    callbacks = [EpochScore(arrays, report)] if report is not None else []
    t0 = time.perf_counter()
    model, hist = fit_model(
        mcfg, settings, arrays.x_train, arrays.y_train, arrays.x_val, arrays.y_val,
        desc=f"trial {cand.label()}", sample_weight=arrays.sample_weight,
        augment=arrays.augment, callbacks=callbacks,
    )  # fmt: skip
    log: dict[str, Any] = {
        "epochs_run": hist["epochs_run"],
        "best_epoch": hist["best_epoch"],
        "train_seconds": round(time.perf_counter() - t0, 1),
        "params": int(model.count_params()),
    }
    if cand.sparsity > 0:
        model, prune_log = prune(ctx, cand, model, arrays)
        log["prune"] = prune_log
    return model, mcfg, log


def prune(ctx: Context, cand: Candidate, model: Any, arrays: Arrays) -> tuple[Any, dict]:
    """``quantize.prune.prune_model`` at the candidate's sparsity (epochs capped)."""
    from quantize.prune import PruneSettings, prune_model

    settings = PruneSettings(
        target=cand.sparsity,
        granularity=cand.granularity,
        epochs=ctx.recipe.prune_epochs,
        batch_size=ctx.cfg.train.batch_size,
        seed=ctx.recipe.seed,
    )
    pruned, rep = prune_model(
        model, settings, arrays.x_train, arrays.y_train, arrays.x_val, arrays.y_val,
        sample_weight=arrays.sample_weight, class_weight=arrays.class_weight,
        augment=arrays.augment, progress=False,
    )  # fmt: skip
    keep = ("overall", "epochs_run", "finetune_epochs_run", "seconds", "augmented", "distilled")
    return pruned, {k: rep[k] for k in keep} | {"_report": rep, "_settings": settings}


PROBE_EPOCHS = 1  # of the probe's warm-up fit (see warmed_pruned)


def warmed_pruned(mcfg: Any, cand: Candidate, seed: int, arrays: Arrays) -> Any:
    """The candidate's model after one epoch of training (seeded), pruned by magnitude as
    the candidate would be: what the probe measures.

    Not the untrained model: the device cost depends on the int8 step's requantization
    ranges, and an untrained GRU's state barely moves, so its recurrent pre-activations
    calibrate to a tiny range and rows of a 90 % block-sparse layer left the engine's
    one-step requantization: the probe then measured the dense fallback, 84,160
    instructions per step against 18,760 for the trained model (KDD-TSAD 135,
    conv32k8-gru16x64, M4). One epoch gives the state a trained model's ranges."""
    import keras

    from quantize.prune import magnitude_mask, prunable_weights
    from train.fit import configure_tf
    from train.model import build_model

    configure_tf()
    keras.utils.set_random_seed(seed)
    model = build_model(mcfg)
    classifier = arrays.task == "classification"
    model.compile(optimizer=keras.optimizers.Adam(cand.learning_rate, clipnorm=1.0),
                  loss="sparse_categorical_crossentropy" if classifier else "mse")  # fmt: skip
    model.fit(arrays.x_train, arrays.y_train, sample_weight=arrays.sample_weight,
              batch_size=64, epochs=PROBE_EPOCHS, shuffle=True, verbose=0)  # fmt: skip
    if cand.sparsity > 0:
        for _, _, var in prunable_weights(model):
            w = np.asarray(var.numpy())
            var.assign(w * magnitude_mask(w, cand.sparsity, cand.granularity))
    return model


# --------------------------------------------------------------------------- int8, bundle


def to_int8(model: Any, mcfg: Any, arrays: Arrays, ctx: Context) -> bytes:
    """The int8 stage's conversion, in this process: calibration pairs, one step, purity."""
    from quantize.convert import calibration_pairs, convert_step
    from quantize.graph import STEP_OPS, check_purity
    from quantize.step_model import build_step_model

    cal = calibration_pairs(
        model, mcfg, arrays.x_train, ctx.recipe.calibration_samples, ctx.recipe.seed
    )
    tfl = convert_step(build_step_model(model, mcfg), cal, state="unit")
    check_purity(tfl, STEP_OPS)
    return tfl


def io_quant(tfl: bytes, name: str, outputs: bool = False) -> tuple[float, int]:
    """Scale and zero point of the step model's input (or output) ``name``."""
    from edge_runtime.interpreter import logical_name
    from edge_runtime.tflite_reader import read_model

    m = read_model(tfl)
    sig = m.signature_outputs if outputs else m.signature_inputs
    idx = sig.get(name)
    if idx is None:
        ids = m.outputs if outputs else m.inputs
        idx = next(i for i in ids if logical_name(m.tensors[i].name, [name]) == name)
    t = m.tensors[idx]
    return float(t.scale[0]), int(t.zero_point[0])


def write_bundle(
    root: Path, ctx: Context, cand: Candidate, mcfg: Any, arrays: Arrays, tfl: bytes,
    sparsity: dict[str, Any] | None = None,
) -> Path:  # fmt: skip
    """A trial bundle: what the export needs (no reference data, no test groups)."""
    from edge_runtime.preprocess import InputQuant

    s_in, zp = io_quant(tfl, contract.X)
    iq = InputQuant.derive(arrays.scale, arrays.mean, arrays.std, s_in, zp)
    config = {"candidate": cand.to_dict(), "recipe": ctx.recipe.to_dict(),
              "split": arrays.split}  # fmt: skip
    with stage_writer(root, "search", config=config, fresh=True) as w:
        m = w.manifest
        m["task"] = arrays.task
        m["dataset"] = {**ctx.dataset, "sample_rate": ctx.sample_rate}
        if arrays.task == "classification":
            m["dataset"]["split"] = {k: list(v) for k, v in (arrays.split or {}).items()}
        m["labels"] = list(arrays.labels) or ["value"]
        m["preprocess"] = {
            "window": cand.window, "hop": cand.hop,
            "mean": [float(v) for v in arrays.mean], "std": [float(v) for v in arrays.std],
            "input_quant": iq.to_dict(),
        }  # fmt: skip
        m["model"] = {"config": mcfg.to_dict()}
        m["quantization"] = {"step": {"ring_buffer": {"fill": zp}}}
        if sparsity:
            m["sparsity"] = sparsity
        w.write_bytes(contract.STEP_MODEL, tfl)
    return root


# --------------------------------------------------------------------------- measuring


def export(bundle_dir: Path, out: Path) -> Path:
    from firmware_export.export import export as export_bundle

    export_bundle(bundle_dir, out, PREFIX)
    return out


def device_cost(fw: Path, ctx: Context, cand: Candidate, arrays: Arrays) -> dict[str, Any]:
    """Flash, RAM (Cortex-M objects) and instructions per step (QEMU) of an export."""
    from edge_runtime.backends.engine import load
    from firmware_export import qemu, sizes

    s = sizes.firmware_sizes(fw, PREFIX)
    if not s["checks"]["ok"]:
        raise RuntimeError(f"{fw}: engine checks failed (heap, float or dynamic stack)")
    elf = qemu.build_firmware(fw, PREFIX, ctx.core)
    eng = load(fw, PREFIX)
    stride = cand.front_end_stride
    if arrays.task == "classification":
        win = arrays.counts_val[:QEMU_WINDOWS]
        res = qemu.run_elf(elf, ctx.core, win)
        want, _ = eng.windows(win)
        per_step = float(np.median(res.instructions)) / len(range(0, win.shape[1], stride))
    else:
        series = arrays.series[None, :QEMU_SERIES]
        res = qemu.run_elf(elf, ctx.core, series, series=True)
        eng.reset()
        want = np.stack([y for y in (eng.push(v) for v in series[0]) if y is not None])
        per_step = float(np.median(res.instructions))
    if res.y.shape != want.shape or (res.y != want).any():
        raise RuntimeError(f"{fw}: the emulated engine differs from the host engine")
    steps_per_second = ctx.sample_rate / stride
    return {
        "instructions_per_step": per_step,
        "steps_per_second": steps_per_second,
        "instructions_per_second": per_step * steps_per_second,
        "flash_bytes": int(s["flash"]["total"]),
        "flash_model_bytes": int(s["flash"]["model_data"]),
        "flash_engine_bytes": int(s["flash"]["engine_code"]),
        "ram_bytes": int(s["ram"]["total"]),
        "ram": {k: int(v) for k, v in s["ram"].items()},
        "board": ctx.target.board.name if ctx.target.board else None,
    }


def int8_score(fw: Path, arrays: Arrays, tfl: bytes, prefix: str = PREFIX) -> dict[str, Any]:
    """The int8 step chain (the host build of the exported engine) on the validation data."""
    from edge_runtime.backends.engine import load

    eng = load(fw, prefix)
    if arrays.task == "classification":
        y, _ = eng.windows(arrays.counts_val)
        pred = y.argmax(axis=1)
        n = arrays.n_outputs
        return {
            "score": metrics.macro_f1(arrays.y_val, pred, n),
            "macro_f1": metrics.macro_f1(arrays.y_val, pred, n),
            "accuracy": metrics.accuracy(arrays.y_val, pred),
            "n": int(len(pred)),
        }
    s_y, zp_y = io_quant(tfl, contract.Y, outputs=True)
    eng.reset()
    series = arrays.series
    forecast = np.zeros((len(series), arrays.n_channels))
    for t, sample in enumerate(series):
        y = eng.push(sample)  # stride 1: a forecast of sample t + 1 after every sample
        forecast[t] = ((y.astype(np.float64) - zp_y) * s_y) * arrays.std + arrays.mean
    from edge_runtime.anomaly import forecast_scores

    scores = forecast_scores(series * arrays.scale, forecast)
    val = arrays.val_mask.copy()
    val[: arrays.window] = False  # the zero-state warm-up is not scored
    mae = float(scores[val].mean())
    return {"score": mae, "forecast_mae": mae, "n": int(val.sum())}


def float_score(model: Any, arrays: Arrays) -> float:
    if arrays.task != "classification":
        out = np.asarray(model.predict(arrays.x_val, batch_size=256, verbose=0))
        return float(np.mean((out - arrays.y_val) ** 2))
    p = np.asarray(model.predict(arrays.x_val, batch_size=256, verbose=0))
    return metrics.macro_f1(arrays.y_val, p.argmax(axis=1), arrays.n_outputs)


def _sparsity_section(log: dict[str, Any]) -> dict[str, Any] | None:
    from quantize.prune import manifest_section

    p = log.get("prune")
    if not p:
        return None
    return manifest_section(p["_report"], p["_settings"], contract.PRUNED_MODEL)


def measure_model(
    ctx: Context, cand: Candidate, model: Any, mcfg: Any, arrays: Arrays, work: Path,
    sparsity: dict[str, Any] | None = None, cost: bool = True,
) -> tuple[dict[str, Any], dict[str, Any] | None]:  # fmt: skip
    """int8 conversion, trial bundle, export; returns (validation score, device cost or
    None when ``cost`` is off)."""
    if work.exists():
        shutil.rmtree(work)
    tfl = to_int8(model, mcfg, arrays, ctx)
    bundle = write_bundle(work / "bundle", ctx, cand, mcfg, arrays, tfl, sparsity)
    fw = export(bundle, work / "firmware")
    return int8_score(fw, arrays, tfl), device_cost(fw, ctx, cand, arrays) if cost else None


def probe(ctx: Context, cand: Candidate, arrays: Arrays) -> dict[str, Any]:
    """Device cost of the candidate's shape before its trial trains (cached per shape)."""
    cache = ctx.study_dir / "cache" / "probe" / f"{cand.shape_key()}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    mcfg = ctx.cfg.model_config(arrays.n_channels, arrays.n_outputs, cand.model())
    model = warmed_pruned(mcfg, cand, ctx.recipe.seed, arrays)
    work = ctx.study_dir / "cache" / "probe" / cand.shape_key()
    _, cost = measure_model(ctx, cand, model, mcfg, arrays, work)
    assert cost is not None
    shutil.rmtree(work, ignore_errors=True)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".{time.monotonic_ns()}.tmp")
    tmp.write_text(json.dumps(cost, indent=1))
    tmp.replace(cache)
    return cost


def evaluate(
    ctx: Context,
    cand: Candidate,
    arrays: Arrays,
    work: Path,
    report: Callable[[int, float], None] | None = None,
    cost: bool = True,
) -> dict[str, Any]:
    """Train, prune, convert, score and measure one candidate; returns its record.

    ``cost=False`` (a fold: the shape's cost is the trial's) skips the device cost."""
    t0 = time.perf_counter()
    model, mcfg, log = train_candidate(ctx, cand, arrays, report)
    t1 = time.perf_counter()
    val, device = measure_model(ctx, cand, model, mcfg, arrays, work, _sparsity_section(log), cost)
    model.save(work / "model.keras")
    if "prune" in log:
        log["prune"] = {k: v for k, v in log["prune"].items() if not k.startswith("_")}
    return {
        "candidate": cand.to_dict(),
        "label": cand.label(),
        "model_config": mcfg.to_dict(),
        "val": val,
        "float_val": float_score(model, arrays),
        "cost": device,
        "train": log,
        "seconds": {"train": round(t1 - t0, 1), "measure": round(time.perf_counter() - t1, 1)},
    }
